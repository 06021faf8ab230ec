"""Joint-space trajectories the arm nodes follow (``arm/joint_trajectory`` and ``~/home``); pure."""

from __future__ import annotations

from typing import Any, Sequence

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


def trajectory_from_msg(msg: Any, joint_names: Sequence[str], start_q: np.ndarray, t0_s: float) -> Trajectory:
    """A ``trajectory_msgs/JointTrajectory`` as a Trajectory from ``start_q`` at ``t0_s``.

    The message may name a subset of the joints, in any order; the others keep their ``start_q``
    value. Raises ValueError saying what is wrong: unknown joints, no points, a point whose length
    differs from the joint names, or times that go backwards.
    """
    unknown = [n for n in msg.joint_names if n not in joint_names]
    if unknown:
        raise ValueError(f"unknown joints {unknown}")
    if not msg.points:
        raise ValueError("no points")
    idx = [list(joint_names).index(n) for n in msg.joint_names]
    points, times = [], []
    for k, p in enumerate(msg.points):
        if len(p.positions) != len(idx):
            raise ValueError(f"point {k} has {len(p.positions)} positions for {len(idx)} joint names")
        full = start_q.copy()
        full[idx] = p.positions
        points.append(full)
        times.append(p.time_from_start.sec + p.time_from_start.nanosec * 1e-9)
    return Trajectory(t0_s, start_q, np.array(times), np.array(points))
