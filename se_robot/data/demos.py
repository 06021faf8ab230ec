"""Episode datasets as replay transitions: what the training loop puts in its demo buffer.

Episodes are read through ``se_robot.data.episodes`` (validated, no pickles). Their frames are
the camera's raw (H, W, 3); the replay takes channel-first frame stacks (``se_robot.agents.obs``),
so each frame goes in as a stack of one (3, H, W) and the buffer rebuilds stacks at sampling,
exactly as it does for live steps.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from se_robot.data.episodes import (DatasetError, Episode, episode_length, episode_paths, is_pixel_key,
                                    load_episode, read_dataset_meta)

EpisodeFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class TransitionSink(Protocol):
    """What ``load_demos`` writes to: ``se_robot.agents.replay.ReplayBuffer``'s two writing calls."""

    def add_first(self, obs: dict[str, np.ndarray]) -> None: ...

    def add(self, action: np.ndarray, reward: float, next_obs: dict[str, np.ndarray],
            terminated: bool, truncated: bool) -> None: ...


def dataset_slots(directory: str | Path) -> int:
    """Replay slots a dataset needs: T+1 per episode (reads only each file's actions)."""
    paths = episode_paths(directory)
    if not paths:
        raise DatasetError(directory, "<dir>", "no episode_*.npz files in the dataset")
    return sum(episode_length(p) + 1 for p in paths)


def agent_steps(ep: Episode, action_repeat: int) -> tuple[list[int], list[tuple[np.ndarray, float, bool, bool]]]:
    """Observation rows and transitions of ``ep`` as an env with ``action_repeat`` would give them.

    Datasets are recorded at the control rate; k recorded steps make one agent step (first action,
    summed reward, every k-th observation), ending early at termination or truncation.
    """
    action, reward = ep["action"], ep["reward"]
    term, trunc = ep["terminated"], ep["truncated"]
    steps = ep.length
    rows, transitions = [0], []
    for t0 in range(0, steps, action_repeat):
        t1 = min(t0 + action_repeat, steps)
        last = t1 == steps
        done_term = bool(term[t0:t1].any())
        if done_term:
            t1 = t0 + int(np.argmax(term[t0:t1])) + 1
        rows.append(t1)
        transitions.append((action[t0], float(reward[t0:t1].sum()), done_term,
                            not done_term and (bool(trunc[t0:t1].any()) or last)))
        if done_term or trunc[t0:t1].any():
            break
    return rows, transitions


def relabel_sparse(transitions: list[tuple[np.ndarray, float, bool, bool]],
                   success: np.ndarray) -> list[tuple[np.ndarray, float, bool, bool]]:
    """Transitions as an env whose reward is a success judge gives them: ``success[i + 1]`` judges
    the observation after transition ``i``; reward 1 and the episode ends there, else reward 0
    (the env's own termination kept). What ``LearnedRewardWrapper`` does live, so demos and online
    steps share one reward scale."""
    out = []
    for i, (action, _, terminated, truncated) in enumerate(transitions):
        hit = bool(success[i + 1])
        out.append((action, 1.0 if hit else 0.0, terminated or hit, truncated and not hit))
        if hit or terminated:
            break
    return out


def _resized(frames: np.ndarray, image_size: int | None) -> np.ndarray:
    """(N, H, W, 3) recorded frames at ``image_size`` x ``image_size`` (unchanged if already)."""
    if not image_size or frames.shape[1:3] == (image_size, image_size):
        return frames
    import cv2

    return np.stack([cv2.resize(f, (image_size, image_size), interpolation=cv2.INTER_AREA) for f in frames])


def load_demos(dataset_dir: str | Path, buffer: TransitionSink, obs_keys: tuple[str, ...],
               image_size: int | None = None, action_repeat: int = 1, episode_fn: EpisodeFn | None = None,
               success_fn: Callable[[np.ndarray], np.ndarray] | None = None) -> int:
    """Fill ``buffer`` from an episode dataset; returns the number of episodes read.

    ``obs_keys`` are the episode arrays to read (the env's observation keys, or what
    ``episode_fn`` needs); ``image_size`` resizes frames recorded at another resolution;
    ``episode_fn`` maps an episode's observations (one row per agent step; pixels as the raw
    (N, H, W, 3) frames) to what is stored, e.g. a frozen encoder's features
    (``EncoderFeatures.encode_episode``). Without it, pixels go in as (3, H, W) frames.
    ``success_fn``: a learned success judge over the raw ``pixels`` frames (N, H, W, 3) of the
    agent-step rows; given, the rewards are relabelled sparse (``relabel_sparse``), as training with
    that classifier as the reward sees them, instead of the reward recorded with the episode.
    """
    if action_repeat < 1:
        raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
    read_dataset_meta(dataset_dir)
    paths = episode_paths(dataset_dir)
    if not paths:
        raise DatasetError(dataset_dir, "<dir>", "no episode_*.npz files in the dataset")
    for path in paths:
        ep = load_episode(path)
        missing = [k for k in obs_keys if k not in ep]
        if missing:
            raise DatasetError(path, missing[0], f"missing; the agent observes {list(obs_keys)} "
                                                 f"and the episode holds {ep.obs_keys}")
        rows, transitions = agent_steps(ep, action_repeat)
        if success_fn is not None:
            if "pixels" not in ep:
                raise DatasetError(path, "pixels", "missing; a learned reward judges camera frames")
            transitions = relabel_sparse(transitions, np.asarray(success_fn(ep["pixels"][rows]), dtype=bool))
            rows = rows[:len(transitions) + 1]
        obs: dict[str, Any] = {k: _resized(ep[k][rows], image_size) if is_pixel_key(k) else ep[k][rows]
                               for k in obs_keys}
        if episode_fn is not None:
            obs = episode_fn(obs)
        else:   # (N, H, W, 3) -> (N, 3, H, W): each frame a channel-first stack of one
            obs = {k: np.ascontiguousarray(v.transpose(0, 3, 1, 2)) if is_pixel_key(k) else v for k, v in obs.items()}
        buffer.add_first({k: v[0] for k, v in obs.items()})
        for i, (a, r, terminated, truncated) in enumerate(transitions, 1):
            buffer.add(a, r, {k: v[i] for k, v in obs.items()}, terminated, truncated)
    return len(paths)
