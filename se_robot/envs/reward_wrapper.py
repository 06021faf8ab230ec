"""The learned success classifier as the env's reward and success (``se-robot reward train``'s output).

On the real arm this replaces the task's hand-written reward, which needs object poses that only
the twin knows. The wrapper reads the camera frame from the observation, asks the classifier for
the probability of success, and reports ``is_success = p >= threshold`` (optionally only after
``consecutive`` positive frames in a row, to ride out single-frame glitches). The env's own
reward and success stay in ``info["env_reward"]`` / ``info["env_is_success"]``, which is how the
twin measures the classifier's false positives and false negatives. A start it already calls a
success is rejected, as ``ArmEnv`` rejects one the task calls a success: reset runs again.

Where it sits is declared, never guessed from a shape: ``layout="stack"`` (default) after
``PixelFrameStack``, where ``obs["pixels"]`` is a channel-first frame stack (3k, H, W) and the
classifier sees its newest frame; ``layout="raw"`` right over the env, whose H x W x 3 frames the
classifier sees as they come. ``make_env(reward_model=...)`` uses ``raw``, inside action repeat, so
an episode ends on the control tick the classifier first says success (SERL's sparse reward).
"""

from __future__ import annotations

from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from se_robot.envs.operator import SceneResetError


def _newest_rgb(stack: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8: the newest frame of a channel-first frame stack (3k, H, W), newest last."""
    return np.transpose(stack[-3:], (1, 2, 0))


class SuccessClassifier(Protocol):
    """What the wrapper needs of ``se_robot.data.reward_model.RewardModel`` (load it with
    ``load_reward_model``): a default threshold and P(success) for one H x W x 3 frame."""

    threshold: float

    def probability(self, frame: np.ndarray) -> float: ...


class LearnedRewardWrapper(gym.Wrapper):
    """Reward = ``success_reward`` when the classifier says success, else ``failure_reward``."""

    def __init__(self, env: gym.Env, model: SuccessClassifier, threshold: float | None = None, *, pixels_key: str = "pixels",
                 consecutive: int = 1, terminate_on_success: bool = True, success_reward: float = 1.0,
                 failure_reward: float = 0.0, layout: str = "stack", start_tries: int = 3):
        super().__init__(env)
        if layout not in ("stack", "raw"):
            raise ValueError(f"layout must be stack or raw, got {layout!r}")
        pixels = getattr(env.observation_space, "spaces", {}).get(pixels_key)
        if layout == "stack" and (pixels is None or len(pixels.shape) != 3 or pixels.shape[0] % 3):
            raise ValueError(f"LearnedRewardWrapper needs a channel-first frame stack (3k, H, W) in "
                             f"obs[{pixels_key!r}] (wrap after PixelFrameStack), got {env.observation_space}")
        if layout == "raw" and (pixels is None or len(pixels.shape) != 3 or pixels.shape[2] != 3):
            raise ValueError(f"LearnedRewardWrapper(layout='raw') needs H x W x 3 frames in obs[{pixels_key!r}] "
                             f"(obs_mode pixels or both, no frame stack), got {env.observation_space}")
        self.layout = layout
        self.model = model
        self.threshold = float(threshold if threshold is not None else model.threshold)
        self.pixels_key = pixels_key
        self.consecutive = max(1, int(consecutive))
        self.terminate_on_success = terminate_on_success
        self.success_reward, self.failure_reward = success_reward, failure_reward
        self.start_tries = max(1, int(start_tries))
        self._streak = 0

    def reset(self, **kwargs: Any):
        """A start the classifier already calls a success is a fake episode: reset again (the
        env asks for the scene anew), at most ``start_tries`` times, then ``SceneResetError``."""
        for _ in range(self.start_tries):
            obs, info = self.env.reset(**kwargs)
            p = self._probability(obs)
            if p < self.threshold:
                break
            kwargs.pop("seed", None)  # the same seed would restore the same scene on the twin
        else:
            raise SceneResetError(f"reset: the success classifier judged the start successful (p={p:.2f} >= "
                                  f"{self.threshold:.2f}) {self.start_tries} times in a row; such an episode "
                                  "is never used. Check the scene, or the classifier and its threshold")
        self._streak = 0
        info = dict(info)
        info["env_is_success"] = bool(info.get("is_success", False))
        info["is_success"] = False
        info["reward/success_prob"] = p
        return obs, info

    def _probability(self, obs: dict[str, Any]) -> float:
        frame = np.asarray(obs[self.pixels_key])
        return float(self.model.probability(_newest_rgb(frame) if self.layout == "stack" else frame))

    def step(self, action: Any):
        obs, env_reward, terminated, truncated, info = self.env.step(action)
        p = self._probability(obs)
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
