#!/usr/bin/env bash
# Start a single-node SLURM cluster with accounting (munge, MariaDB, slurmdbd, slurmctld, slurmd) on
# Debian/Ubuntu without systemd, for the tests marked `slurm`. Idempotent; `.ci/slurm/stop.sh` stops it.
#   SLURM_DIR   where configs, state, pid files and logs go (default /tmp/rlrepro-slurm)
# Why each step and setting: docs/hpo-and-slurm.md. Needs root (apt-get, daemons).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
export SLURM_DIR="${SLURM_DIR:-/tmp/rlrepro-slurm}"
export SLURM_CONF="$SLURM_DIR/slurm.conf"
export NODE="$(hostname -s)"
DB_DIR="$SLURM_DIR/db"
log() { echo "slurm: $*" >&2; }
wait_for() {  # wait_for SECONDS WHAT CMD...: poll CMD until it succeeds
  local limit=$1 what=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then log "$what did not come up in ${limit}s (logs: $SLURM_DIR/log)"; exit 1; fi
    sleep 0.2
  done
}
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if [ "$(id -u)" != "0" ]; then log "start.sh needs root (it installs packages and starts daemons)"; exit 1; fi
if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null \
   || ! command -v envsubst >/dev/null; then
  log "installing slurm-wlm, munge, slurmdbd, mariadb-server"
  apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge slurmdbd mariadb-server gettext-base >/dev/null
fi
mkdir -p "$SLURM_DIR"/{state,spool,log} "$DB_DIR"

# 1. munge (authentication between the daemons and the client commands)
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  [ -f /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || create-munge-key -f; }
  mkdir -p /run/munge && chown munge:munge /run/munge
  runuser -u munge -- munged
  touch "$SLURM_DIR/munged.started"   # stop.sh stops munged only if we started it
  wait_for 10 munged bash -c 'munge -n | unmunge'
fi

# 2. MariaDB for slurmdbd (accounting: without it a cancelled job never reports to submitit)
chown mysql:mysql "$DB_DIR"
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
if ! alive "$DB_DIR/mariadbd.pid"; then
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  # setsid: killing a hung job's process group must not take the database with it
  setsid runuser -u mysql -- mariadbd --datadir=/var/lib/mysql --socket=/run/mysqld/mysqld.sock \
    --bind-address=127.0.0.1 --pid-file="$DB_DIR/mariadbd.pid" --log-error="$DB_DIR/mariadbd.log" \
    </dev/null >/dev/null 2>&1 &
  wait_for 30 mariadbd mariadb -uroot -e 'select 1'
fi
# A controller without saved state numbers jobs from 1 again; the job records an earlier cluster left in the
# database would then answer `sacct -j N` for a new job N (submitit read a finished job as its own and gave
# up on a running worker), so the accounting of such an earlier cluster goes.
if [ ! -e "$SLURM_DIR/state/job_state" ] && ! alive "$SLURM_DIR/slurmctld.pid"; then
  if alive "$SLURM_DIR/slurmdbd.pid"; then kill "$(cat "$SLURM_DIR/slurmdbd.pid")"; sleep 1; fi
  mariadb -uroot -e "DROP DATABASE IF EXISTS slurm_acct_db;"
fi
DB_PASS="$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export DB_PASS
mariadb -uroot -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
  ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

# 3. configs: the node is this host, with its real CPU count and 90 % of its memory
export CPUS="$(nproc)"
export MEM_MB="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
envsubst <"$HERE/slurm.conf.in" >"$SLURM_CONF"
(umask 077 && envsubst <"$HERE/slurmdbd.conf.in" >"$SLURM_DIR/slurmdbd.conf")
chmod 600 "$SLURM_DIR/slurmdbd.conf"
# client commands (sinfo, sbatch from submitit, the tests) find the config without SLURM_CONF; a real
# cluster's /etc/slurm/slurm.conf is never replaced
if [ ! -e /etc/slurm/slurm.conf ] || [ "$(readlink /etc/slurm/slurm.conf)" = "$SLURM_CONF" ]; then
  mkdir -p /etc/slurm && ln -sfn "$SLURM_CONF" /etc/slurm/slurm.conf
else
  log "/etc/slurm/slurm.conf belongs to another cluster: export SLURM_CONF=$SLURM_CONF to use this one"
fi

# 4. slurmdbd, then register the cluster (a fresh password each start: restart it to pick it up)
if alive "$SLURM_DIR/slurmdbd.pid"; then kill "$(cat "$SLURM_DIR/slurmdbd.pid")"; sleep 1; fi
slurmdbd
wait_for 30 slurmdbd sacctmgr -n show cluster
sacctmgr -n show cluster format=cluster | grep -qw ci || sacctmgr -i add cluster ci >/dev/null

# 5. controller and node daemon; the node must come up idle
alive "$SLURM_DIR/slurmctld.pid" || slurmctld
alive "$SLURM_DIR/slurmd.pid" || slurmd
wait_for 30 "node $NODE (idle)" bash -c "sinfo -h -o %T | grep -qx idle"
# what a job on this one-node cluster can ask for (conf/hydra/launcher/slurm.yaml reads these): source it
cat >"$SLURM_DIR/env.sh" <<ENV
export SLURM_CONF=$SLURM_CONF RLREPRO_SLURM_GPUS=0 RLREPRO_SLURM_CPUS=1 RLREPRO_SLURM_MEM_GB=2 RLREPRO_SLURM_TIME_MIN=10
ENV
log "up: node $NODE, $CPUS CPUs, ${MEM_MB} MB, partition debug, accounting on; jobs: source $SLURM_DIR/env.sh"
