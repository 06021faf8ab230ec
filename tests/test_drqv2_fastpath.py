"""DrQ-v2's fast paths learn as the plain fp32 path does (same seeds, same batches, small sizes).

The default settings (channels-last, integer-gather shift into channels-last, fused Adam, first-conv
normalisation) must give the updates of the plain settings (NCHW, grid_sample, foreach Adam) up
to float rounding, and bf16 autocast within bf16's precision. ``amp: auto`` must pick bf16 only on
native hardware and only when the probe finds it faster.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from se_robot.agents import precision
from se_robot.agents.augment import draw_shifts, shift_images, shift_images_gather
from se_robot.agents.drqv2 import DrQV2Agent
from se_robot.agents.encoders import DrQV2Encoder
from se_robot.agents.replay import Batch

pytestmark = pytest.mark.timeout(300)

SIZE, STACK, ACT, N = 24, 3, 4, 32
PLAIN = {"channels_last": False, "aug_method": "grid_sample", "fused_optim": False, "amp": "none"}
LR = 1e-3


def make_agent(**overrides) -> DrQV2Agent:
    cfg = {"hidden_dim": 64, "feature_dim": 16, "batch_size": N, "num_expl_steps": 0, "device": "cpu",
           "lr": LR, "update_every_steps": 1, **overrides}
    space = SimpleNamespace(spaces={"pixels": SimpleNamespace(shape=(3 * STACK, SIZE, SIZE))})
    act = SimpleNamespace(shape=(ACT,), low=-np.ones(ACT), high=np.ones(ACT))
    return DrQV2Agent.create(space, act, cfg, seed=0)


def batches(count: int = 3) -> list[Batch]:
    rng = np.random.default_rng(1)
    pix = lambda: {"pixels": rng.integers(0, 256, (N, 3 * STACK, SIZE, SIZE), dtype=np.uint8)}  # noqa: E731
    return [Batch(obs=pix(), action=rng.uniform(-1, 1, (N, ACT)).astype(np.float32),
                  reward=rng.standard_normal(N).astype(np.float32), discount=np.full(N, 0.97, np.float32),
                  next_obs=pix(), weights=np.ones(N, np.float32), indices=np.arange(N), is_demo=np.zeros(N, bool))
            for _ in range(count)]


def run_updates(agent: DrQV2Agent, data: list[Batch]) -> list[dict[str, float]]:
    return [agent.update_batch(b, step=100) for b in data]


def params(agent: DrQV2Agent) -> dict[str, torch.Tensor]:
    out = {}
    for name in ("encoder", "actor", "critic", "critic_target"):
        for key, value in getattr(agent, name).state_dict().items():
            out[f"{name}.{key}"] = value.float()
    return out


def compare(fast: DrQV2Agent, plain: DrQV2Agent, threshold: float) -> tuple[float, float]:
    """(largest element difference, share of elements differing by more than ``threshold``), all weights."""
    a, b = params(fast), params(plain)
    diffs = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    assert torch.isfinite(diffs).all()
    return diffs.max().item(), (diffs > threshold).float().mean().item()


def test_default_is_the_fast_path():
    agent = make_agent()
    assert agent.cfg.channels_last and agent.cfg.aug_method == "gather" and agent.cfg.fused_optim
    assert agent.amp in ("none", "bf16")
    assert agent.critic_opt.param_groups[0]["fused"]


def test_fast_and_plain_updates_agree():
    """Float rounding only: after 3 updates at lr 1e-3 the largest weight difference measured 3e-6.

    Adam moves an element by about lr per step whatever its gradient's size, so rounding can show
    at the scale of lr where a gradient is near zero; the bound, lr/20, leaves a margin of 15x.
    """
    data = batches()
    fast, plain = make_agent(), make_agent(**PLAIN)
    m_fast, m_plain = run_updates(fast, data), run_updates(plain, data)
    for mf, mp in zip(m_fast, m_plain):
        for key in ("loss/critic", "q/mean", "q/target", "loss/actor"):
            assert mf[key] == pytest.approx(mp[key], rel=1e-4, abs=1e-5), key
    largest, _ = compare(fast, plain, LR / 20)
    assert largest < LR / 20


def test_bf16_updates_agree_loosely():
    """bf16 keeps 8 bits of mantissa (about 0.4% per rounding), so losses agree to a few percent.

    Adam moves each element by about lr per step whatever its gradient's size, so an element whose
    gradient bf16 rounding flips may move up to 2 lr the other way per update: that bounds the
    largest difference. Elements with a clear gradient move alike: 3.7% differed by more than lr/2
    after 2 updates when measured; the test allows 15%.
    """
    data = batches(2)
    bf16, plain = make_agent(amp="bf16"), make_agent(**PLAIN)
    assert bf16.amp == "bf16"
    for mf, mp in zip(run_updates(bf16, data), run_updates(plain, data)):
        assert mf["loss/critic"] == pytest.approx(mp["loss/critic"], rel=0.05)
        assert mf["q/mean"] == pytest.approx(mp["q/mean"], rel=0.05, abs=0.02)
    largest, share = compare(bf16, plain, LR / 2)
    assert largest <= 2 * LR * len(data)
    assert share < 0.15


def test_gather_shift_into_channels_last_equals_grid_sample():
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 9, 20, 20), dtype=torch.uint8, generator=gen)
    shifts = draw_shifts(6, 4, generator=gen)
    out = shift_images_gather(x, 4, shifts, channels_last=True)
    assert out.dtype == torch.uint8 and out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, shift_images_gather(x, 4, shifts))
    assert (out.float() - shift_images(x.float(), 4, shifts)).abs().max() < 0.01


def test_first_conv_normalisation_equals_scaling_the_pixels():
    torch.manual_seed(0)
    enc = DrQV2Encoder(9, (20, 20))
    x = torch.randint(0, 256, (4, 9, 20, 20)).float()
    out = enc(x)
    ref = enc.convnet(x / 255.0 - 0.5).flatten(1)
    assert torch.allclose(out, ref, atol=1e-5)
    (g_out,) = torch.autograd.grad(out.square().sum(), enc.convnet[0].weight)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), enc.convnet[0].weight)
    assert torch.allclose(g_out, g_ref, rtol=1e-4, atol=1e-4)


def test_amp_auto_needs_native_bf16(monkeypatch):
    enc = DrQV2Encoder(9, (20, 20))
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    assert precision.pick_amp("auto", torch.device("cpu"), enc, (9, 20, 20)) == "none"
    assert precision.pick_amp("bf16", torch.device("cpu"), enc, (9, 20, 20)) == "bf16"
    assert precision.pick_amp("auto", torch.device("cpu"), None, None) == "none"


@pytest.mark.parametrize("bf16_share, expected", [(0.5, "bf16"), (1.0, "none")])
def test_amp_auto_keeps_bf16_only_when_the_probe_is_faster(monkeypatch, bf16_share, expected):
    """The probe's timings are replaced by fixed ones: bf16 at half the fp32 time wins, equal time loses."""
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    calls = []

    def elapsed(step, device):
        step()
        calls.append(step)
        return bf16_share if len(calls) % 2 == 0 else 1.0   # the probe alternates fp32, bf16

    monkeypatch.setattr(precision, "_elapsed", elapsed)
    enc = DrQV2Encoder(9, (20, 20))
    assert precision.pick_amp("auto", torch.device("cpu"), enc, (9, 20, 20), batch=2, reps=2) == expected
    assert len(calls) == 4


def test_cpu_flags_parse(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert not precision.cpu_has_native_bf16(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n")
    assert precision.cpu_has_native_bf16(info)
    assert not precision.cpu_has_native_bf16(tmp_path / "missing")


def test_fused_optimizer_choice_survives_loading_a_foreach_checkpoint():
    data = batches(1)
    old = make_agent(fused_optim=False)
    run_updates(old, data)
    new = make_agent()
    new.load_state_dict(old.state_dict())
    assert new.critic_opt.param_groups[0]["fused"] and new.actor_opt.param_groups[0]["fused"]
    run_updates(new, data)
    assert all(torch.isfinite(p).all() for p in new.critic.parameters())


def test_channels_last_encoder_computes_the_nchw_features():
    torch.manual_seed(0)
    enc = DrQV2Encoder(9, (20, 20))
    cl = DrQV2Encoder(9, (20, 20))
    cl.load_state_dict(enc.state_dict())
    cl.to(memory_format=torch.channels_last)
    x = torch.randint(0, 256, (4, 9, 20, 20)).float()
    assert torch.allclose(enc(x), cl(x.contiguous(memory_format=torch.channels_last)), atol=1e-5)


REFERENCE_MODULE = '''
import json
from pathlib import Path

import numpy as np
import utils   # the reference imports its own utils.py from its folder

class DrQV2Agent:
    def __init__(self, obs_shape, action_shape, device, lr, feature_dim, hidden_dim, critic_target_tau,
                 num_expl_steps, update_every_steps, stddev_schedule, stddev_clip, use_tb):
        self.obs_shape, self.action_shape, self.hidden_dim = obs_shape, action_shape, hidden_dim

    def update(self, replay_iter, step):
        obs, action, reward, discount, next_obs = next(replay_iter)
        shapes = [list(a.shape) for a in (obs, action, reward, discount, next_obs)] + [str(obs.dtype)]
        Path(__file__).with_name("seen.json").write_text(json.dumps(shapes))
        return {"batch_reward": float(np.mean(reward))}
'''


def test_learner_benchmark_drives_a_reference_checkout_as_its_replay_loader_would(tmp_path, capsys):
    """The reference row feeds DrQV2Agent.update an iterator of (obs, action, reward, discount,
    next_obs) with reward and discount as (B, 1), the shapes facebookresearch/drqv2's loader yields.
    The agent here records what it is given: the real one is not part of this repository."""
    import json
    import sys

    from benchmarks.__main__ import main

    (tmp_path / "drqv2.py").write_text(REFERENCE_MODULE)
    (tmp_path / "utils.py").write_text("")
    try:
        assert main(["learner", "--reference", str(tmp_path), "--rows", "reference", "--hidden-dim", "32",
                     "--seconds", "0", "--min-updates", "1", "--rounds", "1"]) == 0
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("utils", None)
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen == [[256, 9, 84, 84], [256, 6], [256, 1], [256, 1], [256, 9, 84, 84], "uint8"]
    out = capsys.readouterr().out
    assert "reference" in out and "1.00x" in out


def test_learner_benchmark_refuses_a_folder_without_the_reference(tmp_path):
    from benchmarks.__main__ import main

    with pytest.raises(SystemExit, match="no drqv2.py"):
        main(["learner", "--reference", str(tmp_path), "--rows", "reference", "--seconds", "0"])
