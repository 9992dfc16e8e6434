#!/usr/bin/env bash
# Stop the test cluster that start.sh started: each daemon by the PID in its pid file, in reverse order.
set -uo pipefail
SLURM_DIR="${SLURM_DIR:-/tmp/rlrepro-slurm}"
stop() {  # stop NAME PIDFILE: SIGTERM, then up to 5 s for the process to exit, then SIGKILL
  local name=$1 pidfile=$2 pid
  [ -f "$pidfile" ] || return 0
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then echo "slurm: $name ($pid) ignored SIGTERM; killing it" >&2; kill -9 "$pid"; fi
  fi
  rm -f "$pidfile"
}
stop slurmd "$SLURM_DIR/slurmd.pid"
stop slurmctld "$SLURM_DIR/slurmctld.pid"
stop slurmdbd "$SLURM_DIR/slurmdbd.pid"
stop mariadbd "$SLURM_DIR/db/mariadbd.pid"
if [ -f "$SLURM_DIR/munged.started" ]; then
  stop munged /run/munge/munged.pid
  rm -f "$SLURM_DIR/munged.started"
fi
echo "slurm: stopped" >&2
