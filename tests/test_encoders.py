"""Pixel encoders and the random-shift augmentation (small images, CPU, a few seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from se_robot.agents.augment import RandomShift, draw_shifts, shift_images, shift_images_gather
from se_robot.agents.encoders import (DrQV2Encoder, FrameWise, SmallResNet, build_encoder, load_encoder,
                                      make_pixel_encoder, save_encoder)

pytestmark = pytest.mark.timeout(120)




def _crop(padded: torch.Tensor, pad: int, dx: int, dy: int, h: int, w: int) -> torch.Tensor:
    return padded[..., pad + dy:pad + dy + h, pad + dx:pad + dx + w]


# ---------------------------------------------------------------- augmentation
def test_zero_shift_is_identity():
    x = torch.rand(4, 9, 12, 10) * 255
    out = shift_images(x, 4, torch.zeros(4, 2, dtype=torch.long))
    torch.testing.assert_close(out, x, atol=1e-3, rtol=0)


def test_shift_is_a_replicate_padded_translation():
    pad, h, w = 3, 11, 13
    x = torch.rand(5, 6, h, w) * 255
    shifts = torch.tensor([[3, -3], [-3, 3], [1, 0], [0, -2], [2, 2]])
    out = shift_images(x, pad, shifts)
    padded = F.pad(x, (pad,) * 4, mode="replicate")
    for b, (dx, dy) in enumerate(shifts.tolist()):
        torch.testing.assert_close(out[b], _crop(padded[b], pad, dx, dy, h, w), atol=1e-3, rtol=0)


def test_random_shift_bounded_by_pad_and_shared_by_stacked_frames():
    """Recover each frame's offset by matching against every allowed crop: one offset per sample."""
    pad, h, w, frames = 2, 10, 10, 3
    x = torch.rand(16, 3 * frames, h, w) * 255
    gen = torch.Generator().manual_seed(0)
    out = RandomShift(pad)(x, generator=gen)
    padded = F.pad(x, (pad,) * 4, mode="replicate")
    seen = set()
    for b in range(x.shape[0]):
        offsets = []
        for k in range(frames):
            ch = slice(3 * k, 3 * k + 3)
            match = [(dx, dy) for dx in range(-pad, pad + 1) for dy in range(-pad, pad + 1)
                     if torch.allclose(out[b, ch], _crop(padded[b, ch], pad, dx, dy, h, w), atol=1e-3)]
            assert len(match) == 1, f"sample {b} frame {k}: not a translation within pad"
            offsets.append(match[0])
        assert len(set(offsets)) == 1, f"sample {b}: frames shifted differently {offsets}"
        seen.add(offsets[0])
    assert len(seen) > 1  # it is random


def test_draw_shifts_range():
    s = draw_shifts(2000, 4, generator=torch.Generator().manual_seed(1))
    assert s.min() == -4 and s.max() == 4


def test_shift_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shifts of shape"):
        shift_images(torch.zeros(2, 3, 8, 8), 2, torch.zeros(3, 2))


# ---------------------------------------------------------------- encoders
def test_drqv2_encoder_paper_shape():
    enc = DrQV2Encoder(9, (84, 84))
    assert enc.repr_dim == 32 * 35 * 35
    assert enc(torch.zeros(2, 9, 84, 84)).shape == (2, 39200)


def test_resnet_shapes():
    enc = SmallResNet(9, (32, 32))
    assert enc(torch.zeros(2, 9, 32, 32)).shape == (2, enc.repr_dim)
    pooled = SmallResNet(3, (32, 32), channels=(16, 24), pool=True)
    assert pooled.repr_dim == 24 and pooled(torch.zeros(1, 3, 32, 32)).shape == (1, 24)


def test_too_small_image_names_the_problem():
    with pytest.raises(ValueError, match="too small"):
        DrQV2Encoder(3, (8, 8))


def test_framewise_concatenates_per_frame_features():
    base = DrQV2Encoder(3, (16, 16))
    enc = FrameWise(base, frame_stack=3)
    x = torch.rand(2, 9, 16, 16) * 255
    out = enc(x)
    per_frame = [base(x[:, 3 * k:3 * k + 3]) for k in range(3)]
    torch.testing.assert_close(out, torch.cat(per_frame, dim=1))


def test_dict_checkpoint_round_trip(tmp_path):
    enc = build_encoder("resnet", 3, (24, 24), channels=(16, 16))
    path = tmp_path / "enc.pt"
    save_encoder(enc, path, "resnet", in_channels=3, image_size=(24, 24), channels=(16, 16))
    loaded = load_encoder(path, (24, 24))
    x = torch.rand(2, 3, 24, 24) * 255
    torch.testing.assert_close(loaded(x), enc(x))
    assert loaded.frame_wise
    stacked = make_pixel_encoder("checkpoint", 2, (24, 24), checkpoint=str(path))
    assert isinstance(stacked, FrameWise) and stacked.repr_dim == 2 * enc.repr_dim


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_encoder(tmp_path / "missing.pt", (24, 24))
    bad = tmp_path / "bad.pt"
    torch.save({"weights": 1}, bad)
    with pytest.raises(ValueError, match="bad.pt.*format"):
        load_encoder(bad, (24, 24))
    enc = build_encoder("drqv2", 3, (24, 24))
    path = tmp_path / "size.pt"
    save_encoder(enc, path, "drqv2", in_channels=3, image_size=(24, 24))
    with pytest.raises(ValueError, match="size.pt.*image size"):
        load_encoder(path, (32, 32))


def test_pickled_module_is_refused_without_running(tmp_path):
    import pathlib

    class RunsCode(torch.nn.Module):
        def __reduce_ex__(self, protocol):
            return (pathlib.Path.touch, (tmp_path / "pwned",))

    path = tmp_path / "module.pt"
    torch.save(RunsCode(), path)
    with pytest.raises(ValueError, match=r"module\.pt: not only tensors .*pickled Python objects such as a whole module"):
        load_encoder(path, (16, 16))
    assert not (tmp_path / "pwned").exists()


def test_unknown_architecture():
    with pytest.raises(ValueError, match="unknown encoder architecture 'vit'"):
        build_encoder("vit", 3, (16, 16))


def test_channels_last_matches_contiguous():
    enc = DrQV2Encoder(9, (20, 20))
    x = torch.rand(3, 9, 20, 20) * 255
    ref = enc(x)
    enc_cl = enc.to(memory_format=torch.channels_last)
    out = enc_cl(x.contiguous(memory_format=torch.channels_last))
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), atol=1e-4)


def test_gather_shift_equals_grid_sample_shift():
    x = torch.randint(0, 256, (6, 9, 14, 12), dtype=torch.uint8)
    shifts = draw_shifts(6, 4, generator=torch.Generator().manual_seed(3))
    ref = shift_images(x.float(), 4, shifts)
    out = shift_images_gather(x, 4, shifts)
    assert out.dtype == torch.uint8
    torch.testing.assert_close(out.float(), ref, atol=0.01, rtol=0)
