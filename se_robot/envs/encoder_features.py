"""A frozen pixel encoder as an observation wrapper: what SAC and MBPO learn from on pixels.

SAC and MBPO learn on vectors (MBPO's model predicts the next observation, which must be small
and smooth), so on pixels they see a frozen pretrained encoder's features (``se-robot
pretrain-encoder``). The encoder runs once per env step here, not once per gradient step, and
replay holds a few dozen floats per transition instead of images. The proprioceptive ``state``
of obs_mode ``both`` is appended to the features, as DrQ-v2 appends it to its conv features.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from se_robot.agents.replay import is_channel_first


def _pixel_space(space: gym.Space) -> gym.spaces.Box:
    pixels = space["pixels"] if isinstance(space, gym.spaces.Dict) and "pixels" in space.spaces else space
    if not isinstance(pixels, gym.spaces.Box) or len(pixels.shape) != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"a frozen encoder needs camera images in the observation (obs_mode pixels or both), "
                         f"got observation space {space}")
    return pixels


def _chw(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(channels, height, width) of a channel-first or channel-last image shape."""
    return tuple(shape) if is_channel_first(shape) else (shape[2], shape[0], shape[1])


class EncoderFeatures(gym.ObservationWrapper):
    """Replaces the camera image (a frame stack, channel-first or -last) with ``features``.

    Output: ``{"features": float32 (F [+ state],)}``. ``encoder`` takes float pixels in [0, 255]
    of shape (1, C, H, W) with C the stack's channels and gives ``repr_dim`` features, as every
    encoder of ``se_robot.agents.encoders`` does.
    """

    def __init__(self, env: gym.Env, encoder: nn.Module, device: str | torch.device = "cpu"):
        super().__init__(env)
        space = env.observation_space
        pixels = _pixel_space(space)
        self._has_state = isinstance(space, gym.spaces.Dict) and "state" in space.spaces
        self._channel_first = is_channel_first(pixels.shape)
        self._stack = _chw(pixels.shape)[0] // 3  # RGB frames per observation
        self.device = torch.device(device)
        self.encoder = encoder.to(self.device).eval().requires_grad_(False)
        dim = int(encoder.repr_dim)
        if self._has_state:
            dim += int(np.prod(space["state"].shape))
        self.observation_space = gym.spaces.Dict(
            {"features": gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)})

    def observation(self, obs: Any) -> dict[str, np.ndarray]:
        pixels = np.asarray(obs["pixels"] if isinstance(obs, dict) else obs)
        if not self._channel_first:
            pixels = pixels.transpose(2, 0, 1)
        state = np.asarray(obs["state"])[None] if self._has_state else None
        return {"features": self._features(pixels[None], state)[0]}

    @torch.no_grad()
    def _features(self, stacks: np.ndarray, state: np.ndarray | None) -> np.ndarray:
        """(N, F [+ state]) for N channel-first frame stacks and, with obs_mode both, their N states."""
        x = torch.as_tensor(np.ascontiguousarray(stacks), device=self.device).float()
        features = self.encoder(x).reshape(len(stacks), -1).float().cpu().numpy()
        if state is not None:
            features = np.concatenate([features, np.asarray(state, np.float32).reshape(len(stacks), -1)], axis=1)
        return features

    @property
    def source_keys(self) -> tuple[str, ...]:
        """The recorded observation arrays the features are made from."""
        return ("pixels", "state") if self._has_state else ("pixels",)

    def encode_episode(self, obs: dict[str, np.ndarray], chunk: int = 256) -> dict[str, np.ndarray]:
        """A recorded episode's observations (one row per agent step) as this wrapper gives them live.

        Datasets hold single RGB frames, (T+1, H, W, 3) or (T+1, 3, H, W). The frame stack is rebuilt
        as ``PixelFrameStack`` builds it, the first frame repeated at the start, so demonstrations and
        live steps land in one feature space; the encoder runs on ``chunk`` stacks at a time.
        """
        frames = np.asarray(obs["pixels"])
        if frames.ndim == 4 and not is_channel_first(frames.shape[1:]):
            frames = frames.transpose(0, 3, 1, 2)
        if frames.ndim != 4 or frames.shape[1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"demo pixels must be uint8 RGB frames (T+1, H, W, 3), got {frames.dtype} "
                             f"{np.asarray(obs['pixels']).shape}")
        n, k = len(frames), self._stack
        rows = np.maximum(np.arange(n)[:, None] - np.arange(k - 1, -1, -1)[None, :], 0)  # oldest frame first
        state = np.asarray(obs["state"]) if self._has_state else None
        parts = [self._features(frames[rows[lo:lo + chunk]].reshape(-1, 3 * k, *frames.shape[2:]),
                                None if state is None else state[lo:lo + chunk]) for lo in range(0, n, chunk)]
        return {"features": np.concatenate(parts)}


def wrap_with_encoder(env: gym.Env, checkpoint: str | Path, device: str | torch.device = "cpu",
                      trust_pickle: bool = False) -> EncoderFeatures:
    """``env`` seen through the encoder saved at ``checkpoint``, frame by frame over its stack."""
    from se_robot.agents.encoders import make_pixel_encoder

    c, h, w = _chw(_pixel_space(env.observation_space).shape)
    if c % 3:
        raise ValueError(f"camera images with {c} channels are not a stack of RGB frames")
    encoder = make_pixel_encoder("checkpoint", c // 3, (h, w), checkpoint=str(checkpoint), trust_pickle=trust_pickle)
    return EncoderFeatures(env, encoder, device)
