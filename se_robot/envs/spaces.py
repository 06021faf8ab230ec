"""Observation and action spaces, and action decoding: one meaning for every backend.

One module decides what an observation and an action mean, so a policy trained on the twin
sees the same arrays on the real arm or over ROS, whichever ``Robot`` produced them.

Observations are always a ``gym.spaces.Dict`` with fixed keys (never a layout guessed from a shape):

- ``"state"``: proprioception, float32 (2n + 4): joint positions (n, rad), joint velocities
  (n, rad/s), gripper opening (1, 0 closed .. 1 open), gripper position (3, m, base frame).
  Present in obs_mode ``state`` and ``both``; absent in ``pixels``.
- ``"task"``: the task's features (``Task.feature_names``: target / cube / goal positions),
  float32, only in obs_mode ``state``. In ``both`` the camera carries the task, as on a real arm.
- ``"pixels"``: the camera image, uint8 H x W x 3 as the env makes it, in ``pixels`` and ``both``.
  ``PixelFrameStack`` turns it channel-first (3k, H, W); a frozen encoder replaces it with
  ``"features"`` (float32).

Vector learners read the concatenation of the present vector keys in the order
``se_robot.agents.obs.VECTOR_KEYS`` (features, state, task): in obs_mode ``state`` that is proprioception then task
features, the layout ``state_reward_fn`` scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import gymnasium as gym
import numpy as np

from se_robot.arm import ArmDescription
from se_robot.config import option
from se_robot.tasks import Task, TaskState

ObsMode = Literal["state", "pixels", "both"]
ActionMode = Literal["ee_delta", "joint_delta"]


@dataclass(frozen=True)
class EnvConfig:
    """Options every backend accepts (also the keyword options of the registered Gymnasium ids)."""

    obs_mode: ObsMode = option("state", help="state | pixels | both", choices=("state", "pixels", "both"))
    image_size: int = option(84, help="square image side (px)", range=(16, 1024))
    camera: str = option("scene", help="camera that makes the pixels", choices=("scene", "wrist"))
    action_mode: ActionMode = option("ee_delta", help="ee_delta | joint_delta", choices=("ee_delta", "joint_delta"))
    control_hz: float = option(10.0, help="control ticks per second", range=(1.0, 200.0))
    reward_type: Literal["dense", "sparse"] = option("dense", help="dense | sparse", choices=("dense", "sparse"))
    ee_step_m: float = option(0.02, help="gripper move per step at |action| = 1 (m)", range=(1e-4, 0.1))
    joint_step_rad: float = option(0.1, help="joint move per step at |action| = 1 (rad)", range=(1e-4, 0.5))
    point_down: bool = option(True, help="ee_delta IK keeps the gripper pointing down")
    randomize: str = option("", help="domain randomization of the twin, drawn anew at every reset: '' (off), "
                                     "a preset in config/randomization (mild, hard) or a YAML path "
                                     "(docs/randomization.md)")
    twin_camera: str = option("", help="the sim twin's camera moved to match yours: a camera config file "
                                       "written by se-robot align-camera ('' : the model's camera)")


def resolve_env_parts(task: "str | Task", arm: "str | ArmDescription", render_mode: str | None,
                      options: dict[str, Any], source: str = "env options") -> tuple[EnvConfig, ArmDescription, Task]:
    """The validated options, arm and task every backend's env starts from."""
    from se_robot.arm import load_arm
    from se_robot.config import from_dict
    from se_robot.tasks import load_task

    if render_mode not in (None, "rgb_array"):
        raise ValueError(f"render_mode {render_mode!r} is not supported; use 'rgb_array' or None")
    cfg = from_dict(EnvConfig, options, source=source)
    return (cfg, load_arm(arm) if isinstance(arm, str) else arm,
            load_task(task) if isinstance(task, str) else task)


def proprio_dim(arm: ArmDescription) -> int:
    return 2 * arm.n_joints + 4


def observation_space(arm: ArmDescription, task: Task, cfg: EnvConfig) -> gym.spaces.Dict:
    """The Dict of the keys present in ``cfg.obs_mode`` (see the module docstring)."""
    spaces: dict[str, gym.Space] = {}
    if cfg.obs_mode != "pixels":
        spaces["state"] = gym.spaces.Box(-np.inf, np.inf, (proprio_dim(arm),), np.float32)
    if cfg.obs_mode == "state":
        spaces["task"] = gym.spaces.Box(-np.inf, np.inf, (len(task.feature_names),), np.float32)
    if cfg.obs_mode != "state":
        spaces["pixels"] = gym.spaces.Box(0, 255, (cfg.image_size, cfg.image_size, 3), np.uint8)
    return gym.spaces.Dict(spaces)


def action_space(arm: ArmDescription, cfg: EnvConfig) -> gym.spaces.Box:
    n = 4 if cfg.action_mode == "ee_delta" else arm.n_joints
    return gym.spaces.Box(-1.0, 1.0, (n,), np.float32)


#: the order vector learners concatenate the present vector keys in


def build_proprio(q: np.ndarray, qd: np.ndarray, gripper: float, ee: np.ndarray) -> np.ndarray:
    """The ``"state"`` vector: joint positions, joint velocities, gripper opening, gripper xyz."""
    return np.concatenate([q, qd, [gripper], ee]).astype(np.float32)


class ActionDecoder:
    """Turns a normalised action into joint targets, before the safety filter sees them.

    ``ee_delta`` moves the *commanded* gripper position (not the measured one, which sags under
    load) and solves IK seeded from the last command, so small actions give small joint moves.
    """

    def __init__(self, arm: ArmDescription, kinematics, cfg: EnvConfig):
        self.arm, self.kin, self.cfg = arm, kinematics, cfg
        self.space = action_space(arm, cfg)
        g = arm.gripper
        self._grip = (arm.gripper_index, g.closed_position, g.open_position) if g else None
        s = arm.safety
        margin = 0.01
        self._box_lo = np.asarray(s.workspace_min) + margin
        self._box_hi = np.asarray(s.workspace_max) - margin
        self._box_lo[2] = max(self._box_lo[2], s.floor_z + 0.01)

    def decode(self, action: np.ndarray, q_cmd: np.ndarray) -> np.ndarray:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != self.space.shape:
            raise ValueError(f"action has shape {a.shape}, expected {self.space.shape}")
        # Non-finite values pass through unchanged: the safety filter holds and counts them.
        if np.count_nonzero(np.isfinite(a)) != a.size:  # .all()'s value, without its wrapper's cost
            return np.full(self.arm.n_joints, np.nan)
        # np.clip's values without its wrapper's cost: this runs every control tick
        a = np.minimum(np.maximum(a, -1.0), 1.0)
        if self.cfg.action_mode == "joint_delta":
            return q_cmd + a * self.cfg.joint_step_rad
        ee = self.kin.fk(q_cmd)
        target = np.minimum(np.maximum(ee + a[:3] * self.cfg.ee_step_m, self._box_lo), self._box_hi)
        q = self.kin.ik(target, q_cmd, point_down=self.cfg.point_down, iters=10, tol_m=1e-3)
        if self._grip is not None:
            i, closed, opened = self._grip
            q[i] = closed + (a[3] + 1.0) * 0.5 * (opened - closed)
        return q


def state_reward_fn(env: Any) -> Callable | None:
    """``reward_fn(state, action, next_state) -> (reward, terminated)`` from the env's task, batched.

    Reads the vector layout of obs_mode ``state`` (``"state"`` then ``"task"``, as ``VECTOR_KEYS``
    concatenates them: proprio, then the task's features) and
    scores ``next_state`` with the task's own reward and success, so model rollouts see exactly
    the env's reward. None when the layout has no task features (pixels/both modes).
    """
    base = env.unwrapped
    task, arm, reward_type = base.task, base.arm, base.cfg.reward_type
    if base.cfg.obs_mode != "state":
        return None
    p = proprio_dim(arm)
    names = task.feature_names
    column = {name: p + i for i, name in enumerate(names)}

    def gather(ns: np.ndarray, keys: tuple[str, ...]) -> np.ndarray:
        out = np.zeros((len(ns), 3), np.float64)
        for j, key in enumerate(keys):
            if key in column:
                out[:, j] = ns[:, column[key]]
        return out

    def reward_fn(state, action, next_state):
        ns = np.asarray(next_state, np.float64)
        target_keys = ("goal_x", "goal_y") if "goal_x" in column else ("target_x", "target_y", "target_z")
        s = TaskState(ee_pos=ns[:, p - 3:p], gripper=ns[:, p - 4], cube_pos=gather(ns, ("cube_x", "cube_y", "cube_z")),
                      target_pos=gather(ns, target_keys))
        terminated = task.success(s) & bool(task.cfg.terminate_on_success)
        return task.reward(s, reward_type), terminated

    return reward_fn
