"""Online fine-tuning after offline training (the shared offline loop's `paper.train.online_steps`, as IQL's
train_finetune.py): the growing replay, the switch summary by hand, the CLI run (one update per env step,
the dataset plus the online rows sampled), its exact kill-and-resume, and the one-line bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from common.logger import read_metrics
from common.offline import switch
from common.offline.data import OfflineSampler
from tests.conftest import assert_kill_and_resume_identical, run_cli
from tests.test_td3bc import toy_data

ONLINE = (
    "paper=iql",
    "env=hopper",
    "dataset=medium",
    "debug=smoke",
    "paper.train.online_steps=120",
    "paper.train.online_eval_every=60",
    "paper.train.switch_eval_every=20",
    "paper.train.switch_window=40",
    "checkpoint.every_frames=50",
)


def test_sampler_grows_by_added_rows_and_samples_them() -> None:
    data = toy_data()
    n = len(data)
    sampler = OfflineSampler(data, 0.9, seed=0, reserve=2)
    obs, action = (
        np.full(data.observations.shape[1], 7.0, np.float32),
        np.zeros(data.actions.shape[1], np.float32),
    )
    sampler.add(obs, action, 5.0, obs + 1, terminated=True)
    sampler.add(obs, action, 6.0, obs + 2, terminated=False)
    assert sampler.size == n + 2
    assert sampler.not_done[n, 0] == 0.0 and sampler.not_done[n + 1, 0] == pytest.approx(0.9)
    with pytest.raises(RuntimeError, match="no room"):
        sampler.add(obs, action, 0.0, obs, terminated=False)
    batch = sampler.sample(4000)
    assert np.any(batch.reward[:, 0] == 6.0)  # the added rows are drawn (2 of n + 2 rows, 4000 draws)
    # the rows a checkpoint keeps reload into a fresh sampler exactly
    rows = sampler.added_rows()
    assert rows["rewards"][:, 0].tolist() == [5.0, 6.0]
    again = OfflineSampler(data, 0.9, seed=0, reserve=2)
    again.load_added_rows(rows)
    assert again.size == n + 2
    for key in ("obs", "actions", "next_obs", "rewards", "not_done"):
        assert np.array_equal(getattr(again, key), getattr(sampler, key))


def test_sampler_without_reserve_copies_nothing() -> None:
    data = toy_data()
    sampler = OfflineSampler(data, 0.99, seed=0)
    assert sampler.obs is data.observations
    with pytest.raises(RuntimeError, match="no room"):
        sampler.add(data.observations[0], data.actions[0], 0.0, data.observations[0], terminated=False)


def test_switch_summary_by_hand() -> None:
    state = switch.new_state()
    state["offline_score"], state["start_score"] = 50.0, 52.0
    for env_steps, score in [(0, 99.0), (10, 48.0), (20, 40.0), (30, 60.0), (31, 1.0)]:
        switch.note_online(state, env_steps, score, window=30)  # step 0 is the switch itself; 31 is past it
    out = switch.summary(state, final_score=70.0, window=30)
    assert out["window"] == [48.0, 40.0, 60.0]
    assert out["window_min"] == 40.0 and out["dip"] == 12.0  # 52 - 40
    assert out["gain"] == 20.0  # 70 - 50
    empty = switch.summary(switch.new_state(), final_score=1.0, window=0)
    assert empty["dip"] is None and empty["gain"] is None


def test_cli_offline_then_online(tiny_d4rl: dict[str, Path], tmp_path: Path) -> None:
    env = {"MINARI_DATASETS_PATH": str(tiny_d4rl["root"])}
    proc = run_cli(*ONLINE, f"hydra.run.dir={tmp_path}", env=env, check=True, timeout=240)
    assert "actor stops learning online" in proc.stderr  # IQL's default cosine schedule ends offline
    evals = read_metrics(tmp_path / "eval.jsonl")
    offline_end = 200  # debug=smoke: 200 offline updates
    assert [r["step"] for r in evals if r["step"] >= offline_end] == [200, 220, 240, 260, 320]
    assert [r["env_steps"] for r in evals if r["step"] > offline_end] == [20, 40, 60, 120]
    out = json.loads((tmp_path / "switch.json").read_text())
    at_switch = next(r for r in evals if r["step"] == offline_end)["normalized_score"]
    window = [r["normalized_score"] for r in evals if 0 < r["env_steps"] <= 40]
    assert out["offline_score"] == at_switch == out["start_score"]
    assert out["window"] == window and out["dip"] == pytest.approx(at_switch - min(window))
    assert out["final_score"] == evals[-1]["normalized_score"]
    train = read_metrics(tmp_path / "train.jsonl")
    assert any("episode_return" in r for r in train)  # online episodes were played
    assert json.loads((tmp_path / "status.json").read_text())["state"] == "finished"


def test_cli_kill_and_resume_is_exact(tiny_d4rl: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tiny_d4rl["root"]))
    longer = tuple(a for a in ONLINE if not a.startswith("paper.train.online_steps="))
    assert_kill_and_resume_identical((*longer, "paper.train.online_steps=300"), tmp_path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("paper.train.online_steps=-1", "must be >= 0"),
        ("paper.train.switch_eval_every=0", "switch_eval_every must be a positive"),
    ],
)
def test_bad_online_settings_are_one_line_exit_2(
    tiny_d4rl, tmp_path: Path, override: str, message: str
) -> None:
    env = {"MINARI_DATASETS_PATH": str(tiny_d4rl["root"])}
    args = [a for a in ONLINE if not a.startswith(override.split("=")[0] + "=")]
    proc = run_cli(*args, override, f"hydra.run.dir={tmp_path / 'r'}", env=env)
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_switch_curve_starts_at_the_last_offline_row_and_the_plot_cli(tmp_path: Path) -> None:
    def run(name: str, scores: list[float], steps: list[int]) -> Path:
        d = tmp_path / name
        d.mkdir()
        rows = [
            {"step": 0, "env_steps": 0, "online": 0.0, "normalized_score": -1.0},  # offline
            {"step": 5, "env_steps": 0, "online": 0.0, "normalized_score": scores[0]},
        ]  # the hand-over
        rows += [{"step": 5 + o, "env_steps": o, "online": 1.0, "normalized_score": s}
                 for o, s in zip(steps, scores[1:], strict=True)]  # fmt: skip
        (d / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return d

    a = run("a", [10.0, 8.0, 12.0], [2, 4])
    x, y = switch.curve(a)
    assert x.tolist() == [0.0, 2.0, 4.0] and y.tolist() == [10.0, 8.0, 12.0]
    b = run("b", [20.0, 18.0, 22.0], [2, 4])
    out = tmp_path / "fig.png"
    assert (
        switch.main(["--group", f"A={a},{b}", "--out", str(out), "--window", "3"]) == 0 and out.stat().st_size
    )
    c = run("c", [1.0, 2.0, 3.0], [3, 6])  # evaluated at other env steps: not averaged with a
    assert switch.main(["--group", f"A={a},{c}", "--out", str(out)]) == 2
    assert switch.main(["--group", "no-dirs", "--out", str(out)]) == 2
