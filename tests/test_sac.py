"""SAC: built from spaces, acts in bounds, learns a contextual bandit, resumes exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from se_robot.agents.base import Agent
from se_robot.agents.replay import ReplayBuffer
from se_robot.agents.sac import SACAgent, SACConfig, create
from se_robot.config import ConfigError

pytestmark = pytest.mark.timeout(120)



OBS = spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (3,), np.float32)})
ACT = spaces.Box(-1.0, 1.0, (2,), np.float32)


def bandit_replay(n: int, seed: int = 0) -> ReplayBuffer:
    """One-step episodes: reward -(a - target(s))^2 summed, target = 0.5 * tanh(s[:2]); terminal."""
    rng = np.random.default_rng(seed)
    replay = ReplayBuffer(capacity=4 * n, n_step=1, frame_stack=1, seed=seed)
    for _ in range(n):
        s = rng.normal(size=3).astype(np.float32)
        a = rng.uniform(-1, 1, size=2).astype(np.float32)
        r = -float(np.sum((a - 0.5 * np.tanh(s[:2])) ** 2))
        replay.add_first({"state": s})
        replay.add(a, r, {"state": rng.normal(size=3).astype(np.float32)}, terminated=True, truncated=False)
    return replay


def small_cfg(**kw) -> SACConfig:
    base = dict(hidden_dim=64, batch_size=64, min_replay=64, actor_lr=1e-3, critic_lr=1e-3)
    base.update(kw)
    return SACConfig(**base)


def test_default_config():
    cfg = SACConfig()
    assert cfg.utd_ratio == 1 and cfg.target_entropy is None


def test_bad_config_names_the_key():
    with pytest.raises(ConfigError, match="tau"):
        SACAgent.create(OBS, ACT, {"tau": 2.0})


def test_builds_from_spaces_and_acts_in_bounds():
    agent = create(OBS, ACT, small_cfg(), "cpu", seed=0)
    assert isinstance(agent, Agent)
    obs = {"state": np.ones(3, np.float32)}
    for eval_mode in (False, True):
        a = agent.act(obs, step=0, eval_mode=eval_mode)
        assert a.shape == (2,) and a.dtype == np.float32 and np.all(np.abs(a) <= 1)
    np.testing.assert_array_equal(agent.act(obs, 0, True), agent.act(obs, 0, True))
    with pytest.raises(TypeError, match="Dict"):   # observations are dicts; a bare Box is not guessed at
        create(spaces.Box(-1, 1, (3,), np.float32), ACT, small_cfg())


def test_learns_on_every_vector_key_in_order_and_refuses_bare_pixels():
    space = spaces.Dict({"pixels": spaces.Box(0, 255, (9, 84, 84), np.uint8),
                         "features": spaces.Box(-np.inf, np.inf, (16,), np.float32),
                         "state": spaces.Box(-np.inf, np.inf, (3,), np.float32),
                         "task": spaces.Box(-np.inf, np.inf, (2,), np.float32)})
    agent = create(space, ACT, small_cfg())
    assert agent.obs_keys == ("features", "state", "task") and agent.obs_dim == 21
    obs = {"task": np.full(2, 3.0), "state": np.full(3, 2.0), "features": np.ones(16), "pixels": None}
    np.testing.assert_array_equal(agent.vector(obs), [1.0] * 16 + [2.0] * 3 + [3.0] * 2)
    assert agent.act(obs, 0, True).shape == (2,)
    pixels_only = spaces.Dict({"pixels": spaces.Box(0, 255, (9, 84, 84), np.uint8)})
    with pytest.raises(ValueError, match="features"):
        create(pixels_only, ACT, small_cfg())
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        create(OBS, spaces.Box(-2.0, 2.0, (2,), np.float32), small_cfg())


def test_update_waits_for_data_then_reports_namespaced_metrics():
    agent = create(OBS, ACT, small_cfg(min_replay=500))
    replay = bandit_replay(100)
    assert agent.update(replay, None, step=100) == {}
    agent = create(OBS, ACT, small_cfg(utd_ratio=3))
    metrics = agent.update(replay, None, step=100)
    assert {"loss/critic", "loss/actor", "alpha", "loss/alpha"} <= set(metrics)
    assert agent.num_updates == 3 and all(np.isfinite(v) for v in metrics.values())


def test_learns_a_contextual_bandit():
    torch.manual_seed(0)
    agent = create(OBS, ACT, small_cfg(utd_ratio=50), seed=1)
    replay = bandit_replay(1000)
    for step in range(12):
        agent.update(replay, None, step)
    rng = np.random.default_rng(5)
    errors = []
    for _ in range(50):
        s = rng.normal(size=3).astype(np.float32)
        errors.append(np.abs(agent.act({"state": s}, 0, True) - 0.5 * np.tanh(s[:2])).mean())
    assert np.mean(errors) < 0.15, np.mean(errors)


@pytest.mark.parametrize("layer_norm", [False, True])
def test_resume_from_state_dict_is_exact(layer_norm):
    replay_a, replay_b = bandit_replay(300, seed=3), bandit_replay(300, seed=3)
    agent = create(OBS, ACT, small_cfg(utd_ratio=2, critic_layer_norm=layer_norm), seed=7)
    for step in range(5):
        agent.update(replay_a, None, step)
    saved = agent.state_dict()
    torch.save(saved, buf := __import__("io").BytesIO())
    replay_b.rng.bit_generator.state = replay_a.rng.bit_generator.state
    for step in range(5, 10):
        agent.update(replay_a, None, step)
    action_a = agent.act({"state": np.ones(3, np.float32)}, 10, False)

    buf.seek(0)
    resumed = create(OBS, ACT, small_cfg(utd_ratio=2, critic_layer_norm=layer_norm), seed=123)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    for step in range(5, 10):
        resumed.update(replay_b, None, step)
    np.testing.assert_array_equal(action_a, resumed.act({"state": np.ones(3, np.float32)}, 10, False))
    for p, q in zip(agent.critic.parameters(), resumed.critic.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
