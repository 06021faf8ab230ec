"""Gymnasium wrappers that every backend shares, composed in ``se_robot.envs.make_env``."""

from __future__ import annotations

from collections import deque

import gymnasium as gym
import numpy as np


class PixelFrameStack(gym.ObservationWrapper):
    """Stacks the last ``k`` camera frames channel-first: pixels (3k, H, W) uint8.

    Works on a pixels-only Box or on the ``pixels`` key of a Dict observation; the state part is
    left as is (proprioception needs no history at these control rates).
    """

    def __init__(self, env: gym.Env, k: int):
        super().__init__(env)
        if k < 1:
            raise ValueError(f"frame_stack must be >= 1, got {k}")
        self.k = k
        self._frames: deque[np.ndarray] = deque(maxlen=k)
        space = env.observation_space
        self._dict = isinstance(space, gym.spaces.Dict)
        pix = space["pixels"] if self._dict else space
        h, w, c = pix.shape
        stacked = gym.spaces.Box(0, 255, (c * k, h, w), np.uint8)
        self.observation_space = gym.spaces.Dict({**space.spaces, "pixels": stacked}) if self._dict else stacked

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        frame = self._frame(obs)
        self._frames.clear()
        for _ in range(self.k):
            self._frames.append(frame)
        return self._stacked(obs), info

    def observation(self, obs):
        self._frames.append(self._frame(obs))
        return self._stacked(obs)

    def _frame(self, obs) -> np.ndarray:
        pix = obs["pixels"] if self._dict else obs
        return np.transpose(pix, (2, 0, 1))

    def _stacked(self, obs):
        pix = np.concatenate(list(self._frames), axis=0)
        return {**obs, "pixels": pix} if self._dict else pix


class ActionRepeat(gym.Wrapper):
    """Repeats an action ``n`` times, summing rewards; stops early when the episode ends."""

    def __init__(self, env: gym.Env, n: int):
        super().__init__(env)
        if n < 1:
            raise ValueError(f"action_repeat must be >= 1, got {n}")
        self.n = n

    def step(self, action):
        total = 0.0
        for _ in range(self.n):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info
