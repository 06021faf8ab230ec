"""An operator takes over during `se-robot train`: their actions are what the arm executes, what
replay stores, and they also land in the demo buffer (HIL-SERL); the rate is logged."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from se_robot.train import build_trainer, load_config

pytestmark = pytest.mark.timeout(180)


def test_keyboard_takeover_feeds_both_buffers(tmp_path):
    master, slave = os.openpty()
    try:
        cfg = load_config(None, {
            "task": "reach", "algo": "sac", "obs_mode": "state", "steps": 60, "learning_starts": 20,
            "eval_every": 60, "eval_episodes": 1, "eval_video": False, "checkpoint_every": 1000,
            "tensorboard": False, "progress": False, "log_every": 10, "frame_stack": 1, "action_repeat": 1,
            "replay": {"capacity": 1000, "n_step": 1},
            "agent": {"batch_size": 16, "min_replay": 16, "hidden_dim": 32},
            "teleop": "keyboard", "teleop_device": os.ttyname(slave),
        })
        trainer = build_trainer(cfg, tmp_path / "run")
        os.write(master, b"i")  # toggle intervention: from the first step the operator drives
        trainer.train()
        trainer.env.close()
        trainer.eval_env.close()
    finally:
        os.close(master)
        os.close(slave)
    assert trainer.interventions == 60  # one 50-step episode (truncated) and 10 more steps
    assert trainer.demos is not None and trainer.demos.transitions == 60
    # The operator pressed no motion key: every executed move is zero, unlike the policy's.
    stored = trainer.replay._action[: trainer.replay.transitions]
    np.testing.assert_array_equal(stored[:, :3], 0.0)
    rows = list(csv.DictReader(open(tmp_path / "run" / "train.csv")))
    rates = [float(r["train/intervention_rate"]) for r in rows if r.get("train/intervention_rate")]
    assert rates and rates[-1] == 1.0
