"""Task definitions shared by the sim twin, the hardware env and the ROS env.

Dense rewards are never positive (0 only at the goal): episodes end on success, and a positive
per-step reward would pay an agent to hover next to the goal instead of finishing the task.

A task sees only what a real arm can measure: the gripper position (forward kinematics), the
gripper opening, and object positions (from the twin, or a camera detector on hardware). Reward,
success and reset distributions are plain numpy on those quantities, vectorised over leading
dimensions so that MBPO can score whole batches of model rollouts with the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from se_robot.config import ConfigError, config_path, from_dict, option, read_yaml

CUBE_HALF_M = 0.015


@dataclass(frozen=True)
class TaskConfig:
    """One task's episode length, thresholds and reset distribution (config/tasks/<name>.yaml)."""

    name: str = option(help="reach | push | lift", choices=("reach", "push", "lift"))
    max_episode_steps: int = option(50, help="steps before truncation", range=(1, 100_000))
    success_threshold_m: float = option(0.02, help="distance counted as success (m)", range=(1e-3, 0.2))
    lift_height_m: float = option(0.05, help="lift: cube bottom this high above the table (m)", range=(0.01, 0.3))
    terminate_on_success: bool = option(True, help="end the episode when the task succeeds")
    object_min: tuple[float, float] = option((0.14, -0.07), help="cube x, y lower corner (m)")
    object_max: tuple[float, float] = option((0.20, 0.07), help="cube x, y upper corner (m)")
    object_yaw_rad: float = option(0.3, help="cube yaw sampled in +-this (rad)", range=(0.0, 3.1416))
    target_min: tuple[float, float, float] = option((0.13, -0.08, 0.03), help="reach target lower corner (m)")
    target_max: tuple[float, float, float] = option((0.21, 0.08, 0.11), help="reach target upper corner (m)")
    goal_distance_m: tuple[float, float] = option((0.05, 0.08), help="push: goal distance from cube (m)")


@dataclass
class TaskState:
    """What the task needs to know; arrays may carry leading batch dimensions."""

    ee_pos: np.ndarray            # (..., 3) gripper site position (m)
    gripper: np.ndarray           # (...,) gripper opening as a fraction: 0 closed, 1 open
    cube_pos: np.ndarray          # (..., 3) cube centre (m)
    target_pos: np.ndarray        # (..., 3) reach target or push goal (m)


@dataclass
class ResetSample:
    cube_pos: np.ndarray
    cube_yaw: float
    target_pos: np.ndarray


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=-1)


class Task:
    """Base: reward, success and the reset distribution of one task."""

    name: ClassVar[str] = ""
    #: quantities added to the state observation (privileged in sim, detected on hardware)
    feature_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: TaskConfig):
        self.cfg = cfg

    def sample_reset(self, rng: np.random.Generator) -> ResetSample:
        lo, hi = np.array(self.cfg.object_min), np.array(self.cfg.object_max)
        xy = rng.uniform(lo, hi)
        yaw = float(rng.uniform(-self.cfg.object_yaw_rad, self.cfg.object_yaw_rad))
        cube = np.array([xy[0], xy[1], CUBE_HALF_M])
        return ResetSample(cube, yaw, self._sample_target(rng, cube))

    def _sample_target(self, rng: np.random.Generator, cube: np.ndarray) -> np.ndarray:
        return np.array(rng.uniform(self.cfg.target_min, self.cfg.target_max))

    def features(self, s: TaskState) -> np.ndarray:
        raise NotImplementedError

    def success(self, s: TaskState) -> np.ndarray:
        raise NotImplementedError

    def dense_reward(self, s: TaskState) -> np.ndarray:
        raise NotImplementedError

    def reward(self, s: TaskState, reward_type: str) -> np.ndarray:
        if reward_type == "sparse":
            return self.success(s).astype(np.float32)
        return self.dense_reward(s).astype(np.float32)


class ReachTask(Task):
    name = "reach"
    feature_names = ("target_x", "target_y", "target_z")

    def features(self, s: TaskState) -> np.ndarray:
        return s.target_pos

    def success(self, s: TaskState) -> np.ndarray:
        return _dist(s.ee_pos, s.target_pos) < self.cfg.success_threshold_m

    def dense_reward(self, s: TaskState) -> np.ndarray:
        return -np.tanh(10.0 * _dist(s.ee_pos, s.target_pos))


class PushTask(Task):
    """Push the cube into a goal region on the table (the target marker's disc)."""

    name = "push"
    feature_names = ("cube_x", "cube_y", "cube_z", "goal_x", "goal_y")

    def _sample_target(self, rng: np.random.Generator, cube: np.ndarray) -> np.ndarray:
        # Pushes go sideways: pushing outwards or inwards needs the gripper low and near the edge
        # of the reach of a 5-joint arm pointing down, where it cannot push reliably.
        for _ in range(100):
            ang = rng.choice([-1.0, 1.0]) * rng.uniform(np.radians(65), np.radians(115))
            dist = rng.uniform(*self.cfg.goal_distance_m)
            goal = cube[:2] + dist * np.array([np.cos(ang), np.sin(ang)])
            if 0.13 <= goal[0] <= 0.23 and abs(goal[1]) <= 0.1:
                return np.array([goal[0], goal[1], 0.0])
        return np.array([cube[0], cube[1] + np.sign(cube[1] or 1.0) * -0.05, 0.0])

    def features(self, s: TaskState) -> np.ndarray:
        return np.concatenate([s.cube_pos, s.target_pos[..., :2]], axis=-1)

    def success(self, s: TaskState) -> np.ndarray:
        return _dist(s.cube_pos[..., :2], s.target_pos[..., :2]) < self.cfg.success_threshold_m

    def dense_reward(self, s: TaskState) -> np.ndarray:
        to_cube = _dist(s.ee_pos, s.cube_pos)
        to_goal = _dist(s.cube_pos[..., :2], s.target_pos[..., :2])
        return -(0.3 * np.tanh(10.0 * to_cube) + 0.7 * np.tanh(10.0 * to_goal))


class LiftTask(Task):
    """Grasp the cube and raise its bottom ``lift_height_m`` above the table."""

    name = "lift"
    feature_names = ("cube_x", "cube_y", "cube_z")

    def features(self, s: TaskState) -> np.ndarray:
        return s.cube_pos

    def height(self, s: TaskState) -> np.ndarray:
        return s.cube_pos[..., 2] - CUBE_HALF_M

    def success(self, s: TaskState) -> np.ndarray:
        return (self.height(s) >= self.cfg.lift_height_m) & (_dist(s.ee_pos, s.cube_pos) < 0.04)

    def dense_reward(self, s: TaskState) -> np.ndarray:
        near = 1.0 - np.tanh(10.0 * _dist(s.ee_pos, s.cube_pos))
        closed = np.clip(1.0 - s.gripper, 0.0, 1.0)
        grasp = near * closed
        lift = np.clip(self.height(s) / self.cfg.lift_height_m, 0.0, 1.0)
        return 0.25 * near + 0.25 * grasp + 0.5 * lift * (_dist(s.ee_pos, s.cube_pos) < 0.04) - 1.0


TASKS: dict[str, type[Task]] = {t.name: t for t in (ReachTask, PushTask, LiftTask)}


def load_task(name_or_path: str) -> Task:
    """A task by name (config/tasks/<name>.yaml) or from a YAML path."""
    if name_or_path.endswith((".yaml", ".yml")):
        path = name_or_path
    else:
        if name_or_path not in TASKS:
            raise ConfigError("--task", "task", f"unknown task {name_or_path!r}; allowed: {', '.join(TASKS)}")
        path = str(config_path("tasks", f"{name_or_path}.yaml"))
    cfg = from_dict(TaskConfig, read_yaml(path), path)
    return TASKS[cfg.name](cfg)
