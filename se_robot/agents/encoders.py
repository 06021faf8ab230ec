"""Pixel encoders: DrQ-v2's conv net, a small ResNet, a keypoint net, and checkpoint files.

Every encoder is an ``nn.Module`` taking float pixels in [0, 255] of shape (B, C, H, W) and
returning (B, repr_dim). Two kinds of input:

- *stacked* encoders see the whole frame stack as channels (C = 3 * frame_stack), as DrQ-v2 does,
  so motion between frames is available from the first layer;
- *frame-wise* encoders (``frame_wise = True``) see one RGB frame (C = 3); :class:`FrameWise` runs
  them on every frame of a stack and concatenates the features. Only frame-wise encoders can be
  frozen with features cached in replay, because replay stores each frame once and the cache
  must hold one feature vector per stored frame.

Checkpoint files (:func:`load_encoder`), written with ``torch.save``, are a dict
``{"format": "se_robot.encoder/1", "architecture": "drqv2" | "resnet" | "keypoints",
"kwargs": {...constructor arguments...}, "state_dict": {...}}`` (see :func:`save_encoder`), loaded
with ``weights_only=True``: encoder files are shared between people, and a whole pickled
``nn.Module`` would run code from the file on loading, so one is refused.

A checkpoint encoder is treated as frame-wise unless its ``kwargs["in_channels"]`` says otherwise.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from se_robot.agents.nets import weight_init

CHECKPOINT_FORMAT = "se_robot.encoder/1"


def conv_out_size(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class DrQV2Encoder(nn.Module):
    """Four 3x3 convs of 32 channels, the first with stride 2, ReLU after each (the paper's net).

    84x84 input gives 32 x 35 x 35 = 39200 features. Pixels are mapped to [-0.5, 0.5] first (inside
    the first conv's weights, see ``forward``).
    """

    frame_wise = False

    def __init__(self, in_channels: int, image_size: tuple[int, int], channels: int = 32):
        super().__init__()
        self.in_channels = in_channels
        self.convnet = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, stride=2), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, stride=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, stride=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, stride=1), nn.ReLU(inplace=True))
        h, w = image_size
        h, w = conv_out_size(h, 3, 2), conv_out_size(w, 3, 2)
        for _ in range(3):
            h, w = h - 2, w - 2
        if h < 1 or w < 1:
            raise ValueError(f"DrQV2Encoder: image size {image_size} is too small (needs at least 15x15)")
        self.repr_dim = channels * h * w
        self.apply(weight_init)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # conv(x / 255 - 0.5; W, b) = conv(x; W / 255, b - 0.5 * sum(W)): the first conv has no
        # padding, so scaling its 32 small kernels replaces two passes over the whole pixel batch
        # (equal up to float rounding; gradients reach W and b through the same expressions).
        first = self.convnet[0]
        weight = first.weight / 255.0
        bias = first.bias - 0.5 * first.weight.sum(dim=(1, 2, 3))
        x = F.conv2d(pixels, weight, bias, stride=first.stride)
        return self.convnet[1:](x).flatten(1)


class _BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(8, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(8, out_ch)
        self.skip = (nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.GroupNorm(8, out_ch))
                     if stride != 1 or in_ch != out_ch else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return torch.relu(y + self.skip(x))


class SmallResNet(nn.Module):
    """A stride-2 stem and one basic residual block per stage, GroupNorm (batch-size independent).

    ``channels=(32, 64)`` on 84x84 gives 64 x 11 x 11 features; by default the spatial map is kept
    because where things are is what a manipulation policy needs. ``pool=True`` averages it away
    (channels[-1] features), the shape of a pretrained classifier's output.
    """

    def __init__(self, in_channels: int, image_size: tuple[int, int], channels: tuple[int, ...] = (32, 64),
                 frame_wise: bool = False, pool: bool = False):
        super().__init__()
        self.in_channels = in_channels
        self.frame_wise = frame_wise
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels[0], 3, stride=2, padding=1, bias=False),
                                  nn.GroupNorm(8, channels[0]), nn.ReLU(inplace=True))
        blocks = []
        prev = channels[0]
        for ch in channels:
            blocks.append(_BasicBlock(prev, ch, stride=2))
            prev = ch
        self.blocks = nn.Sequential(*blocks)
        h, w = image_size
        for _ in range(1 + len(channels)):
            h, w = conv_out_size(h, 3, 2, 1), conv_out_size(w, 3, 2, 1)
        self.pool = pool
        self.repr_dim = prev if pool else prev * h * w
        self.apply(weight_init)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels / 255.0 - 0.5
        y = self.blocks(self.stem(x))
        return y.mean(dim=(2, 3)) if self.pool else y.flatten(1)


class KeypointEncoder(nn.Module):
    """Convs, then a spatial soft-argmax per output channel: the image (x, y) of K learned keypoints.

    Deep spatial autoencoders (Levine, Finn et al. 2016): a manipulation policy needs *where* the
    gripper, target and cube are, and 2K coordinates say that in a few dozen numbers, so a frozen
    copy caches cheaply in replay and the actor and critic stay small MLPs. Pretrain it with
    ``se-robot pretrain-encoder`` (regressing the sim twin's object positions from its camera).
    """

    def __init__(self, in_channels: int, image_size: tuple[int, int], channels: int = 32, keypoints: int = 32):
        super().__init__()
        self.in_channels = in_channels
        self.frame_wise = in_channels == 3
        self.convnet = nn.Sequential(
            nn.Conv2d(in_channels, channels, 5, stride=2, padding=2), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, keypoints, 1))
        h, w = (conv_out_size(n, 5, 2, 2) for n in image_size)
        self.register_buffer("grid_x", torch.linspace(-1.0, 1.0, w).repeat(h), persistent=False)
        self.register_buffer("grid_y", torch.linspace(-1.0, 1.0, h).repeat_interleave(w), persistent=False)
        self.log_temperature = nn.Parameter(torch.zeros(()))
        self.repr_dim = 2 * keypoints
        self.apply(weight_init)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels / 255.0 - 0.5
        maps = self.convnet(x).flatten(2)                          # (B, K, h*w)
        attention = torch.softmax(maps / self.log_temperature.exp(), dim=-1)
        return torch.cat([attention @ self.grid_x, attention @ self.grid_y], dim=-1)


class FrameWise(nn.Module):
    """Runs a 3-channel encoder on each frame of a (B, 3k, H, W) stack; output (B, k * F)."""

    frame_wise = True

    def __init__(self, encoder: nn.Module, frame_stack: int):
        super().__init__()
        self.encoder = encoder
        self.frame_stack = frame_stack
        self.frame_dim = encoder.repr_dim
        self.repr_dim = encoder.repr_dim * frame_stack

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) pixels in [0, 255] -> (N, F): what the replay's feature cache stores."""
        return self.encoder(frames)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        b, c, h, w = pixels.shape
        k = c // 3
        feats = self.encoder(pixels.reshape(b * k, 3, h, w))
        return feats.reshape(b, k * feats.shape[-1])


ARCHITECTURES = {"drqv2": DrQV2Encoder, "resnet": SmallResNet, "keypoints": KeypointEncoder}


def build_encoder(architecture: str, in_channels: int, image_size: tuple[int, int], **kwargs: Any) -> nn.Module:
    """A freshly initialised encoder by name (``drqv2``, ``resnet`` or ``keypoints``)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown encoder architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[architecture](in_channels=in_channels, image_size=tuple(image_size), **kwargs)


def save_encoder(encoder: nn.Module, path: str | Path, architecture: str, **kwargs: Any) -> None:
    """Write ``encoder`` in the dict checkpoint format; ``kwargs`` are its constructor arguments.

    Written to a temp name and renamed, so an interrupted save never leaves a truncated file
    where a training run would load it.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"format": CHECKPOINT_FORMAT, "architecture": architecture, "kwargs": kwargs,
                "state_dict": encoder.state_dict()}, str(tmp))
    os.replace(tmp, path)


def load_encoder(path: str | Path, image_size: tuple[int, int]) -> nn.Module:
    """Load an encoder checkpoint (the documented dict, tensors only); errors name the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder checkpoint {path}: file does not exist")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:   # torch's own message suggests loading it unsafely: not ours to repeat
        raise ValueError(f"encoder checkpoint {path}: not only tensors and plain containers (corrupt, or "
                         "pickled Python objects such as a whole module, refused since loading them would run "
                         "code; write an encoder's weights with save_encoder)") from None
    except Exception as e:  # torch raises several unrelated types for a truncated or corrupt file
        raise ValueError(f"encoder checkpoint {path}: cannot be read: {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"encoder checkpoint {path}: expected a dict with "
                         f"format={CHECKPOINT_FORMAT!r}, got {type(obj).__name__}")
    for key in ("architecture", "kwargs", "state_dict"):
        if key not in obj:
            raise ValueError(f"encoder checkpoint {path}: missing key {key!r}")
    kwargs = dict(obj["kwargs"])
    kwargs.setdefault("in_channels", 3)
    kwargs["image_size"] = tuple(kwargs.get("image_size", image_size))
    if tuple(kwargs["image_size"]) != tuple(image_size):
        raise ValueError(f"encoder checkpoint {path}: trained for image size {kwargs['image_size']}, "
                         f"observations are {tuple(image_size)}")
    try:
        encoder = build_encoder(obj["architecture"], **kwargs)
        encoder.load_state_dict(obj["state_dict"])
    except (ValueError, RuntimeError, TypeError) as e:
        raise ValueError(f"encoder checkpoint {path}: {e}") from None
    encoder.frame_wise = kwargs["in_channels"] == 3
    return encoder


def make_pixel_encoder(architecture: str, frame_stack: int, image_size: tuple[int, int],
                       checkpoint: str = "", frame_wise: bool = False) -> nn.Module:
    """The encoder an agent uses for (B, 3 * frame_stack, H, W) observations.

    ``architecture == "checkpoint"`` loads ``checkpoint``; a frame-wise encoder (checkpoint, or any
    architecture with ``frame_wise=True``, needed for a frozen cached encoder) is wrapped in
    :class:`FrameWise`.
    """
    if architecture == "checkpoint":
        if not checkpoint:
            raise ValueError("encoder 'checkpoint' needs encoder_checkpoint: a path to a torch.save file")
        base = load_encoder(checkpoint, image_size)
        if getattr(base, "frame_wise", True):
            return FrameWise(base, frame_stack)
        if base.in_channels != 3 * frame_stack:
            raise ValueError(f"encoder checkpoint {checkpoint}: takes {base.in_channels} channels, "
                             f"observations have {3 * frame_stack}")
        return base
    if frame_wise:
        return FrameWise(build_encoder(architecture, 3, image_size), frame_stack)
    return build_encoder(architecture, 3 * frame_stack, image_size)
