"""MBPO: rollout schedule and buffer sizing, branching and termination, the exploitation guard,
end-to-end updates on the shared replay buffer, and exact resume."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from gymnasium import spaces

from se_robot.agents.mbpo import MBPOAgent, MBPOConfig, ModelBuffer, create, rollout_length
from se_robot.agents.replay import ReplayBuffer
from se_robot.config import ConfigError, from_dict

pytestmark = pytest.mark.timeout(180)



# The toy system's 3-vector is split as an env gives it: 2 proprio entries, 1 task feature.
OBS = spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (2,), np.float32),
                   "task": spaces.Box(-np.inf, np.inf, (1,), np.float32)})


def split(s: np.ndarray) -> dict[str, np.ndarray]:
    return {"state": s[:2], "task": s[2:]}
ACT = spaces.Box(-1.0, 1.0, (2,), np.float32)
A = np.array([[0.9, 0.1, 0.0], [0.0, 0.9, 0.1], [0.1, 0.0, 0.9]], np.float32)
B = np.array([[0.3, 0.0], [0.0, 0.3], [0.1, -0.1]], np.float32)


def toy_replay(transitions: int, n_step: int = 1, seed: int = 0) -> ReplayBuffer:
    """A noisy linear system driven by random actions, in episodes of 25 steps; reward -|s|^2."""
    rng = np.random.default_rng(seed)
    replay = ReplayBuffer(capacity=2 * transitions, n_step=n_step, frame_stack=1, seed=seed)
    s = None
    for t in range(transitions):
        if t % 25 == 0:
            s = rng.normal(size=3).astype(np.float32)
            replay.add_first(split(s))
        a = rng.uniform(-1, 1, 2).astype(np.float32)
        ns = (A @ s + B @ a + 0.01 * rng.normal(size=3)).astype(np.float32)
        replay.add(a, -float(ns @ ns), split(ns), terminated=False, truncated=(t % 25 == 24))
        s = ns
    return replay


def small_cfg(max_grad_steps: int = 250, **kw) -> MBPOConfig:
    base = {"utd_ratio": 2, "model_train_interval_steps": 50, "model_min_transitions": 200,
            "rollout_batch_size": 200, "rollout_schedule": [0, 1000, 1, 3], "epoch_length_steps": 100,
            "model": {"ensemble_size": 4, "num_elites": 3, "hidden_dim": 32, "num_layers": 2, "max_epochs": 100,
                      "batch_size": 64, "max_grad_steps": 250},
            "sac": {"hidden_dim": 32, "batch_size": 64, "min_replay": 64}}
    base["model"]["max_grad_steps"] = max_grad_steps
    base.update(kw)
    return from_dict(MBPOConfig, base, "<test>")


@pytest.fixture(scope="module")
def fitted_agent():
    agent = create(OBS, ACT, small_cfg(max_grad_steps=2000), "cpu", seed=0)
    replay = toy_replay(600)
    metrics = agent.fit_model(replay)
    return agent, replay, metrics


def test_defaults_are_the_papers():
    cfg = MBPOConfig()
    assert (cfg.utd_ratio, cfg.real_ratio, cfg.model_train_interval_steps) == (20, 0.05, 250)
    assert (cfg.model.ensemble_size, cfg.model.num_elites) == (7, 5)
    with pytest.raises(ConfigError, match="rollout_schedule"):
        from_dict(MBPOConfig, {"rollout_schedule": [10, 5, 1, 2]}, "mbpo.yaml")


def test_rollout_length_schedule_is_linear_in_env_steps():
    schedule = (20_000, 100_000, 1, 15)
    assert [rollout_length(schedule, s) for s in (0, 20_000, 60_000, 100_000, 500_000)] == [1, 1, 8, 15, 15]
    assert rollout_length((0, 0, 4, 4), 10) == 4


def test_model_buffer_is_sized_to_the_schedule_and_keeps_newest_on_resize():
    agent = create(OBS, ACT, small_cfg(), "cpu")
    # 200 starts per refit * (100 / 50) refits per epoch * length * 1 epoch
    assert agent._buffer_capacity(0) == 200 * 2 * 1
    assert agent._buffer_capacity(1000) == 200 * 2 * 3
    buf = ModelBuffer(1, 1, 5, torch.device("cpu"))
    x = torch.arange(7.0).reshape(-1, 1)
    buf.add(obs=x, action=x, reward=x, discount=x, next_obs=x)
    buf.resize(3)
    assert sorted(buf.data["obs"][:, 0].tolist()) == [4.0, 5.0, 6.0]
    buf.resize(6)
    assert len(buf) == 3


def test_model_fit_reports_every_member_and_picks_elites(fitted_agent):
    agent, _, metrics = fitted_agent
    losses = [metrics[f"model/holdout_loss/member_{i}"] for i in range(4)]
    assert sorted(agent.model.elites.tolist()) == sorted(np.argsort(losses)[:3].tolist())
    assert metrics["model/holdout_loss/elites"] < 0.3  # normalised units; the toy system is nearly linear


def test_rollouts_branch_from_real_states_and_stop_at_termination(fitted_agent):
    agent, _, _ = fitted_agent
    agent.buffer.resize(10_000)
    agent.buffer.size = agent.buffer.ptr = 0
    calls = []

    def reward_fn(s, a, ns):
        calls.append(len(s))
        return -np.sum(ns ** 2, axis=1), ns[:, 0] > 0.0

    agent.set_reward_fn(reward_fn)
    start = torch.as_tensor(np.random.default_rng(0).normal(size=(100, 3)), dtype=torch.float32)
    metrics = agent.rollout(start, length=3)
    agent.set_reward_fn(None)
    n = len(agent.buffer)
    assert calls[0] == 100 and calls[1] < 100 and n == sum(calls)   # terminated rollouts stop
    d = agent.buffer.data
    torch.testing.assert_close(d["obs"][:100], start)                 # first step branches from real states
    terminated = d["next_obs"][:n, 0] > 0
    assert torch.equal(d["discount"][:n, 0] == 0, terminated)
    torch.testing.assert_close(d["reward"][:n, 0], -d["next_obs"][:n].square().sum(1))
    assert metrics["model/rollout_transitions"] == n and metrics["model/rollout_length"] == 3


def _one_step(agent: MBPOAgent, start: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    agent.buffer.size = agent.buffer.ptr = 0
    agent.generator.manual_seed(seed)
    agent.sac.generator.manual_seed(seed)
    agent.rollout(start, length=1)
    return {k: v[: len(agent.buffer)].clone() for k, v in agent.buffer.data.items()}


@pytest.mark.parametrize("kind", ["aleatoric", "epistemic"])
def test_uncertainty_penalty_subtracts_lambda_times_disagreement(fitted_agent, kind):
    agent, _, _ = fitted_agent
    agent.buffer.resize(1000)
    start = torch.as_tensor(np.random.default_rng(1).normal(size=(50, 3)), dtype=torch.float32)
    base_cfg = agent.cfg
    try:
        agent.cfg = from_dict(MBPOConfig, {**_plain(base_cfg), "penalty_kind": kind, "uncertainty_penalty": 0.0})
        plain = _one_step(agent, start, 3)
        agent.cfg = from_dict(MBPOConfig, {**_plain(base_cfg), "penalty_kind": kind, "uncertainty_penalty": 2.0})
        penalised = _one_step(agent, start, 3)
    finally:
        agent.cfg = base_cfg
    torch.testing.assert_close(plain["next_obs"], penalised["next_obs"])
    mean, var = agent.model.predict(plain["obs"], plain["action"])
    scale = agent.model.out_std
    mean, std = mean[agent.model.elites] / scale, var[agent.model.elites].sqrt() / scale
    u = std.norm(dim=-1).max(0).values if kind == "aleatoric" else mean.std(0).norm(dim=-1)
    assert (u > 0).all()
    torch.testing.assert_close(plain["reward"][:, 0] - penalised["reward"][:, 0], 2.0 * u)


def test_disagreement_cut_stops_uncertain_rollouts(fitted_agent):
    agent, _, _ = fitted_agent
    agent.buffer.resize(1000)
    start = torch.as_tensor(np.random.default_rng(2).normal(size=(50, 3)), dtype=torch.float32)
    base_cfg = agent.cfg
    try:
        agent.cfg = from_dict(MBPOConfig, {**_plain(base_cfg), "disagreement_cut": 0.0})
        agent.buffer.size = agent.buffer.ptr = 0
        metrics = agent.rollout(start, 2)
        assert len(agent.buffer) == 0 and metrics["model/rollout_cut_fraction"] == pytest.approx(0.5)
        agent.cfg = from_dict(MBPOConfig, {**_plain(base_cfg), "disagreement_cut": 1e6})
        agent.buffer.size = agent.buffer.ptr = 0
        metrics = agent.rollout(start, 2)
        assert len(agent.buffer) == 100 and metrics["model/disagreement"] > 0
    finally:
        agent.cfg = base_cfg


def _plain(cfg: MBPOConfig) -> dict:
    from se_robot.config import to_dict
    return to_dict(cfg)


def test_update_trains_model_then_mixes_real_and_model_data():
    agent = create(OBS, ACT, small_cfg(), "cpu", seed=0)
    replay = toy_replay(300)
    metrics = agent.update(replay, None, step=300)
    assert agent.last_fit_step == 300 and len(agent.buffer) > 0
    for key in ("model/holdout_loss/member_0", "model/rollout_length", "model/disagreement", "mbpo/real_ratio",
                "loss/critic", "loss/actor", "alpha"):
        assert key in metrics and np.isfinite(metrics[key]), key
    assert metrics["mbpo/real_ratio"] == pytest.approx(0.05, abs=0.01)
    assert agent.sac.num_updates == 2
    agent.update(replay, None, step=320)
    assert agent.last_fit_step == 300  # not yet due
    agent.update(replay, None, step=350)
    assert agent.last_fit_step == 350


def test_refuses_n_step_replay():
    agent = create(OBS, ACT, small_cfg(), "cpu")
    with pytest.raises(ValueError, match="n_step=1"):
        agent.update(toy_replay(300, n_step=3), None, step=300)


@pytest.mark.parametrize("interval", [None, 10])
def test_resume_from_state_dict_is_exact(interval):
    replay_a, replay_b = toy_replay(300, seed=4), toy_replay(300, seed=4)
    agent = create(OBS, ACT, small_cfg(rollout_interval_steps=interval), "cpu", seed=5)
    agent.update(replay_a, None, step=300)
    buf = io.BytesIO()
    torch.save(agent.state_dict(), buf)
    replay_b.rng.bit_generator.state = replay_a.rng.bit_generator.state
    steps = (310, 315, 360)  # 360 refits the model and rolls out; with interval 10, 310 rolls out too
    for step in steps:
        agent.update(replay_a, None, step)
    buf.seek(0)
    resumed = create(OBS, ACT, small_cfg(rollout_interval_steps=interval), "cpu", seed=99)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    for step in steps:
        resumed.update(replay_b, None, step)
    obs = split(np.ones(3, np.float32))
    np.testing.assert_array_equal(agent.act(obs, 0, False), resumed.act(obs, 0, False))
    for p, q in zip(list(agent.model.parameters()) + list(agent.sac.actor.parameters()),
                    list(resumed.model.parameters()) + list(resumed.sac.actor.parameters())):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    torch.testing.assert_close(agent.buffer.data["obs"], resumed.buffer.data["obs"], rtol=0, atol=0)


def test_rollout_interval_rolls_out_between_refits_with_the_same_states_per_epoch():
    cfg = small_cfg(rollout_interval_steps=10, rollout_schedule=[0, 0, 2, 2])
    assert cfg.rollout_starts == 200 * 10 // 50
    agent = create(OBS, ACT, cfg, "cpu", seed=1)
    replay = toy_replay(300, seed=2)
    fits, rollouts = [], []
    agent.fit_model = lambda r, fit=agent.fit_model: fits.append(1) or fit(r)
    agent.rollout = lambda start, length, roll=agent.rollout: rollouts.append((len(start), length)) or roll(start, length)
    for step in range(300, 351):
        agent.update(replay, None, step)
    assert len(fits) == 2                          # steps 300 and 350
    assert rollouts == [(40, 2)] * 6               # steps 300, 310, ..., 350
    assert agent.last_rollout_step == 350
    # the buffer still holds one epoch: 200 states per refit, 2 refits per epoch, length 2
    assert agent.buffer.capacity == 200 * 2 * 2
    with pytest.raises(ConfigError, match="rollout_interval_steps"):
        small_cfg(rollout_interval_steps=60)


def test_task_reward_applies_to_the_envs_own_vector_only():
    def reward_fn(s, a, ns):
        return np.zeros(len(s)), np.zeros(len(s), bool)

    agent = create(OBS, ACT, small_cfg(), "cpu")
    agent.set_reward_fn(reward_fn)
    assert agent.obs_keys == ("state", "task") and agent.sac.obs_dim == 3 and agent.reward_fn is reward_fn
    encoded = spaces.Dict({"features": spaces.Box(-np.inf, np.inf, (4,), np.float32),
                           "state": spaces.Box(-np.inf, np.inf, (2,), np.float32)})
    agent = create(encoded, ACT, small_cfg(), "cpu")
    agent.set_reward_fn(reward_fn)
    assert agent.obs_keys == ("features", "state") and agent.reward_fn is None
