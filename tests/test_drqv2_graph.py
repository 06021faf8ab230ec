"""DrQ-v2's static steps (the update as functions of tensors, random draws passed in) and their CUDA graphs.

On any machine: the static steps run eagerly give, bit for bit, the update the agent made before
they existed (transcribed below as ``update_as_before``, drawing its randomness where it used
to). On a CUDA machine: the replayed graphs give the eager update within float rounding, survive a
state-dict round trip, and read batches from pinned memory.
"""

from __future__ import annotations

import copy
import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from se_robot.agents.augment import draw_shifts, shift_images, shift_images_gather
from se_robot.agents.drqv2 import DrQV2Agent
from se_robot.agents.losses import bc_loss, critic_target
from se_robot.agents.nets import sample_clipped, soft_update
from se_robot.agents.replay import Batch, ReplayBuffer

pytestmark = pytest.mark.timeout(300)

SIZE, STACK, ACT, STATE, N = 24, 3, 4, 5, 16
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def make_agent(device: str = "cpu", state: bool = False, **overrides) -> DrQV2Agent:
    cfg = {"hidden_dim": 64, "feature_dim": 16, "batch_size": N, "num_expl_steps": 0, "device": device,
           "lr": 1e-3, "update_every_steps": 1, **overrides}
    spaces = {"pixels": SimpleNamespace(shape=(3 * STACK, SIZE, SIZE))}
    if state:
        spaces["state"] = SimpleNamespace(shape=(STATE,))
    act = SimpleNamespace(shape=(ACT,), low=-np.ones(ACT), high=np.ones(ACT))
    return DrQV2Agent.create(SimpleNamespace(spaces=spaces), act, cfg, seed=0)


def batches(count: int, state: bool = False, demo_rows: int = 0, seed: int = 1) -> list[Batch]:
    rng = np.random.default_rng(seed)

    def obs() -> dict[str, np.ndarray]:
        out = {"pixels": rng.integers(0, 256, (N, 3 * STACK, SIZE, SIZE), dtype=np.uint8)}
        if state:
            out["state"] = rng.standard_normal((N, STATE)).astype(np.float32)
        return out

    is_demo = np.arange(N) < demo_rows
    return [Batch(obs=obs(), action=rng.uniform(-1, 1, (N, ACT)).astype(np.float32),
                  reward=rng.standard_normal(N).astype(np.float32), discount=np.full(N, 0.97, np.float32),
                  next_obs=obs(), weights=rng.uniform(0.5, 1.0, N).astype(np.float32), indices=np.arange(N),
                  is_demo=is_demo.copy())
            for _ in range(count)]


def weights(agent: DrQV2Agent) -> dict[str, torch.Tensor]:
    return {f"{name}.{key}": value.detach().float().cpu() for name in ("encoder", "actor", "critic", "critic_target")
            for key, value in getattr(agent, name).state_dict().items()}


def update_as_before(agent: DrQV2Agent, batch: Batch, step: int) -> dict[str, float]:
    """The update before the static steps, transcribed: it drew the shifts while encoding, the
    noise while sampling actions, and read each metric with ``.item()``."""
    cfg, gen = agent.cfg, agent.gen
    t = agent._batch_tensors(batch)

    def encode(obs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = obs["pixels"]
        shifts = draw_shifts(x.shape[0], cfg.aug_pad, agent.device, gen)
        x = (shift_images_gather(x, cfg.aug_pad, shifts, cfg.channels_last).float() if cfg.aug_method == "gather"
             else shift_images(x.float(), cfg.aug_pad, shifts))
        return agent.encoder(x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x)

    h = encode(t["obs"])
    with torch.no_grad():
        next_h = encode(t["next_obs"])
    std = agent.std(step)
    state, next_state = t["obs"].get("proprio"), t["next_obs"].get("proprio")
    with torch.no_grad():
        next_action = sample_clipped(agent.actor(next_h, next_state).float(), std, cfg.stddev_clip, gen)
        next_q = agent.critic_target(next_h, next_state, next_action).float()
    target = critic_target(t["reward"], t["discount"], next_q, agent.target_subset())
    q = agent.critic(h, state, t["action"]).float()
    td = q - target.unsqueeze(0)
    loss = (td.pow(2) * t["weights"].unsqueeze(0)).mean(dim=(1, 2)).sum()
    agent.encoder_opt.zero_grad(set_to_none=True)
    agent.critic_opt.zero_grad(set_to_none=True)
    loss.backward()
    agent.critic_opt.step()
    agent.encoder_opt.step()
    metrics = {"loss/critic": loss.item(), "q/mean": q.mean().item(), "q/target": target.mean().item(),
               "batch/reward": t["reward"].mean().item(), "batch/demo_fraction": t["is_demo"].float().mean().item()}
    soft_update(agent.critic, agent.critic_target, cfg.critic_target_tau)
    h = h.detach()
    agent.critic.requires_grad_(False)
    mean = agent.actor(h, state)
    q = agent.critic(h, state, sample_clipped(mean.float(), std, cfg.stddev_clip, gen)).float()
    q_pi = q.min(dim=0).values if cfg.num_critics <= 2 else q.mean(dim=0)
    actor_loss = -q_pi.mean()
    metrics.update({"loss/actor": actor_loss.item(), "actor/std": std})
    if cfg.bc_weight > 0.0:
        bc = bc_loss(mean.float(), t["action"], t["is_demo"])
        actor_loss = actor_loss + cfg.bc_weight * bc
        metrics["loss/bc"] = bc.item()
    agent.actor_opt.zero_grad(set_to_none=True)
    actor_loss.backward()
    agent.actor_opt.step()
    agent.critic.requires_grad_(True)
    return metrics


@pytest.mark.parametrize("overrides", [
    {}, {"channels_last": False, "aug_method": "grid_sample", "fused_optim": False},
    {"num_critics": 5, "num_target_critics": 2}, {"bc_weight": 0.5, "state": True}])
def test_static_steps_give_the_update_as_before_bit_for_bit(overrides):
    overrides = dict(overrides)
    state = overrides.pop("state", False)
    new, old = make_agent(state=state, **overrides), make_agent(state=state, **overrides)
    for i, batch in enumerate(batches(3, state, demo_rows=N // 4)):
        assert new.update_batch(batch, step=100 + 50 * i) == update_as_before(old, batch, step=100 + 50 * i)
    a, b = weights(new), weights(old)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(new.gen.get_state(), old.gen.get_state())   # the same draws, in the same order


def test_std_as_a_tensor_is_the_float_bit_for_bit():
    """A graph holds ``std`` as a 0-dim float32 tensor it refills; eagerly it is the schedule's float."""
    data = batches(1)[0]
    as_float, as_tensor = make_agent(), make_agent()
    results = []
    for agent, std in ((as_float, 0.37), (as_tensor, torch.tensor(0.37))):
        x = agent._batch_tensors(data)
        x.update(agent._critic_draws(data.obs, N), std=std)
        results.append(agent.critic_step(x)["metrics"])
    assert torch.equal(*results)
    a, b = weights(as_float), weights(as_tensor)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bc_loss_without_demo_rows_is_zero_with_zero_gradient():
    mean = torch.zeros(4, 2, requires_grad=True)
    loss = bc_loss(mean, torch.ones(4, 2), torch.zeros(4, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(mean.grad == 0)


def test_cuda_graph_setting_on_the_cpu():
    agent = make_agent()
    assert agent.cfg.cuda_graph == "off" and not agent.graphed
    assert not make_agent(cuda_graph="auto").graphed   # auto: CUDA devices only
    assert not agent.critic_opt.param_groups[0]["capturable"]
    with pytest.raises(ValueError, match="cuda_graph: on needs a CUDA device"):
        make_agent(cuda_graph="on")


# ---------------------------------------------------------------- on a CUDA device
@pytest.fixture
def deterministic_cudnn(monkeypatch):
    """cuDNN's deterministic kernels, so that eager and replayed updates differ by rounding alone."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)


def close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Adam moves an element by about lr (1e-3) per step whatever its gradient's size, so where a
    gradient is near zero rounding can show at that scale: the largest difference is bounded by
    lr, the mean one by lr/100."""
    diffs = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    assert torch.isfinite(diffs).all()
    assert diffs.max().item() <= 1e-3 and diffs.mean().item() <= 1e-5, (diffs.max().item(), diffs.mean().item())


@cuda
@pytest.mark.usefixtures("deterministic_cudnn")
@pytest.mark.parametrize("overrides", [{}, {"num_critics": 5, "num_target_critics": 2, "bc_weight": 0.5}])
def test_graph_replay_matches_eager_updates(overrides):
    """Warm-up (3 eager), capture, then replays: the same weights and metrics as eager updates from
    one seed, within float rounding (cuDNN and cuBLAS may choose other kernels under capture)."""
    graphed, eager = make_agent("cuda", cuda_graph="auto", **overrides), make_agent("cuda", **overrides)
    assert graphed.graphed and graphed.critic_opt.param_groups[0]["capturable"]
    data = batches(8, demo_rows=N // 4)
    for i, batch in enumerate(data):
        mg, me = graphed.update_batch(batch, step=100 * i), eager.update_batch(batch, step=100 * i)
        assert mg.keys() == me.keys()
        for key in mg:
            assert mg[key] == pytest.approx(me[key], rel=1e-3, abs=1e-4), (i, key)
    assert graphed._graphs["critic"].graph is not None and graphed._graphs["actor"].graph is not None
    assert not graphed._graphs["critic"].failed
    close(weights(graphed), weights(eager))
    assert torch.equal(graphed.gen.get_state(), eager.gen.get_state())


@cuda
@pytest.mark.usefixtures("deterministic_cudnn")
def test_graph_state_dict_round_trip():
    """A checkpoint of a graphed agent loads into a fresh one (and into one without graphs); each
    then updates as the original does (the loader warms up and captures its own graphs)."""
    original = make_agent("cuda", utd=2, cuda_graph="on")
    data = batches(12)
    for batch in data[:6]:
        original.update_batch(batch, step=1000)
    buf = io.BytesIO()
    torch.save(original.state_dict(), buf)
    loaded = {}
    for name, setting in (("graphed", "auto"), ("eager", "off")):
        buf.seek(0)
        loaded[name] = make_agent("cuda", utd=2, cuda_graph=setting)
        loaded[name].load_state_dict(torch.load(buf, weights_only=True))
        step = loaded[name].critic_opt.state[next(iter(loaded[name].critic.parameters()))]["step"]
        assert step.device.type == "cuda" and step.item() == 6
    for batch in data[6:]:
        expected = original.update_batch(batch, step=1000)
        for agent in loaded.values():
            assert agent.update_batch(batch, step=1000)["loss/critic"] == pytest.approx(
                expected["loss/critic"], rel=1e-3, abs=1e-4)
    for agent in loaded.values():
        close(weights(agent), weights(original))


@cuda
@pytest.mark.usefixtures("deterministic_cudnn")
def test_update_rounds_with_pinned_replay_batches():
    """update() asks the replay for pinned batches; a smaller batch than the captured one runs eagerly."""
    rng = np.random.default_rng(0)
    replay = ReplayBuffer(capacity=200, frame_stack=STACK, n_step=2)
    frame = lambda: {"pixels": rng.integers(0, 256, (3 * STACK, SIZE, SIZE), dtype=np.uint8)}  # noqa: E731
    replay.add_first(frame())
    for i in range(120):
        replay.add(rng.uniform(-1, 1, ACT), float(rng.standard_normal()), frame(), False, i % 40 == 39)
        if i % 40 == 39:
            replay.add_first(frame())
    graphed, eager = make_agent("cuda", utd=2, cuda_graph="on"), make_agent("cuda", utd=2)
    eager_replay = copy.deepcopy(replay)
    for step in range(8):
        mg, me = graphed.update(replay, None, step), eager.update(eager_replay, None, step)
        assert mg["loss/critic"] == pytest.approx(me["loss/critic"], rel=1e-3, abs=1e-4)
    assert replay._pinned and replay.sample(N).obs["pixels"].base.is_pinned()
    small = replay.sample(N // 2)
    assert graphed.update_batch(small, step=0).keys() == eager.update_batch(small, step=0).keys()
    close(weights(graphed), weights(eager))
