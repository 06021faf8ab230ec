"""A frozen pixel encoder as an observation wrapper: what SAC and MBPO learn from on pixels.

SAC and MBPO learn on vectors (MBPO's model predicts the next observation, which must be small
and smooth), so on pixels they see a frozen pretrained encoder's features (``se-robot
pretrain-encoder``). The encoder runs once per env step here, not once per gradient step, and
replay holds a few dozen floats per transition instead of images. The proprioceptive ``state``
of obs_mode ``both`` stays its own key; learners put it after the features, as DrQ-v2 appends it
to its conv features.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

PIXELS = "pixels"


def _pixel_space(space: gym.Space) -> gym.spaces.Box:
    """The frame-stack space (3k, H, W) uint8 of a Dict observation space (PixelFrameStack's output)."""
    pixels = space.spaces.get(PIXELS) if isinstance(space, gym.spaces.Dict) else None
    if not isinstance(pixels, gym.spaces.Box) or len(pixels.shape) != 3 or pixels.dtype != np.uint8 \
            or pixels.shape[0] % 3:
        raise ValueError(f"a frozen encoder needs camera frame stacks (3k, H, W) in obs['pixels'] (obs_mode pixels "
                         f"or both, after PixelFrameStack), got observation space {space}")
    return pixels


class EncoderFeatures(gym.ObservationWrapper):
    """Replaces the channel-first frame stack ``pixels`` (3k, H, W) with ``features`` (F,).

    The other keys (``state`` in obs_mode both) pass through; vector learners concatenate them
    after the features (``se_robot.agents.obs.vector_obs``). ``encoder`` takes float pixels in
    [0, 255] of shape (N, 3k, H, W) and gives ``repr_dim`` features, as every encoder of
    ``se_robot.agents.encoders`` does.
    """

    def __init__(self, env: gym.Env, encoder: nn.Module, device: str | torch.device = "cpu"):
        super().__init__(env)
        space = env.observation_space
        self._stack = _pixel_space(space).shape[0] // 3  # RGB frames per observation
        self.device = torch.device(device)
        self.encoder = encoder.to(self.device).eval().requires_grad_(False)
        features = gym.spaces.Box(-np.inf, np.inf, (int(encoder.repr_dim),), np.float32)
        self.observation_space = gym.spaces.Dict(
            {"features": features, **{k: v for k, v in space.spaces.items() if k != PIXELS}})

    def observation(self, obs: dict[str, Any]) -> dict[str, np.ndarray]:
        out = {k: v for k, v in obs.items() if k != PIXELS}
        out["features"] = self._features(np.asarray(obs[PIXELS])[None])[0]
        return out

    @torch.no_grad()
    def _features(self, stacks: np.ndarray) -> np.ndarray:
        """(N, F) for N channel-first frame stacks (N, 3k, H, W)."""
        x = torch.as_tensor(np.ascontiguousarray(stacks), device=self.device).float()
        return self.encoder(x).reshape(len(stacks), -1).float().cpu().numpy()

    @property
    def source_keys(self) -> tuple[str, ...]:
        """The recorded observation arrays the wrapped observation is made from."""
        return tuple(k if k != "features" else PIXELS for k in self.observation_space.spaces)

    def encode_episode(self, obs: dict[str, np.ndarray], chunk: int = 256) -> dict[str, np.ndarray]:
        """A recorded episode's observations (one row per agent step) as this wrapper gives them live.

        Datasets hold the camera's raw frames (T+1, H, W, 3). The frame stack is rebuilt as
        ``PixelFrameStack`` builds it, the first frame repeated at the start, so demonstrations and
        live steps land in one feature space; the encoder runs on ``chunk`` stacks at a time.
        """
        frames = np.asarray(obs[PIXELS])
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"demo pixels must be uint8 RGB frames (T+1, H, W, 3), got {frames.dtype} {frames.shape}")
        frames = frames.transpose(0, 3, 1, 2)
        n, k = len(frames), self._stack
        rows = np.maximum(np.arange(n)[:, None] - np.arange(k - 1, -1, -1)[None, :], 0)  # oldest frame first
        parts = [self._features(frames[rows[lo:lo + chunk]].reshape(-1, 3 * k, *frames.shape[2:]))
                 for lo in range(0, n, chunk)]
        out = {k: np.asarray(v) for k, v in obs.items() if k != PIXELS}
        out["features"] = np.concatenate(parts)
        return out


def wrap_with_encoder(env: gym.Env, checkpoint: str | Path, device: str | torch.device = "cpu") -> EncoderFeatures:
    """``env`` (after PixelFrameStack) seen through the encoder saved at ``checkpoint``."""
    from se_robot.agents.encoders import make_pixel_encoder

    c, h, w = _pixel_space(env.observation_space).shape
    encoder = make_pixel_encoder("checkpoint", c // 3, (h, w), checkpoint=str(checkpoint))
    return EncoderFeatures(env, encoder, device)
