"""Behaviour cloning: it fits a demo mapping, reads recorded demos, and refuses bad input by name."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

from se_robot.agents.bc import BCAgent, BCConfig, DemoPairs
from se_robot.config import ConfigError

pytestmark = pytest.mark.timeout(300)

OBS = spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (3,), np.float32),
                   "task": spaces.Box(-np.inf, np.inf, (2,), np.float32)})
ACT = spaces.Box(-1.0, 1.0, (2,), np.float32)


def expert(state: np.ndarray, task: np.ndarray) -> np.ndarray:
    """A smooth demo mapping on inputs of different scales (as joint angles and positions are)."""
    return np.stack([0.8 * np.tanh(state[..., 0] - 20.0 * task[..., 0]),
                     0.6 * np.tanh(state[..., 1] * state[..., 2])], axis=-1).astype(np.float32)


def demo_rows(n: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    obs = {"state": rng.normal(size=(n, 3)).astype(np.float32),
           "task": (0.05 * rng.normal(size=(n, 2))).astype(np.float32)}
    return obs, expert(obs["state"], obs["task"])


def test_learns_the_demo_mapping():
    agent = BCAgent.create(OBS, ACT, BCConfig(gradient_steps=1500), seed=0)
    losses = agent.fit(*demo_rows(500, seed=0))
    assert losses[-1] < 0.1 * losses[0]
    obs, actions = demo_rows(100, seed=1)    # held-out states
    predicted = np.stack([agent.act({k: v[i] for k, v in obs.items()}) for i in range(100)])
    assert predicted.shape == (100, 2) and np.all(np.abs(predicted) <= 1.0)
    assert np.abs(predicted - actions).mean() < 0.08, np.abs(predicted - actions).mean()


def test_state_dict_round_trip_acts_the_same():
    agent = BCAgent.create(OBS, ACT, BCConfig(gradient_steps=50), seed=0)
    agent.fit(*demo_rows(64, seed=0))
    copy = BCAgent.create(OBS, ACT, BCConfig(gradient_steps=50), seed=5)
    copy.load_state_dict(agent.state_dict())
    one = {"state": np.ones(3, np.float32), "task": np.zeros(2, np.float32)}
    np.testing.assert_array_equal(copy.act(one), agent.act(one))


def test_rejects_bad_input_clearly():
    agent = BCAgent.create(OBS, ACT, BCConfig(gradient_steps=5), seed=0)
    obs, actions = demo_rows(10, seed=0)
    with pytest.raises(RuntimeError, match="before fit"):
        agent.act({k: v[0] for k, v in obs.items()})
    with pytest.raises(ValueError, match="10 observations but 9 actions"):
        agent.fit(obs, actions[:9])
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        agent.fit(obs, np.zeros((10, 3), np.float32))
    with pytest.raises(ValueError, match=r"outside the policy's \[-1, 1\]"):
        agent.fit(obs, 3.0 * np.ones((10, 2), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        agent.fit(obs, np.full((10, 2), np.nan, np.float32))
    with pytest.raises(KeyError, match="lack \\['task'\\]"):
        agent.fit({"state": obs["state"]}, actions)
    with pytest.raises(ValueError, match=r"expected \(N, 5\)"):
        agent.fit({"state": obs["state"][:, :2], "task": obs["task"]}, actions)
    with pytest.raises(ValueError, match="no demonstration"):
        agent.fit({k: v[:0] for k, v in obs.items()}, actions[:0])
    pixels_only = spaces.Dict({"pixels": spaces.Box(0, 255, (9, 64, 64), np.uint8)})
    with pytest.raises(ValueError, match="features"):
        BCAgent.create(pixels_only, ACT)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        BCAgent.create(OBS, spaces.Box(-2.0, 2.0, (2,), np.float32))
    with pytest.raises(ConfigError, match="gradient_steps"):
        BCAgent.create(OBS, ACT, {"gradient_steps": 0})
    with pytest.raises(ValueError, match="no demonstration steps were read"):
        DemoPairs().arrays()


def test_fits_recorded_demos_pairing_each_action_with_its_observation(tmp_path):
    from se_robot.cli import main
    from se_robot.data.demos import episode_paths, load_episode
    from se_robot.envs import make_env

    out = tmp_path / "demos"
    assert main(["demos", "--task", "push", "--obs-mode", "state", "--episodes", "2", "--out", str(out)]) == 0
    env = make_env("push", obs_mode="state")
    try:
        agent = BCAgent.create(env.observation_space, env.action_space, BCConfig(gradient_steps=20), seed=0)
        episodes = [load_episode(p) for p in episode_paths(out)]
        assert agent.fit_demos(out) == sum(len(ep["action"]) for ep in episodes)
        assert agent.act(env.reset(seed=0)[0]).shape == env.action_space.shape
    finally:
        env.close()
    pairs = DemoPairs()
    from se_robot.data.demos import load_demos

    load_demos(out, pairs, obs_keys=("state", "task"))
    obs, actions = pairs.arrays()
    first = episodes[0]
    n = len(first["action"])
    np.testing.assert_array_equal(actions[:n], first["action"])
    np.testing.assert_array_equal(obs["state"][:n], first["state"][:n])   # the observation before each action
    with pytest.raises(Exception, match="pixels"):   # demos without the key the policy observes are named
        BCAgent.create(spaces.Dict({"features": spaces.Box(-1, 1, (4,), np.float32)}), ACT).fit_demos(
            out, source_keys=("pixels",))
