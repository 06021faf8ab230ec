"""Gymnasium wrappers that every backend shares, composed in ``se_robot.envs.make_env``."""

from __future__ import annotations

from collections import deque

import gymnasium as gym
import numpy as np

from se_robot.agents.obs import vector_keys, vector_obs


class PixelFrameStack(gym.ObservationWrapper):
    """Stacks the last ``k`` camera frames channel-first: ``"pixels"`` (3k, H, W) uint8.

    Works on the ``pixels`` key of the env's Dict observation (H x W x 3, as ``ArmEnv`` makes it);
    the other keys are left as they are (proprioception needs no history at these control rates).
    """

    def __init__(self, env: gym.Env, k: int):
        super().__init__(env)
        if k < 1:
            raise ValueError(f"frame_stack must be >= 1, got {k}")
        self.k = k
        self._frames: deque[np.ndarray] = deque(maxlen=k)
        space = env.observation_space
        h, w, c = space["pixels"].shape
        stacked = gym.spaces.Box(0, 255, (c * k, h, w), np.uint8)
        self.observation_space = gym.spaces.Dict({**space.spaces, "pixels": stacked})

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

    @staticmethod
    def _frame(obs: dict[str, np.ndarray]) -> np.ndarray:
        return np.transpose(obs["pixels"], (2, 0, 1))

    def _stacked(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {**obs, "pixels": np.concatenate(list(self._frames), axis=0)}


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


class FlattenObs(gym.ObservationWrapper):
    """A Box of the present vector keys concatenated in ``VECTOR_KEYS`` order (features, state,
    task), for libraries that want one array (SB3). Pixels are not flattened: a Dict with pixels
    and nothing to encode them is refused, since a flat vector of raw pixels is never what's meant.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        spaces = env.observation_space.spaces
        if "pixels" in spaces:
            raise ValueError("FlattenObs takes vector observations only; encode the pixels first "
                             "(make_env(encoder=...)) or use a learner that reads the dict")
        self.keys = vector_keys(env.observation_space)
        dim = sum(int(np.prod(spaces[k].shape)) for k in self.keys)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)

    def observation(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return vector_obs(obs, self.keys)
