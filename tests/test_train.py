"""The training loop end to end on the sim twin with the real DrQ-v2 agent (tiny CPU config):
exact resume, kill -9 robustness, the CLI's error handling, evaluate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

os.environ.setdefault("MUJOCO_GL", "egl")

from se_robot import checkpoint  # noqa: E402
from se_robot.agents.replay import ReplayBuffer  # noqa: E402
from se_robot.envs import make_env  # noqa: E402
from se_robot.logger import Logger  # noqa: E402
from se_robot.train import build_trainer, load_config  # noqa: E402

pytestmark = pytest.mark.timeout(300)

# Reach episodes are 50 control ticks = 25 agent steps at action repeat 2.
TINY = {
    "task": "reach", "algo": "drqv2", "obs_mode": "pixels", "image_size": 32, "frame_stack": 2,
    "action_repeat": 2, "steps": 100, "seed": 3, "learning_starts": 20, "eval_every": 50,
    "eval_episodes": 1, "eval_video": False, "checkpoint_every": 25, "keep_checkpoints": 2,
    "log_every": 10, "tensorboard": False, "progress": False, "device": "cpu", "threads": 1,
    "replay": {"capacity": 500, "n_step": 3, "discount": 0.99},
    "agent": {"batch_size": 16, "hidden_dim": 32, "feature_dim": 16, "num_expl_steps": 20,
              "update_every_steps": 2, "stddev_schedule": "linear(1.0,0.1,1000)"},
}
COMPARED = {"eval": ("step", "eval/success", "eval/return", "eval/episode_length"),
            "train": ("step", "train/episode_return", "train/episode_length", "train/success")}


def _write_config(path: Path, **changes) -> Path:
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


def _rows(run_dir: Path, ns: str) -> list[tuple]:
    return [tuple(r[k] for k in COMPARED[ns]) for r in Logger.read(run_dir / f"{ns}.csv")]


def _loss_rows(run_dir: Path) -> list[dict]:
    out = []
    for path in sorted(run_dir.glob("*.csv")):
        if path.stem not in COMPARED:
            out += [{k: v for k, v in r.items()} for r in Logger.read(path)]
    return out


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """An uninterrupted run, the baseline for the resume and kill tests."""
    root = tmp_path_factory.mktemp("ref")
    cfg = load_config(_write_config(root / "tiny.yaml"))
    trainer = build_trainer(cfg, root / "run")
    trainer.train()
    trainer.logger.close()
    return root / "run"


def test_uninterrupted_run_logs_and_checkpoints(reference_run):
    evals = _rows(reference_run, "eval")
    assert [r[0] for r in evals] == ["0", "50", "100"]
    assert len(_rows(reference_run, "train")) >= 4            # episodes of at most 25 steps
    assert _loss_rows(reference_run), "the agent's update metrics were logged"
    names = [p.name for p in checkpoint.list_checkpoints(reference_run)]
    assert len(names) == 2 and names[-1] == "step_000000100"    # keep_checkpoints: 2


def test_resume_matches_uninterrupted_run(reference_run, tmp_path):
    cfg = load_config(_write_config(tmp_path / "tiny.yaml"))
    first = build_trainer(cfg, tmp_path / "run")
    first.train(stop_at=60)          # stops mid-episode: its final checkpoint is not a resume point
    first.logger.close()
    del first
    periodic = [c for c in checkpoint.list_checkpoints(tmp_path / "run")
                if not checkpoint.load(c)["trainer"]["mid_episode"]]
    second = build_trainer(cfg, tmp_path / "run", resume=periodic[-1])
    assert 25 <= second.step <= 60
    second.train()
    second.logger.close()
    for ns in COMPARED:
        assert _rows(tmp_path / "run", ns) == _rows(reference_run, ns)
    assert _loss_rows(tmp_path / "run") == _loss_rows(reference_run)
    a = checkpoint.load(reference_run)["agent"]
    b = checkpoint.load(tmp_path / "run")["agent"]
    for key in ("actor", "critic", "encoder"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"


TINY_SAC = {**TINY, "algo": "sac", "obs_mode": "state", "steps": 80, "eval_every": 40,
            "replay": {**TINY["replay"], "prioritized": True},
            "agent": {"batch_size": 16, "hidden_dim": 32, "min_replay": 16}}


def test_resume_is_exact_for_sac_on_state_with_prioritized_replay(tmp_path):
    config = load_config(_write_config(tmp_path / "sac.yaml", **TINY_SAC))
    ref = build_trainer(config, tmp_path / "ref")
    ref.train()
    ref.logger.close()
    first = build_trainer(config, tmp_path / "run")
    first.train(stop_at=45)
    first.logger.close()
    periodic = [c for c in checkpoint.list_checkpoints(tmp_path / "run")
                if not checkpoint.load(c)["trainer"]["mid_episode"]]
    second = build_trainer(config, tmp_path / "run", resume=periodic[-1])
    second.train()
    second.logger.close()
    for ns in COMPARED:
        assert _rows(tmp_path / "run", ns) == _rows(tmp_path / "ref", ns)
    assert _loss_rows(tmp_path / "run") == _loss_rows(tmp_path / "ref")
    assert _loss_rows(tmp_path / "ref"), "SAC updated"


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "MUJOCO_GL": "egl", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "se_robot.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_kill_9_leaves_readable_run_and_resumes_exactly(reference_run, tmp_path):
    config = _write_config(tmp_path / "tiny.yaml")
    run_dir = tmp_path / "run"
    proc = _cli("train", "--config", str(config), "--out", str(run_dir))
    deadline = time.monotonic() + 240
    while not checkpoint.list_checkpoints(run_dir) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, out      # killed while training, not after it
    assert checkpoint.list_checkpoints(run_dir), out
    # Whatever moment the kill hit, every listed checkpoint loads and every CSV parses.
    for ckpt in checkpoint.list_checkpoints(run_dir):
        state = checkpoint.load(ckpt)
        assert state["trainer"]["step"] == int(ckpt.name.split("_")[1])
        ReplayBuffer.load(ckpt / "replay").sample(4)
    for path in run_dir.glob("*.csv"):
        Logger.read(path)
    resumed = _cli("train", "--resume", str(run_dir))
    out, _ = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, out
    assert "resumed at step" in out and "resumed at step 100" not in out
    for ns in COMPARED:
        assert _rows(run_dir, ns) == _rows(reference_run, ns)
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))


def test_checkpoint_write_is_atomic(tmp_path):
    class Buf:
        def save(self, directory):
            raise OSError("disk full")             # a failure half way through a checkpoint

    checkpoint.save(tmp_path, 10, {"w": torch.ones(2)}, {"step": 10}, {"a": 1})
    with pytest.raises(OSError):
        checkpoint.save(tmp_path, 20, {"w": torch.zeros(2)}, {"step": 20}, {"a": 1}, buffers={"replay": Buf()})
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step_000000010"]
    assert torch.equal(checkpoint.load(tmp_path)["agent"]["w"], torch.ones(2))
    checkpoint.save(tmp_path, 30, {"w": torch.zeros(2)}, {"step": 30}, {"a": 1}, keep_last=1)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step_000000030"]
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))   # the failed write's temp dir is gone


def test_cli_rejects_bad_flags_before_starting(tmp_path, capsys):
    from se_robot.cli import main

    out = tmp_path / "never"
    cases = [(["--set", "replay.capacity=-5"], "replay.capacity"),
             (["--algo", "ppo"], "algo"),
             (["--set", "agent_lr=1"], "agent_lr"),
             (["--set", "replay.frame_stack=4"], "use frame_stack"),
             (["--config", "no_such_recipe"], "reach_mbpo_quick"),
             (["--algo", "mbpo"], "replay.n_step"),
             (["--set", "nonsense"], "key=value"),
             (["--demos", str(tmp_path)], "dataset.json"),
             (["--config", str(tmp_path / "missing.yaml")], "does not exist")]
    for extra, needle in cases:
        assert main(["train", "--out", str(out), *extra]) == 2, extra
        assert needle in capsys.readouterr().err, extra
    assert not out.exists()
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "checkpoint" in capsys.readouterr().err


def test_evaluate_command_writes_video_and_json(reference_run, tmp_path, capsys):
    from se_robot.cli import main

    assert main(["evaluate", "--checkpoint", str(reference_run), "--episodes", "2", "--video",
                 "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["step"] == 100 and 0.0 <= result["eval/success"] <= 1.0
    videos = list((tmp_path / "videos").glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 0
    import imageio.v2 as imageio
    frames = imageio.mimread(videos[0])
    assert len(frames) == 26 and frames[0].shape[-1] == 3


def test_demos_and_frozen_encoder_feature_cache(tmp_path):
    from se_robot.data.recording import dataset_meta_for, record_scripted
    from se_robot.envs.experts import expert_for

    env = make_env("reach", obs_mode="both", image_size=32, frame_stack=0)   # datasets keep raw frames
    record_scripted(env, expert_for(env), tmp_path / "demos", dataset_meta_for(env, "reach"), 3, seed=7,
                    log=lambda s: None)
    env.close()
    cfg = load_config(_write_config(tmp_path / "tiny.yaml", steps=40, eval_every=40,
                                    demos=str(tmp_path / "demos"),
                                    agent={**TINY["agent"], "freeze_encoder": True}))
    trainer = build_trainer(cfg, tmp_path / "run")
    assert trainer.demos is not None and trainer.demos.episodes == 3
    trainer.train()
    trainer.logger.close()
    batch = trainer.replay.sample(4)
    assert "features" in batch.obs and "pixels" not in batch.obs
    assert "features" in trainer.demos.sample(4).obs
    assert trainer.demos._arrays["pixels"].shape[1:] == (3, 32, 32)   # raw demo frames stored channel-first
    assert (checkpoint.list_checkpoints(tmp_path / "run")[-1] / "demos" / "meta.json").is_file()


def test_state_demos_keep_state_and_task_apart_and_mismatched_demos_are_named(tmp_path):
    from se_robot.data.episodes import DatasetError
    from se_robot.data.recording import dataset_meta_for, record_scripted
    from se_robot.envs.experts import expert_for

    for mode in ("state", "both"):
        env = make_env("reach", obs_mode=mode, image_size=32, frame_stack=0)
        record_scripted(env, expert_for(env), tmp_path / mode, dataset_meta_for(env, "reach"), 2, seed=3,
                        log=lambda s: None)
        env.close()
    config = {**TINY_SAC, "steps": 20, "eval_every": 20, "learning_starts": 10}
    trainer = build_trainer(load_config(_write_config(tmp_path / "s.yaml", **config, demos=str(tmp_path / "state"))),
                            tmp_path / "run")
    assert set(trainer.demos._arrays) == {"state", "task"}
    trainer.train()
    trainer.logger.close()
    assert set(trainer.replay._arrays) == {"state", "task"}
    batch = trainer.replay.sample(4)
    np.testing.assert_array_equal(trainer.agent.vector(batch.obs)[:, -3:], batch.obs["task"])   # task last
    with pytest.raises(DatasetError, match="episode_000000.npz: task: missing"):
        build_trainer(load_config(_write_config(tmp_path / "b.yaml", **config, demos=str(tmp_path / "both"))),
                      tmp_path / "run2")


def test_set_parsing_and_bench_table():
    from benchmarks.common import steps_to
    from benchmarks.drq_demos import format_table
    from se_robot.config import parse_set

    assert parse_set(["agent.lr=3e-4", "replay.capacity=50", "demos=", "agent.stddev_schedule=linear(1,0.1,5)"]) == {
        "agent": {"lr": 3e-4, "stddev_schedule": "linear(1,0.1,5)"}, "replay": {"capacity": 50}, "demos": None}
    rows = [{"step": 0, "success": 0.0}, {"step": 10, "success": 0.95}, {"step": 20, "success": 0.8}]
    assert steps_to(rows, 0.9) == 10 and steps_to(rows[:1], 0.9) is None
    table = format_table({"a": {"rows": rows, "wall_s": 1.0}, "b": {"rows": rows[:1], "wall_s": 2.0}})
    assert "not reached" in table and "0.95" in table


def test_state_runs_film_the_scene_camera(tmp_path):
    """Eval videos show the scene even when the agent sees only the state vector."""
    import imageio.v2 as imageio

    from se_robot.train import build_trainer, load_config

    cfg = load_config(None, {"task": "reach", "algo": "sac", "obs_mode": "state", "steps": 20,
                             "learning_starts": 10, "eval_every": 20, "eval_episodes": 1, "eval_video": True,
                             "tensorboard": False, "progress": False, "frame_stack": 1, "action_repeat": 1,
                             "replay": {"capacity": 100, "n_step": 1},
                             "agent": {"batch_size": 8, "min_replay": 8, "hidden_dim": 16}})
    trainer = build_trainer(cfg, tmp_path)
    trainer.train()
    videos = sorted((tmp_path / "videos").glob("*.mp4"))
    assert videos, "no eval video for a state-observation run"
    frames = imageio.mimread(videos[-1])
    assert frames[0].shape == (256, 256, 3) and np.asarray(frames[0]).std() > 5


def test_stop_at_success_ends_the_run_at_the_first_solved_evaluation(tmp_path):
    """The loop's own stop: evaluations are scripted here so the stop point is known."""
    from se_robot.train import build_trainer, load_config

    cfg = load_config(None, {"task": "reach", "algo": "sac", "obs_mode": "state", "steps": 200,
                             "learning_starts": 10, "eval_every": 40, "eval_episodes": 1, "eval_video": False,
                             "tensorboard": False, "progress": False, "frame_stack": 1, "action_repeat": 1,
                             "stop_at_success": 0.9, "save_replay": False,
                             "replay": {"capacity": 300, "n_step": 1},
                             "agent": {"batch_size": 8, "min_replay": 8, "hidden_dim": 16}})
    trainer = build_trainer(cfg, tmp_path)
    scores = iter([0.0, 0.5, 0.8, 0.9, 1.0, 1.0])
    trainer.evaluate = lambda: {"eval/success": next(scores), "eval/return": 0.0, "eval/episode_length": 1.0}
    trainer.train()
    trainer.logger.close()
    assert trainer.step == 120     # evaluations at 0, 40, 80, 120: 0.9 at 120 ends it
    assert [int(float(r["step"])) for r in Logger.read(tmp_path / "eval.csv")] == [0, 40, 80, 120]


def test_drq_bench_encoder_flag_freezes_a_checkpoint_encoder(tmp_path):
    import argparse

    from benchmarks.drq_demos import drq_config

    args = argparse.Namespace(steps=100, image_size=32, seed=1, eval_every=50, eval_episodes=1, progress=False,
                              reward_type="dense", set=["agent.utd=2"], encoder=str(tmp_path / "enc.pt"))
    agent = drq_config(args, "").agent
    assert agent["encoder"] == "checkpoint" and agent["freeze_encoder"] is True
    assert agent["encoder_checkpoint"] == str(tmp_path / "enc.pt") and agent["utd"] == 2
    args.encoder = ""
    assert "encoder" not in drq_config(args, "").agent


def test_evaluation_does_not_perturb_training(tmp_path):
    """Benchmarks compare runs evaluated at different intervals: evaluating must leave the training
    stream (env episodes, model fits, rollouts, SAC updates) bit-for-bit unchanged."""
    base = {**TINY_SAC, "algo": "mbpo", "steps": 120, "learning_starts": 30, "frame_stack": 1,
            "replay": {"capacity": 500, "n_step": 1, "discount": 0.99},
            "agent": {"utd_ratio": 2, "model_min_transitions": 40, "model_train_interval_steps": 40,
                      "rollout_batch_size": 32, "rollout_schedule": [0, 100, 1, 3],
                      "model": {"ensemble_size": 3, "num_elites": 2, "hidden_dim": 16, "num_layers": 2,
                                "max_grad_steps": 20},
                      "sac": {"batch_size": 16, "hidden_dim": 16, "min_replay": 16}}}
    weights = []
    for every in (20, 60):
        cfg = load_config(_write_config(tmp_path / f"e{every}.yaml", **{**base, "eval_every": every}))
        trainer = build_trainer(cfg, tmp_path / f"run{every}")
        trainer.train()
        trainer.logger.close()
        weights.append(trainer.agent.sac.actor.state_dict())
    assert len(Logger.read(tmp_path / "run20" / "eval.csv")) > len(Logger.read(tmp_path / "run60" / "eval.csv"))
    assert _rows(tmp_path / "run20", "train") == _rows(tmp_path / "run60", "train")
    assert _rows(tmp_path / "run20", "train"), "episodes were logged"
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name


def test_model_rollouts_discount_like_the_replay(tmp_path):
    """MBPO's rollout discount is derived from replay.discount: the agent the loop builds uses it."""
    base = {"task": "reach", "algo": "mbpo", "obs_mode": "state", "frame_stack": 1, "tensorboard": False,
            "progress": False, "replay": {"capacity": 100, "n_step": 1, "discount": 0.9}}
    trainer = build_trainer(load_config(None, base), tmp_path / "a")
    assert trainer.agent.cfg.sac.gamma == 0.9
    trainer.logger.close()
