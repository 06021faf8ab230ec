"""The pieces of the sparse-reward demo recipes: the share of demos in a batch, and the sparse reward
from the recipe through ``load_config``/``make_envs`` (and in recorded demos) equal to the task's success."""

from __future__ import annotations

import numpy as np
import pytest

from se_robot.agents.replay import ReplayBuffer
from se_robot.agents.sac import create
from tests.test_sac import ACT, OBS, small_cfg

pytestmark = pytest.mark.timeout(300)


def _filled(reward: float, n: int, seed: int) -> ReplayBuffer:
    """``n`` one-step episodes whose every reward is ``reward``: a batch row tells where it came from."""
    rng = np.random.default_rng(seed)
    buf = ReplayBuffer(capacity=2 * n, n_step=1, frame_stack=1, seed=seed)
    for _ in range(n):
        buf.add_first({"state": rng.normal(size=3).astype(np.float32)})
        buf.add(rng.uniform(-1, 1, 2).astype(np.float32), reward, {"state": np.zeros(3, np.float32)}, True, False)
    return buf


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 1.0])
def test_demo_share_of_a_batch_is_demo_ratio(ratio):
    agent = create(OBS, ACT, small_cfg(demo_ratio=ratio))
    online, demos = _filled(0.0, 200, seed=1), _filled(1.0, 50, seed=2)
    for n in (64, 256):
        batch = agent.sample_real(online, demos, n)
        assert batch["reward"].shape == (n, 1)
        assert float(batch["reward"].sum()) == round(n * ratio)   # demo rows carry reward 1, online rows 0
    # without demos (or with an empty demo buffer) the whole batch is online, whatever the ratio
    empty = ReplayBuffer(capacity=8, n_step=1, frame_stack=1, seed=0)
    for none in (None, empty):
        assert float(agent.sample_real(online, none, 64)["reward"].sum()) == 0.0


def test_update_draws_its_batches_with_the_demo_share(monkeypatch):
    agent = create(OBS, ACT, small_cfg(demo_ratio=0.5, batch_size=32, utd_ratio=2))
    online, demos = _filled(0.0, 100, seed=1), _filled(1.0, 100, seed=2)
    shares = []
    learn = agent.learn
    monkeypatch.setattr(agent, "learn", lambda b: shares.append(float(b["reward"].mean())) or learn(b))
    agent.update(online, demos, step=0)
    assert shares == [0.5, 0.5]


@pytest.mark.parametrize("task", ["lift", "push"])
def test_sparse_recipe_rewards_are_the_task_success(task):
    from se_robot.envs.experts import expert_for
    from se_robot.train import make_envs
    from se_robot.train_config import load_config

    cfg = load_config(f"{task}_sac_sparse", {"eval_video": False})
    assert cfg.env["reward_type"] == "sparse" and cfg.obs_mode == "state"
    env, eval_env = make_envs(cfg)
    eval_env.close()
    try:
        base = env.unwrapped
        rewards = []
        for seed in range(3):
            obs, _ = env.reset(seed=seed)
            expert = expert_for(env)
            expert.reset()
            done = False
            while not done:
                obs, reward, terminated, truncated, info = env.step(expert(obs))
                success = bool(base.task.success(base.object_state()))
                assert reward == float(success) == float(info["is_success"])
                assert terminated == success
                rewards.append(reward)
                done = terminated or truncated
        assert set(rewards) == {0.0, 1.0}     # the expert succeeds: both values occur
    finally:
        env.close()


def test_sparse_demos_record_the_success_as_reward(tmp_path):
    from se_robot.cli import main
    from se_robot.data.demos import episode_paths, load_episode

    out = tmp_path / "demos"
    assert main(["demos", "--task", "lift", "--obs-mode", "state", "--episodes", "2", "--reward-type", "sparse",
                 "--out", str(out)]) == 0
    paths = episode_paths(out)
    assert len(paths) == 2
    for path in paths:
        ep = load_episode(path)
        # the task ends on success: the one rewarded step is the terminal one, and the episode succeeded
        assert ep.success
        np.testing.assert_array_equal(ep["reward"], ep["terminated"].astype(np.float32))
        assert ep["reward"].sum() == 1.0


def test_bc_weight_pulls_the_policy_to_the_demo_actions():
    """With a reward that says nothing (all 0), only the BC term on the demo rows can teach the mapping."""
    rng = np.random.default_rng(0)
    online, demos = _filled(0.0, 300, seed=1), ReplayBuffer(capacity=600, n_step=1, frame_stack=1, seed=2)
    states = rng.normal(size=(300, 3)).astype(np.float32)
    for s in states:
        demos.add_first({"state": s})
        demos.add(0.5 * np.tanh(s[:2]), 0.0, {"state": np.zeros(3, np.float32)}, True, False)
    errors = {}
    for weight in (0.0, 2.0):
        agent = create(OBS, ACT, small_cfg(bc_weight=weight, utd_ratio=20), seed=0)
        metrics = {}
        for step in range(15):
            metrics = agent.update(online, demos, step)
        assert ("loss/bc" in metrics) == (weight > 0)
        errors[weight] = np.mean([np.abs(agent.act({"state": s}, 0, True) - 0.5 * np.tanh(s[:2])).mean()
                                  for s in states[:50]])
    assert errors[2.0] < 0.5 * errors[0.0] and errors[2.0] < 0.15, errors
