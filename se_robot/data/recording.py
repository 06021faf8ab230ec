"""Running an env under a scripted policy and writing the episodes (``se-robot demos``).

The scripted expert records demonstrations in the twin; ``random`` and ``noisy`` policies record
failures too, which the learned-reward classifier needs as negatives. Teleoperated recording with
operator buttons lives in ``se_robot.teleop.session``; both write the same episode format.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from se_robot.data.episodes import DatasetMeta
from se_robot.data.writer import EpisodeWriter


def env_control_hz(env: gym.Env) -> float:
    """The control rate of an env made by ``make_env`` (an ``ArmEnv`` under its wrappers)."""
    return float(env.unwrapped.cfg.control_hz)


def dataset_meta_for(env: gym.Env, task: str, camera: str = "scene", **extra: Any) -> DatasetMeta:
    return DatasetMeta(task=task, arm=env.unwrapped.arm.name, control_hz=env_control_hz(env), camera=camera,
                       extra={k: v for k, v in extra.items() if v is not None})


class RandomPolicy:
    """Uniform random actions: episodes that (almost always) fail, as reward-model negatives."""

    def __init__(self, action_space: Any, seed: int = 0):
        self.space = action_space
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        pass

    def __call__(self, obs: Any) -> np.ndarray:
        return self.rng.uniform(self.space.low, self.space.high).astype(np.float32)


class NoisyPolicy:
    """An expert with Gaussian action noise: near misses and some successes."""

    def __init__(self, expert: Any, action_space: Any, noise_std: float, seed: int = 0):
        self.expert, self.space, self.noise_std = expert, action_space, noise_std
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        self.expert.reset()

    def __call__(self, obs: Any) -> np.ndarray:
        a = np.asarray(self.expert(obs), dtype=np.float32)
        a = a + self.rng.normal(0.0, self.noise_std, size=a.shape).astype(np.float32)
        return np.clip(a, self.space.low, self.space.high)


def run_episode(env: Any, policy: Callable[[Any], Any], writer: EpisodeWriter, seed: int | None,
                max_steps: int | None = None, metadata: dict | None = None) -> tuple[bool, int]:
    """One episode from reset to termination/truncation, recorded with sim-time timestamps.

    Success is ``info["is_success"]`` at the last step (the task's own judgement). The episode is
    left open in ``writer`` so the caller decides to keep (``end_episode``) or drop it.
    """
    dt_s = 1.0 / env_control_hz(env)
    obs, info = env.reset(seed=seed)
    if hasattr(policy, "reset"):
        policy.reset()
    writer.start_episode(obs, timestamp=0.0, metadata=metadata)
    success, t = bool(info.get("is_success", False)), 0
    limit = max_steps if max_steps is not None else math.inf
    while t < limit:
        action = np.asarray(policy(obs), dtype=np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        t += 1
        writer.add_step(action, obs, float(reward), bool(terminated), bool(truncated),
                        intervention=bool(info.get("intervention", False)), timestamp=t * dt_s)
        success = bool(info.get("is_success", False))
        if terminated or truncated:
            break
    return success, t


def record_scripted(env: Any, policy: Callable[[Any], Any], out: str | Path, meta: DatasetMeta, episodes: int,
                    seed: int = 0, keep_failures: bool = False, max_attempts: int | None = None,
                    source: str = "scripted_expert", max_steps: int | None = None,
                    log: Callable[[str], None] = print) -> list[Path]:
    """Record ``episodes`` episodes; unless ``keep_failures``, failed attempts are dropped and retried."""
    writer = EpisodeWriter(out, meta)
    attempts_left = max_attempts if max_attempts is not None else max(3 * episodes, episodes + 10)
    written: list[Path] = []
    attempt = 0
    while len(written) < episodes and attempt < attempts_left:
        episode_seed = seed + attempt
        success, steps = run_episode(env, policy, writer, episode_seed, max_steps,
                                     metadata={"source": source, "seed": episode_seed})
        attempt += 1
        if success or keep_failures:
            path = writer.end_episode(success)
            written.append(path)
            log(f"{path.name}: {steps} steps, {'success' if success else 'failure'} (seed {episode_seed})")
        else:
            writer.discard()
            log(f"seed {episode_seed}: failed after {steps} steps, dropped")
    if len(written) < episodes:
        log(f"warning: only {len(written)} of {episodes} episodes after {attempt} attempts")
    return written
