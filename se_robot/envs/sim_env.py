"""The sim twin as a Gymnasium env: ``se_robot/SimReach-v0``, ``SimPush-v0``, ``SimLift-v0``.

Each step decodes the action into joint targets, passes them through the same SafetyFilter the
real arm uses (so policies learn inside the same envelope), and runs the position servos for one
control period. Episodes are truncated by Gymnasium's TimeLimit (registered max_episode_steps).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from se_robot.arm import ArmDescription
from se_robot.envs.spaces import (ActionDecoder, action_space, build_obs, build_state, observation_space,
                                  resolve_env_parts)
from se_robot.tasks import Task, TaskState


class SimArmEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, task: str | Task = "reach", arm: str | ArmDescription = "so101",
                 render_mode: str | None = None, render_size: int = 256, **options: Any):
        from se_robot.sim.twin import ArmTwin
        from se_robot.sim.kinematics import Kinematics
        from se_robot.safety import SafetyFilter

        self.cfg, self.arm, self.task = resolve_env_parts(task, arm, render_mode, options)
        self.render_mode = render_mode
        self.render_size = render_size
        self.metadata = {**self.metadata, "render_fps": self.cfg.control_hz}
        self.twin = ArmTwin(self.arm, self.task)
        self.kin = Kinematics(self.arm)
        self.safety = SafetyFilter(self.arm, self.kin)
        self.decoder = ActionDecoder(self.arm, self.kin, self.cfg)
        self.observation_space = observation_space(self.arm, self.task, self.cfg)
        self.action_space = action_space(self.arm, self.cfg)
        self._dt_s = 1.0 / self.cfg.control_hz
        self._q_cmd = self.arm.home.copy()

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.twin.reset(self.np_random)
        self.twin.step(0.2)  # let the servos settle under gravity before the first observation
        self._q_cmd = self.arm.home.copy()
        s = TaskState(*self._task_arrays())
        return self._observe(s), self._info(s, None)

    def step(self, action):
        q_now = self.twin.joint_positions()
        target = self.decoder.decode(action, self._q_cmd)
        cmd = self.safety.filter(target, q_now)
        self._q_cmd = cmd.positions
        self.twin.set_targets(cmd.positions)
        self.twin.step(self._dt_s)
        s = TaskState(*self._task_arrays())
        success = bool(self.task.success(s))
        reward = float(self.task.reward(s, self.cfg.reward_type))
        terminated = success and self.task.cfg.terminate_on_success
        return self._observe(s), reward, terminated, False, self._info(s, cmd, success)

    def render(self):
        if self.render_mode == "rgb_array":
            return self.twin.render("scene", self.render_size, self.render_size)
        return None

    def close(self):
        self.twin.close()

    # ------------------------------------------------------------------ helpers
    def _task_arrays(self):
        t = self.twin
        return t.ee_position(), np.float64(t.gripper_fraction()), t.cube_position(), t.target_position()

    def _observe(self, s: TaskState):
        t, cfg = self.twin, self.cfg
        pixels = state = None
        if cfg.obs_mode != "state":
            pixels = t.render(cfg.camera, cfg.image_size, cfg.image_size)
        if cfg.obs_mode != "pixels":
            features = self.task.features(s) if cfg.obs_mode == "state" else None
            state = build_state(t.joint_positions(), t.joint_velocities(), float(s.gripper), s.ee_pos, features)
        return build_obs(cfg, state, pixels)

    def _info(self, s: TaskState, cmd, success: bool | None = None) -> dict:
        info = {"is_success": bool(self.task.success(s)) if success is None else success,
                "safety/clipped": bool(cmd.clipped) if cmd else False,
                "safety/held": bool(cmd.held) if cmd else False,
                "safety/reasons": ",".join(cmd.reasons) if cmd else ""}
        return info

    # Privileged access for scripted experts and tests (what a detector gives on hardware).
    def object_state(self) -> TaskState:
        return TaskState(*self._task_arrays())

    @property
    def commanded_joints(self) -> np.ndarray:
        return self._q_cmd.copy()
