"""The lift and push pixel recipes: camera + proprioception only, a sparse reward, demos on its scale."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from se_robot.agents.encoders import KeypointEncoder  # noqa: E402
from se_robot.pretrain import save_pretrained  # noqa: E402

pytestmark = pytest.mark.timeout(300)


def _sparse_demos(task: str, out, episodes: int = 2):
    """Scripted demos recorded as the recipes' comments say: obs mode both, 64 px, sparse reward."""
    from se_robot.data.recording import dataset_meta_for, record_scripted
    from se_robot.envs import make_env
    from se_robot.envs.experts import expert_for

    env = make_env(task, frame_stack=0, obs_mode="both", image_size=64, reward_type="sparse")
    try:
        meta = dataset_meta_for(env, task, obs_mode="both", image_size=64, reward_type="sparse")
        record_scripted(env, expert_for(env), out, meta, episodes, seed=7, log=lambda _: None)
    finally:
        env.close()
    return out


@pytest.mark.parametrize("task", ["lift", "push"])
def test_the_pixel_recipe_sees_no_object_state_and_learns_from_sparse_demos(tmp_path, task):
    from se_robot.train import build_trainer, load_config

    enc = save_pretrained(KeypointEncoder(3, (64, 64), keypoints=8), tmp_path / "enc.pt", 64, 8)
    demos = _sparse_demos(task, tmp_path / "demos")
    cfg = load_config(f"{task}_pixels_sparse", {
        "demos": str(demos), "steps": 40, "learning_starts": 20, "eval_every": 40, "eval_episodes": 1,
        "progress": False, "tensorboard": False, "checkpoint_every": 1000, "log_every": 20,
        "agent": {"encoder_checkpoint": str(enc), "batch_size": 16, "hidden_dim": 32}})
    assert cfg.task == task and cfg.env["reward_type"] == "sparse" and cfg.action_repeat == 1
    trainer = build_trainer(cfg, tmp_path / "run")
    try:
        assert set(trainer.env.observation_space.spaces) == {"pixels", "state"}   # no "task" key
        # each demo step's reward is the success predicate: 0 until the last step, 1 there
        rewards = trainer.demos._reward[:len(trainer.demos)]
        assert set(np.unique(rewards)) == {0.0, 1.0} and rewards.sum() == 2
        trainer.train()
        assert trainer.step == 40 and trainer.agent.num_updates > 0
        batch = trainer.demos.sample(64)             # n-step sums of 0/1 rewards, as online ones
        assert np.all((batch.reward >= 0.0) & (batch.reward <= 1.0))
    finally:
        trainer.logger.close()
