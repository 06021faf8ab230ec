"""Joint-space trajectories the arm nodes follow (``arm/joint_trajectory`` and ``~/home``); pure."""

from __future__ import annotations

import numpy as np


class Trajectory:
    """Full joint vectors at monotonic times; ``at(t)`` interpolates linearly and clamps."""

    def __init__(self, t0_s: float, start_q: np.ndarray, times_s: np.ndarray, points: np.ndarray):
        self.times = np.concatenate([[t0_s], t0_s + np.asarray(times_s, dtype=np.float64)])
        self.points = np.vstack([start_q[None], points])
        if np.any(np.diff(self.times) < 0):
            raise ValueError(f"trajectory times_from_start must not decrease: {list(times_s)}")

    @property
    def end_s(self) -> float:
        return float(self.times[-1])

    def at(self, t_s: float) -> np.ndarray:
        return np.array([np.interp(t_s, self.times, self.points[:, j]) for j in range(self.points.shape[1])])
