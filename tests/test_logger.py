"""Run logging: W&B online without a network falls back to offline quickly, in one line."""

from __future__ import annotations

import time

from hydra import compose, initialize_config_dir

from common.logger import RunLogger
from common.registry import CONF_DIR


def test_online_wandb_without_a_reachable_server_falls_back_to_offline_in_one_line(
    tmp_path, monkeypatch, capfd
):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # conftest disables W&B; this test needs it on
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))
    for proxy in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "paper=sac",
                "env=cheetah_run",
                "logger.wandb.enabled=true",
                "logger.wandb.mode=online",
            ],
        )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    start = time.time()
    logger = RunLogger(cfg, run_dir, "abcd1234", total_frames=10, start_frame=0)
    logger.log("eval", {"frame": 0, "episode_return": 1.0})
    logger.close()
    assert time.time() - start < 30  # not wandb's 90 s init timeout
    err = capfd.readouterr().err
    ours = [line for line in err.splitlines() if "127.0.0.1:9 unreachable" in line]
    assert len(ours) == 1 and "logging offline" in ours[0] and "Traceback" not in err, err
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))  # the mirror went offline
