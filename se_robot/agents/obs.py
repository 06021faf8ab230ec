"""The observation contract agents and replay build on (numpy only, no gymnasium import).

Every env observation is a dict with fixed keys (documented in ``se_robot.envs.spaces``):

- ``"pixels"``: uint8 camera frames. Agents and replay always see the frame-stacked layout
  ``(3k, H, W)``, channel-first, oldest frame first (``PixelFrameStack``, applied by ``make_env``).
- ``"features"``: float32, a frozen pixel encoder's output (replaces ``"pixels"``).
- ``"state"``: float32 proprioception (joint positions, velocities, gripper opening, gripper xyz).
- ``"task"``: float32 task features (target / cube / goal positions), where the backend has them.

Vector learners (SAC, MBPO) learn on the concatenation of the present vector keys in the fixed
order ``VECTOR_KEYS``. The order is part of the contract: with ``state`` and ``task`` it gives
proprioception then task features, the layout MBPO's task reward function reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

PIXELS = "pixels"
VECTOR_KEYS: tuple[str, ...] = ("features", "state", "task")
FRAME_CHANNELS = 3   # RGB


def vector_keys(obs_space: Any, keys: tuple[str, ...] = VECTOR_KEYS) -> tuple[str, ...]:
    """The vector keys of a Dict observation space (``.spaces`` mapping), in ``keys`` order."""
    spaces = getattr(obs_space, "spaces", None)
    if not isinstance(spaces, Mapping):
        raise TypeError(f"observation space must be a Dict with keys among {sorted(VECTOR_KEYS + (PIXELS,))}, "
                        f"got {obs_space!r}")
    present = tuple(k for k in keys if k in spaces)
    for key in present:
        shape = tuple(spaces[key].shape)
        if len(shape) != 1:
            raise ValueError(f"observation {key!r} must be a flat vector, got shape {shape}")
    return present


def vector_dim(obs_space: Any, keys: tuple[str, ...] = VECTOR_KEYS) -> int:
    """Length of ``vector_obs`` for observations of ``obs_space`` (0 when no vector key is present)."""
    spaces = obs_space.spaces
    return sum(int(spaces[k].shape[0]) for k in vector_keys(obs_space, keys))


def vector_obs(obs: Mapping[str, Any], keys: tuple[str, ...] = VECTOR_KEYS) -> np.ndarray:
    """Float32 concatenation of the present ``keys`` along the last axis (one obs or a batch)."""
    if not isinstance(obs, Mapping):
        raise TypeError(f"observations are dicts with keys among {VECTOR_KEYS + (PIXELS,)}, got {type(obs).__name__}")
    parts = [np.asarray(obs[k], dtype=np.float32) for k in keys if k in obs]
    if not parts:
        raise KeyError(f"observation has none of the vector keys {keys} (has {sorted(obs)}); "
                       "pixels need a frozen encoder's 'features' first")
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)


def newest_frame(stack: np.ndarray) -> np.ndarray:
    """The newest RGB frame ``(3, H, W)`` of a channel-first frame stack ``(3k, H, W)``."""
    stack = np.asarray(stack)
    if stack.ndim != 3 or stack.shape[0] % FRAME_CHANNELS or stack.shape[0] == 0:
        raise ValueError(f"pixels must be a channel-first RGB frame stack (3k, H, W), got shape {stack.shape}")
    return stack[-FRAME_CHANNELS:]
