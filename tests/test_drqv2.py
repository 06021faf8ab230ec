"""DrQ-v2 agent: targets, ensemble subsets, BC on demo rows, exact resume, learning on a fixed batch.

Small images (24x24) and small MLPs keep the whole module to a few seconds on 2 cores. Replay
batches come from the real ReplayBuffer (se_robot.agents.replay), not a mock.
"""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from se_robot.agents.drqv2 import DrQV2Agent, DrQV2Config
from se_robot.agents.losses import bc_loss, critic_target
from se_robot.agents.schedule import parse_schedule
from se_robot.agents.replay import Batch, ReplayBuffer
from se_robot.config import ConfigError, from_dict

pytestmark = pytest.mark.timeout(120)



SIZE, STACK, STATE, ACT = 24, 3, 5, 4


def spaces(pixels: bool = True, state: bool = True):
    sp = {}
    if pixels:
        sp["pixels"] = SimpleNamespace(shape=(3 * STACK, SIZE, SIZE))
    if state:
        sp["state"] = SimpleNamespace(shape=(STATE,))
    return SimpleNamespace(spaces=sp), SimpleNamespace(shape=(ACT,), low=-np.ones(ACT), high=np.ones(ACT))


def small_agent(seed: int = 0, pixels: bool = True, state: bool = True, **overrides) -> DrQV2Agent:
    cfg = {"hidden_dim": 32, "feature_dim": 16, "batch_size": 16, "num_expl_steps": 0, "device": "cpu",
           "lr": 1e-3, **overrides}
    obs_space, act_space = spaces(pixels, state)
    return DrQV2Agent.create(obs_space, act_space, cfg, seed=seed)


def random_obs(rng, pixels=True, state=True):
    obs = {}
    if pixels:
        obs["pixels"] = rng.integers(0, 256, (3, SIZE, SIZE), dtype=np.uint8)
    if state:
        obs["state"] = rng.standard_normal(STATE).astype(np.float32)
    return obs


def filled_replay(seed: int = 0, episodes: int = 3, steps: int = 12, pixels=True, state=True, **cfg) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    rb = ReplayBuffer(capacity=500, frame_stack=STACK, seed=seed, **cfg)
    for _ in range(episodes):
        rb.add_first(random_obs(rng, pixels, state))
        for t in range(steps):
            rb.add(rng.uniform(-1, 1, ACT), float(rng.standard_normal()), random_obs(rng, pixels, state),
                   False, t == steps - 1)
    return rb


def state_batch(n: int = 8, seed: int = 0, is_demo=None) -> Batch:
    rng = np.random.default_rng(seed)
    obs = lambda: {"state": rng.standard_normal((n, STATE)).astype(np.float32)}  # noqa: E731
    return Batch(obs=obs(), action=rng.uniform(-1, 1, (n, ACT)).astype(np.float32),
                 reward=rng.standard_normal(n).astype(np.float32), discount=np.full(n, 0.97, np.float32),
                 next_obs=obs(), weights=np.ones(n, np.float32), indices=np.arange(n),
                 is_demo=np.zeros(n, bool) if is_demo is None else np.asarray(is_demo))


# ---------------------------------------------------------------- config
def test_defaults_are_the_papers():
    cfg = DrQV2Config()
    assert (cfg.lr, cfg.batch_size, cfg.feature_dim, cfg.hidden_dim) == (1e-4, 256, 50, 1024)
    assert cfg.critic_target_tau == 0.01
    assert (cfg.update_every_steps, cfg.num_expl_steps, cfg.stddev_clip, cfg.aug_pad) == (2, 2000, 0.3, 4)


def test_bad_config_names_key():
    with pytest.raises(ConfigError, match="utd.*out of range"):
        from_dict(DrQV2Config, {"utd": 0}, "drqv2.yaml")
    with pytest.raises(ConfigError, match="num_target_critics"):
        from_dict(DrQV2Config, {"num_critics": 2, "num_target_critics": 3}, "drqv2.yaml")
    with pytest.raises(ConfigError, match="stddev_schedule"):
        from_dict(DrQV2Config, {"stddev_schedule": "cosine(1,2)"}, "drqv2.yaml")


def test_schedules():
    f = parse_schedule("linear(1.0,0.1,500000)")
    assert f(0) == 1.0 and f(250000) == pytest.approx(0.55) and f(10**7) == pytest.approx(0.1)
    assert parse_schedule("0.2")(123) == 0.2
    g = parse_schedule("step_linear(1.0,0.5,100,0.1,100)")
    assert g(100) == pytest.approx(0.5) and g(150) == pytest.approx(0.3) and g(1000) == pytest.approx(0.1)


# ---------------------------------------------------------------- targets and ensembles
def test_critic_target_hand_computed():
    reward = torch.tensor([[1.0], [0.5], [-1.0]])
    discount = torch.tensor([[0.9], [0.0], [0.81]])
    next_q = torch.tensor([[[2.0], [7.0], [1.0]],
                           [[3.0], [5.0], [-1.0]]])  # (N=2, B=3, 1)
    expected = torch.tensor([[1.0 + 0.9 * 2.0], [0.5], [-1.0 + 0.81 * -1.0]])
    torch.testing.assert_close(critic_target(reward, discount, next_q), expected)


def test_ensemble_subset_min():
    next_q = torch.tensor([[[0.0]], [[5.0]], [[-3.0]], [[4.0]]])  # N=4, B=1
    r, d = torch.zeros(1, 1), torch.ones(1, 1)
    assert critic_target(r, d, next_q, torch.tensor([1, 3])).item() == 4.0
    assert critic_target(r, d, next_q, torch.tensor([3, 2])).item() == -3.0


def test_agent_draws_distinct_random_subsets():
    agent = small_agent(pixels=False, num_critics=6, num_target_critics=2, critic_layer_norm=True)
    subsets = set()
    for _ in range(30):
        s = agent.target_subset().tolist()
        assert len(s) == 2 and len(set(s)) == 2 and all(0 <= i < 6 for i in s)
        subsets.add(tuple(sorted(s)))
    assert len(subsets) > 3
    assert small_agent(pixels=False).target_subset() is None  # the paper's pair: both, no draw
    q = agent.critic(None, torch.zeros(3, STATE), torch.zeros(3, ACT))
    assert q.shape == (6, 3, 1)


def test_update_critic_matches_hand_target_with_zero_noise():
    """With std 0 and tau 0 the critic regresses exactly onto r + d * min_i Q'_i(s', pi(s'))."""
    agent = small_agent(pixels=False, stddev_schedule="0.0", critic_target_tau=0.0)
    batch = state_batch()
    t = agent._batch_tensors(batch)
    with torch.no_grad():
        next_a = agent.actor(None, t["next_obs"]["proprio"])
        next_q = agent.critic_target(None, t["next_obs"]["proprio"], next_a)
        target = t["reward"] + t["discount"] * next_q.min(0).values
        q = agent.critic(None, t["obs"]["proprio"], t["action"])
        expected = ((q - target) ** 2).mean(dim=(1, 2)).sum().item()
    metrics = agent.update_batch(batch, step=0)
    assert metrics["loss/critic"] == pytest.approx(expected, rel=1e-5)
    assert metrics["q/target"] == pytest.approx(target.mean().item(), rel=1e-5)


# ---------------------------------------------------------------- behaviour cloning
def test_bc_loss_uses_only_demo_rows():
    mean = torch.zeros(4, 2, requires_grad=True)
    demo_action = torch.tensor([[1.0, 1.0], [100.0, 100.0], [0.5, -0.5], [100.0, -100.0]])
    is_demo = torch.tensor([True, False, True, False])
    loss = bc_loss(mean, demo_action, is_demo)
    assert loss.item() == pytest.approx((1 + 1 + 0.25 + 0.25) / 4)
    loss.backward()
    assert torch.all(mean.grad[~is_demo] == 0) and torch.all(mean.grad[is_demo] != 0)
    assert bc_loss(mean, demo_action, torch.zeros(4, dtype=torch.bool)).item() == 0.0


def test_agent_bc_metric_on_demo_rows():
    agent = small_agent(pixels=False, bc_weight=2.5)
    batch = state_batch(is_demo=[True, True, False, False, False, False, False, False])
    with torch.no_grad():
        mean = agent.actor(None, torch.as_tensor(batch.obs["state"]))
    expected = ((mean[:2] - torch.as_tensor(batch.action[:2])) ** 2).mean().item()
    critic_before = [p.clone() for p in agent.critic.parameters()]
    agent.critic_opt.step = lambda: None  # keep the critic fixed so the actor sees the same nets
    metrics = agent.update_batch(batch, step=0)
    assert metrics["loss/bc"] == pytest.approx(expected, rel=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(critic_before, agent.critic.parameters()))
    assert "loss/bc" not in small_agent(pixels=False).update_batch(batch, step=0)


def test_symmetric_sampling_with_demos():
    agent = small_agent(batch_size=16, demo_fraction=0.5)
    online, demos = filled_replay(0), filled_replay(1)
    metrics = agent.update(online, demos, step=0)
    assert metrics["batch/demo_fraction"] == 0.5
    assert agent.update(online, demos, step=1) == {}  # update_every_steps = 2
    assert small_agent().update(online, None, step=0)["batch/demo_fraction"] == 0.0


# ---------------------------------------------------------------- acting
def test_act_shapes_exploration_and_eval():
    agent = small_agent(num_expl_steps=10)
    obs = random_obs(np.random.default_rng(0))
    obs["pixels"] = np.concatenate([obs["pixels"]] * STACK)
    a_eval = agent.act(obs, step=0, eval_mode=True)
    assert a_eval.shape == (ACT,) and a_eval.dtype == np.float32 and np.all(np.abs(a_eval) <= 1)
    np.testing.assert_array_equal(a_eval, agent.act(obs, step=0, eval_mode=True))
    assert not np.allclose(agent.act(obs, step=0, eval_mode=False), a_eval)
    assert np.all(np.abs(agent.act(obs, step=100, eval_mode=False)) <= 1)


def test_state_and_task_are_one_proprio_vector_in_contract_order():
    act_space = SimpleNamespace(shape=(ACT,), low=-np.ones(ACT), high=np.ones(ACT))
    obs_space = SimpleNamespace(spaces={"task": SimpleNamespace(shape=(2,)), "state": SimpleNamespace(shape=(STATE,)),
                                        "pixels": SimpleNamespace(shape=(3 * STACK, SIZE, SIZE))})
    agent = DrQV2Agent.create(obs_space, act_space, {"hidden_dim": 16, "device": "cpu"})
    assert agent.proprio_keys == ("state", "task")
    obs = {"task": np.array([7.0, 8.0], np.float32), "state": np.ones(STATE, np.float32),
           "pixels": np.zeros((3 * STACK, SIZE, SIZE), np.uint8)}
    np.testing.assert_array_equal(agent._to_tensors(obs)["proprio"].numpy(), [1.0] * STATE + [7.0, 8.0])
    assert agent.act(obs, 0, True).shape == (ACT,)
    with pytest.raises(ValueError, match="features"):   # encoder features are SAC/MBPO's input, not DrQ-v2's
        DrQV2Agent.create(SimpleNamespace(spaces={"features": SimpleNamespace(shape=(8,))}), act_space, {})


def test_rejects_unnormalised_actions():
    obs_space, _ = spaces()
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        DrQV2Agent.create(obs_space, SimpleNamespace(shape=(2,), low=-np.ones(2) * 3, high=np.ones(2) * 3))


# ---------------------------------------------------------------- resume and learning
def test_state_dict_round_trip_is_exact():
    replay = filled_replay(0)
    a = small_agent(seed=0, utd=2, num_critics=3, num_target_critics=2)
    for step in range(0, 6, 2):
        a.update(replay, None, step)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = small_agent(seed=123, utd=2, num_critics=3, num_target_critics=2)
    b.load_state_dict(torch.load(buf, weights_only=True))  # plain tensors and containers only
    obs = {"pixels": np.random.default_rng(5).integers(0, 256, (3 * STACK, SIZE, SIZE), dtype=np.uint8),
           "state": np.ones(STATE, np.float32)}
    np.testing.assert_array_equal(a.act(obs, 10, True), b.act(obs, 10, True))
    np.testing.assert_array_equal(a.act(obs, 10, False), b.act(obs, 10, False))
    batch = replay.sample(16)
    assert a.update_batch(batch, 6) == b.update_batch(batch, 6)


def test_load_rejects_other_shapes():
    a = small_agent(pixels=False)
    with pytest.raises(ValueError, match="checkpoint is for observations"):
        small_agent().load_state_dict(a.state_dict())


def test_critic_overfits_fixed_batch():
    """Pixels, augmentation on: 30 steps at lr 3e-3 take the loss to ~10% of its start (seen 0.08)."""
    agent = small_agent(seed=0, hidden_dim=64, lr=3e-3)
    batch = filled_replay(0).sample(16)
    losses = [agent.update_batch(batch, step=10_000)["loss/critic"] for _ in range(30)]
    assert np.mean(losses[-5:]) < 0.3 * np.mean(losses[:5])


def test_frozen_encoder_uses_replay_feature_cache():
    agent = small_agent(freeze_encoder=True)
    replay = filled_replay(0)
    replay.set_feature_fn(agent.encode_frames)
    batch = replay.sample(8)
    assert "features" in batch.obs and "pixels" not in batch.obs
    assert batch.obs["features"].shape == (8, agent.encoder.repr_dim)
    before = [p.clone() for p in agent.encoder.parameters()]
    metrics = agent.update(replay, None, step=0)
    assert np.isfinite(metrics["loss/critic"]) and agent.encoder_opt is None
    assert all(torch.equal(x, y) for x, y in zip(before, agent.encoder.parameters()))
    # the cache and the on-line path see the same features
    sample_pixels = filled_replay(0).sample(2).obs["pixels"]
    with torch.no_grad():
        direct = agent.encoder(torch.as_tensor(sample_pixels).float()).numpy()
    frames = sample_pixels.reshape(2 * STACK, 3, SIZE, SIZE)
    np.testing.assert_allclose(agent.encode_frames(frames).reshape(2, -1), direct, rtol=1e-5, atol=1e-5)


def test_prioritized_replay_gets_td_errors():
    agent = small_agent(pixels=False)
    replay = filled_replay(0, pixels=False, prioritized=True)
    before = replay._tree.total
    agent.update(replay, None, step=0)
    assert replay._tree.total != before


@pytest.mark.parametrize("overrides", [{"amp": "bf16"}, {"channels_last": True}, {"encoder": "resnet"},
                                       {"aug_method": "gather", "amp": "bf16", "channels_last": True}])
def test_fast_paths_and_resnet_learn(overrides):
    agent = small_agent(**overrides)
    metrics = agent.update(filled_replay(0), None, step=0)
    assert all(np.isfinite(v) for v in metrics.values())


def test_learner_benchmark(capsys):
    from benchmarks.__main__ import main

    assert main(["learner", "--rows", "cpu,frozen512", "--cpu-image", "24", "--cpu-batch", "4",
                 "--frozen-batch", "4", "--hidden-dim", "32", "--seconds", "0", "--min-updates", "1",
                 "--profile", "--profile-updates", "2"]) == 0
    out = capsys.readouterr().out
    assert "cpu " in out and "frozen512" in out and "updates/s" in out
    assert "profile cpu, per update:" in out and "conv forward" in out


def test_actor_climbs_the_critic_on_a_bandit():
    """One-step task, reward -|a - 0.5|^2: fit the critic, then the actor's mean moves to 0.5.

    The critic goes first because a half-fitted critic is close to linear in the action and drives
    a tanh actor into saturation (seen with joint training from step 0 on this tiny problem).
    """
    agent = small_agent(pixels=False, lr=1e-3, hidden_dim=128, stddev_schedule="0.2")
    rng = np.random.default_rng(0)
    n, goal = 128, 0.5
    obs = {"state": np.ones((n, STATE), np.float32)}
    for i in range(400):
        action = rng.uniform(-1, 1, (n, ACT)).astype(np.float32)
        batch = Batch(obs=obs, action=action, reward=-((action - goal) ** 2).sum(1).astype(np.float32),
                      discount=np.zeros(n, np.float32), next_obs=obs, weights=np.ones(n, np.float32),
                      indices=np.arange(n), is_demo=np.zeros(n, bool))
        agent.update_batch(batch, step=0, update_actor=i >= 200)
    mean = agent.act({"state": np.ones(STATE, np.float32)}, step=0, eval_mode=True)
    np.testing.assert_allclose(mean, goal, atol=0.15)


def test_seed_fixes_networks_and_leaves_global_rng_alone():
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    a = small_agent(seed=3)
    assert torch.equal(torch.rand(1), expected)
    b = small_agent(seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.encoder.parameters(), b.encoder.parameters()))
    assert not all(torch.equal(x, y) for x, y in zip(a.actor.parameters(), small_agent(seed=4).actor.parameters()))


def test_critic_layer_norm_is_per_member():
    agent = small_agent(pixels=False, critic_layer_norm=True, num_critics=3, num_target_critics=2)
    norms = [m for m in agent.critic.heads if type(m).__name__ == "EnsembleLayerNorm"]
    assert len(norms) == 2 and norms[0].weight.shape == (3, 1, 32)
    metrics = agent.update_batch(state_batch(), step=0)
    assert np.isfinite(metrics["loss/critic"])
