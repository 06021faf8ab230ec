"""The learned success classifier as the env's reward and success (``se-robot reward train``'s output).

On the real arm this replaces the task's hand-written reward, which needs object poses that only
the twin knows. The wrapper reads the camera frame from the observation, asks the classifier for
the probability of success, and reports ``is_success = p >= threshold`` (optionally only after
``consecutive`` positive frames in a row, to ride out single-frame glitches). The env's own
reward and success stay in ``info["env_reward"]`` / ``info["env_is_success"]``, which is how the
twin measures the classifier's false positives and false negatives.

Place it on the raw env (frames HxWx3) or after frame stacking (the newest 3 channels are used).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np


def newest_frame(obs: Any, key: str = "pixels") -> np.ndarray:
    """HxWx3 uint8 from an observation: dict or array, single frame or channel-first stack."""
    px = obs[key] if isinstance(obs, dict) else obs
    px = np.asarray(px)
    if px.ndim != 3:
        raise ValueError(f"expected an image observation, got shape {px.shape}")
    if px.shape[-1] == 3:
        return px
    if px.shape[0] % 3 == 0:  # (3k, H, W) stack from PixelFrameStack: newest frame last
        return np.transpose(px[-3:], (1, 2, 0))
    raise ValueError(f"cannot find an RGB frame in pixels of shape {px.shape}")


class LearnedRewardWrapper(gym.Wrapper):
    """Reward = ``success_reward`` when the classifier says success, else ``failure_reward``."""

    def __init__(self, env: gym.Env, model: Any, threshold: float | None = None, *, pixels_key: str = "pixels",
                 consecutive: int = 1, terminate_on_success: bool = True, success_reward: float = 1.0,
                 failure_reward: float = 0.0):
        super().__init__(env)
        if isinstance(model, (str, Path)):
            from se_robot.data.reward_model import load_reward_model

            model = load_reward_model(model)
        self.model = model
        self.threshold = float(threshold if threshold is not None else model.threshold)
        self.pixels_key = pixels_key
        self.consecutive = max(1, int(consecutive))
        self.terminate_on_success = terminate_on_success
        self.success_reward, self.failure_reward = success_reward, failure_reward
        self._streak = 0

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self._streak = 0
        info = dict(info)
        info["env_is_success"] = bool(info.get("is_success", False))
        info["is_success"] = False
        return obs, info

    def step(self, action: Any):
        obs, env_reward, terminated, truncated, info = self.env.step(action)
        p = float(self.model.probability(newest_frame(obs, self.pixels_key)))
        self._streak = self._streak + 1 if p >= self.threshold else 0
        success = self._streak >= self.consecutive
        info = dict(info)
        info["env_reward"] = float(env_reward)
        info["env_is_success"] = bool(info.get("is_success", False))
        info["is_success"] = success
        info["reward/success_prob"] = p
        reward = self.success_reward if success else self.failure_reward
        terminated = bool(terminated) or (success and self.terminate_on_success)
        return obs, reward, terminated, truncated, info
