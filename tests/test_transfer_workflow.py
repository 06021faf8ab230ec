"""Pretrain in sim, fine-tune on the arm: the commands a user runs, end to end on the emulated arm.

``se-robot train`` in the twin with domain randomization -> ``se-robot evaluate`` zero-shot on an
emulated arm whose twin differs from training (the ``mild`` reality gap) -> demos recorded on that
arm -> ``se-robot train --resume RUN --backend hardware`` with the sim replay dropped (and, once,
kept) and the arm demos added -> ``se-robot evaluate``. Sizes are tiny: the test checks the
plumbing (checkpoints, the step count and weights carried over, what the buffers hold, the safety
counters), not what the policy learned.
"""

from __future__ import annotations

import csv
import json
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from se_robot import checkpoint  # noqa: E402
from se_robot.arm import load_arm  # noqa: E402
from se_robot.cli import main  # noqa: E402
from se_robot.hardware.emulator import VirtualArm, emulator_calibration_path  # noqa: E402

pytestmark = pytest.mark.timeout(600)

ARM = load_arm("so101")
CALIBRATION = str(emulator_calibration_path(ARM))
SIM_STEPS, FINE_TUNE_STEPS = 200, 20
TINY = {"task": "reach", "algo": "sac", "obs_mode": "state", "frame_stack": 1, "action_repeat": 1,
        "steps": SIM_STEPS, "seed": 3, "learning_starts": 8, "eval_every": 1000, "eval_episodes": 1,
        "eval_video": False, "checkpoint_every": 1000, "checkpoint_every_s": 0.0, "keep_checkpoints": 10,
        "log_every": 10, "tensorboard": False, "progress": False, "device": "cpu", "threads": 1,
        "replay": {"capacity": 1000, "n_step": 1, "discount": 0.99},
        "agent": {"batch_size": 8, "hidden_dim": 32, "min_replay": 8},
        "env": {"control_hz": 20.0, "max_episode_steps": 10}}
#: the emulated arm on the command line
ARM_OPTIONS = ["--backend", "hardware", "--calibration", CALIBRATION, "--scene-camera", "none"]
#: train on the arm with a generous bus reply timeout (a loaded test machine)
ARM_TRAIN = [*ARM_OPTIONS, "--set", "env.timeout_s=0.5"]


def _replay_transitions(ckpt, name: str) -> int:
    return int(json.loads((ckpt / name / "meta.json").read_text())["transitions"])


def _dataset_transitions(directory) -> int:
    return sum(len(np.load(p)["action"]) for p in sorted(directory.glob("episode_*.npz")))


def _record_arm_demos(port: str, out, episodes: int) -> None:
    """Demos recorded on the (emulated) arm, as ``se-robot record`` writes them (random actions)."""
    from se_robot.data.recording import RandomPolicy, dataset_meta_for, record_scripted
    from se_robot.envs import make_env

    env = make_env("reach", backend="hardware", frame_stack=0, obs_mode="state", port=port,
                   calibration=CALIBRATION, scene_camera=None, control_hz=20.0, max_episode_steps=6, timeout_s=0.5)
    try:
        written = record_scripted(env, RandomPolicy(env.action_space, seed=0), out,
                                  dataset_meta_for(env, "reach", backend="hardware", obs_mode="state"), episodes,
                                  keep_failures=True, log=lambda _: None)
    finally:
        env.close()
    assert len(written) == episodes


def test_pretrain_in_sim_evaluate_on_the_gapped_arm_fine_tune_and_evaluate(tmp_path, capsys):
    sim_run, sim_demos, arm_demos = tmp_path / "sim", tmp_path / "sim_demos", tmp_path / "arm_demos"
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(json.dumps(TINY))
    # 1. pretrain in the twin, randomized, with a few scripted sim demos
    assert main(["demos", "--task", "reach", "--obs-mode", "state", "--episodes", "2", "--max-steps", "10",
                 "--out", str(sim_demos)]) == 0
    assert main(["train", "--config", str(recipe), "--out", str(sim_run), "--demos", str(sim_demos),
                 "--set", "env.randomize=mild", "--no-progress"]) == 0
    sim_ckpt = checkpoint.resolve(sim_run)
    assert checkpoint.load(sim_ckpt)["trainer"]["step"] == SIM_STEPS
    assert yaml.safe_load((sim_run / "config.yaml").read_text())["env"]["randomize"] == "mild"
    sim_demo_count = _replay_transitions(sim_ckpt, "demos")
    assert sim_demo_count == _dataset_transitions(sim_demos) > 0
    capsys.readouterr()

    with VirtualArm(ARM, physics="twin", task="reach", twin_gap="mild", twin_gap_seed=1) as vm:
        port = ["--port", vm.port]
        # 2. zero-shot on the arm (the sim-only randomize option stays behind)
        # (--set: a key of the run's config changed for this evaluation only)
        assert main(["evaluate", "--checkpoint", str(sim_run), "--episodes", "1", *ARM_OPTIONS, *port,
                     "--out", str(tmp_path / "eval_zero_shot"), "--set", "env.max_episode_steps=4",
                     "--set", "env.timeout_s=0.5"]) == 0, capsys.readouterr().err
        zero_shot = json.loads((tmp_path / "eval_zero_shot" / "eval.json").read_text())
        assert zero_shot["step"] == SIM_STEPS and 0.0 <= zero_shot["eval/success"] <= 1.0
        assert zero_shot["eval/episode_length"] <= 4
        # 3. demos recorded on the arm
        _record_arm_demos(vm.port, arm_demos, episodes=2)
        arm_demo_count = _dataset_transitions(arm_demos)
        # 4a. fine-tune with the sim replay dropped and the arm demos added; no update can happen
        # (learning_starts above the new transitions), so the weights are the sim run's, unchanged
        drop = tmp_path / "fine_tune_drop"
        assert main(["train", "--resume", str(sim_run), "--more-steps", str(FINE_TUNE_STEPS), *ARM_TRAIN, *port,
                     "--replay", "drop", "--demos", str(arm_demos), "--out", str(drop),
                     "--set", "learning_starts=1000", "--no-progress"]) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        assert (f"resumed at step {SIM_STEPS}, training to step {SIM_STEPS + FINE_TUNE_STEPS}; replay 0 transitions, "
                f"demos {sim_demo_count + arm_demo_count}") in out, out
        # 4b. the same with the sim replay kept: it learns from sim and arm transitions
        keep = tmp_path / "fine_tune_keep"
        assert main(["train", "--resume", str(sim_run), "--more-steps", str(FINE_TUNE_STEPS), *ARM_TRAIN, *port,
                     "--replay", "keep", "--out", str(keep), "--no-progress"]) == 0, capsys.readouterr().err
        assert f"replay {SIM_STEPS} transitions" in capsys.readouterr().out
        # 5. evaluate the fine-tuned run on the arm
        assert main(["evaluate", "--checkpoint", str(drop), "--episodes", "1", *ARM_OPTIONS, *port,
                     "--out", str(tmp_path / "eval_fine_tuned")]) == 0, capsys.readouterr().err
    fine_tuned = json.loads((tmp_path / "eval_fine_tuned" / "eval.json").read_text())
    assert fine_tuned["step"] == SIM_STEPS + FINE_TUNE_STEPS

    sim_agent = torch.load(sim_ckpt / "agent.pt", map_location="cpu", weights_only=True)
    for run, replay in ((drop, FINE_TUNE_STEPS), (keep, SIM_STEPS + FINE_TUNE_STEPS)):
        ckpt = checkpoint.resolve(run)
        saved = checkpoint.load(ckpt)
        assert saved["trainer"]["step"] == SIM_STEPS + FINE_TUNE_STEPS       # the sim run's count, continued
        assert saved["config"]["backend"] == "hardware" and "randomize" not in saved["config"]["env"]
        assert _replay_transitions(ckpt, "replay") == replay
        rows = list(csv.DictReader((run / "train.csv").open()))
        arm_rows = [r for r in rows if r["train/safety_clipped"] and int(r["step"]) > SIM_STEPS]
        assert arm_rows, "the fine-tune logged its episodes with the safety counters"
        assert all(float(r["train/safety_clipped"]) >= 0 and float(r["train/safety_held"]) >= 0 for r in arm_rows)
    assert _replay_transitions(checkpoint.resolve(drop), "demos") == sim_demo_count + arm_demo_count
    assert _replay_transitions(checkpoint.resolve(keep), "demos") == sim_demo_count
    drop_agent = torch.load(checkpoint.resolve(drop) / "agent.pt", map_location="cpu", weights_only=True)
    # networks, optimizers and temperature as the sim run left them (acting moved only its random stream)
    assert "generator" in sim_agent
    assert _same_tensors({k: v for k, v in sim_agent.items() if k != "generator"},
                         {k: v for k, v in drop_agent.items() if k != "generator"})


def _same_tensors(a, b) -> bool:
    """Nested dicts/lists of tensors equal leaf by leaf."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_tensors(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


def test_resume_refuses_what_does_not_fit(tmp_path, capsys):
    run = tmp_path / "run"
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(json.dumps({**TINY, "steps": 20}))
    assert main(["train", "--config", str(recipe), "--out", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    # --replay is about a checkpoint's replay
    assert main(["train", "--config", str(recipe), "--out", str(tmp_path / "other"), "--replay", "drop"]) == 2
    assert "--replay" in capsys.readouterr().err
    # an agent trained for 4 actions (ee_delta) on an env with 6 (joint_delta): named, not a traceback
    assert main(["train", "--resume", str(run), "--more-steps", "5", "--replay", "drop",
                 "--set", "env.action_mode=joint_delta"]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "other observation or action shapes" in err and "actions (6,)" in err
    # demos must be an episode dataset
    assert main(["train", "--resume", str(run), "--more-steps", "5", "--demos", str(tmp_path)]) == 2
    assert "dataset.json" in capsys.readouterr().err


def test_twin_camera_renders_through_an_aligned_camera_file(tmp_path):
    from se_robot.config import ConfigError
    from se_robot.envs import make_env

    aligned = tmp_path / "camera.yaml"
    aligned.write_text(yaml.safe_dump({"twin_camera": {"camera": "scene", "pos_offset_m": [0.03, 0.0, 0.0],
                                                       "rot_offset_rad": [0.0, 0.0, 0.05], "fovy_offset_deg": 3.0}}))
    envs = [make_env("reach", obs_mode="pixels", frame_stack=1, image_size=64),
            make_env("reach", obs_mode="pixels", frame_stack=1, image_size=64, twin_camera=str(aligned))]
    try:
        nominal, moved = (env.reset(seed=0)[0]["pixels"].astype(np.int16) for env in envs)
        again = envs[1].reset(seed=0)[0]["pixels"].astype(np.int16)
    finally:
        for env in envs:
            env.close()
    assert np.abs(nominal - moved).mean() > 2.0     # the scene seen from elsewhere
    assert np.array_equal(moved, again)             # applied once, at construction, not per reset
    # demos render through it too
    demos = tmp_path / "demos"
    assert main(["demos", "--task", "reach", "--obs-mode", "pixels", "--image-size", "64", "--episodes", "1",
                 "--max-steps", "2", "--policy", "random", "--twin-camera", str(aligned), "--out", str(demos)]) == 0
    first = np.load(next(demos.glob("episode_*.npz")))["pixels"][0].transpose(2, 0, 1).astype(np.int16)
    assert np.abs(first - moved).mean() < np.abs(first - nominal).mean()
    bad = tmp_path / "bad.yaml"
    bad.write_text("camera: {}\n")
    with pytest.raises(ConfigError, match="twin_camera.*align-camera"):
        make_env("reach", obs_mode="pixels", twin_camera=str(bad))
    with VirtualArm(ARM) as vm, pytest.raises(ValueError, match="aligned camera is for the sim twin"):
        make_env("reach", backend="hardware", obs_mode="state", port=vm.port, calibration=CALIBRATION,
                 scene_camera=None, twin_camera=str(aligned))


def test_a_run_names_its_model_files_by_absolute_path(tmp_path, monkeypatch):
    """--resume and evaluate read the saved config from wherever they start: a relative encoder
    path given at the start is saved absolute; a missing file is left as given (its loader names it)."""
    from se_robot.commands.train import with_absolute_files
    from se_robot.train_config import load_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "enc.pt").write_bytes(b"")
    cfg = with_absolute_files(load_config(overrides={"algo": "drqv2", "obs_mode": "pixels", "agent": {
        "encoder": "checkpoint", "encoder_checkpoint": "enc.pt"}, "reward_model": "missing.pt"}))
    assert cfg.agent["encoder_checkpoint"] == str(tmp_path / "enc.pt")
    assert cfg.reward_model == "missing.pt" and cfg.encoder == ""
