"""Scripted experts: demonstrations in sim and oracles for tests.

They act through the env's action space like a policy would, using the arm's kinematics and the
object pose (``env.object_state()``: privileged in sim, the camera detector on hardware), and
nothing else a real arm lacks. Each is a small waypoint machine with closed-loop corrections.
"""

from __future__ import annotations

import numpy as np

from se_robot.tasks import CUBE_HALF_M, TaskState

GRIP_OPEN, GRIP_CLOSED = 1.0, -1.0


class ScriptedExpert:
    def __init__(self, env):
        self.env = env.unwrapped
        self.cfg = self.env.cfg
        self.kin = self.env.kin
        self.reset()

    def reset(self) -> None:
        self.phase = 0
        self.timer = 0
        self.last_grip = 1.0

    def __call__(self, obs=None) -> np.ndarray:
        s = self.env.object_state()
        target, grip = self.plan(s)
        return self._to_action(s, target, grip)

    def plan(self, s: TaskState) -> tuple[np.ndarray, float]:
        raise NotImplementedError

    def _to_action(self, s: TaskState, target: np.ndarray, grip: float) -> np.ndarray:
        q_cmd = self.env.commanded_joints
        ee_cmd = self.kin.fk(q_cmd)
        if self.cfg.action_mode == "ee_delta":
            delta = (target - ee_cmd) / self.cfg.ee_step_m
            return np.clip(np.r_[delta, grip], -1, 1).astype(np.float32)
        # Move along the Cartesian line in ee_delta-sized steps, as the ee_delta expert does.
        step = target - ee_cmd
        step *= min(1.0, self.cfg.ee_step_m / max(float(np.linalg.norm(step)), 1e-9))
        q_des = self.kin.ik(ee_cmd + step, q_cmd, point_down=self.cfg.point_down)
        arm = self.env.arm
        if arm.gripper is not None:
            g = arm.gripper
            q_des[arm.gripper_index] = g.closed_position + (grip + 1) / 2 * (g.open_position - g.closed_position)
        return np.clip((q_des - q_cmd) / self.cfg.joint_step_rad, -1, 1).astype(np.float32)


class ReachExpert(ScriptedExpert):
    def plan(self, s):
        return s.target_pos.copy(), GRIP_OPEN


class PushExpert(ScriptedExpert):
    """Get behind the cube on the cube-goal line, lower the closed gripper, push, re-align if off."""

    approach_m = 0.045
    contact_m = 0.022
    push_z_m = 0.024
    hover_z_m = 0.07

    def plan(self, s):
        cube, goal = s.cube_pos[:2], s.target_pos[:2]
        to_goal = goal - cube
        dist = np.linalg.norm(to_goal)
        d = to_goal / max(dist, 1e-6)
        ee = s.ee_pos
        behind = cube - d * self.approach_m
        rel = ee[:2] - cube
        along = rel @ d
        lateral = abs(rel @ np.array([-d[1], d[0]]))
        if self.phase == 0:  # hover above the approach point
            tgt = np.r_[behind, self.hover_z_m]
            if np.linalg.norm(ee[:2] - behind) < 0.01:
                self.phase = 1
            return tgt, GRIP_CLOSED
        if self.phase == 1:  # descend
            tgt = np.r_[behind, self.push_z_m]
            if ee[2] < self.push_z_m + 0.008:
                self.phase = 2
            return tgt, GRIP_CLOSED
        # push through the cube towards the goal; re-plan if the cube slid sideways
        if lateral > 0.012 or along > -0.005:
            self.phase = 0
            return np.r_[ee[:2], self.hover_z_m], GRIP_CLOSED
        tgt = np.r_[goal - d * self.contact_m, self.push_z_m]
        return tgt, GRIP_CLOSED


class LiftExpert(ScriptedExpert):
    """Hover over the cube, descend open, close, lift."""

    hover_z_m = 0.08
    grasp_z_m = CUBE_HALF_M + 0.008
    lift_z_m = 0.11

    def plan(self, s):
        cube, ee = s.cube_pos, s.ee_pos
        above = np.r_[cube[:2], self.hover_z_m]
        if self.phase == 0:
            if np.linalg.norm(ee[:2] - cube[:2]) < 0.006 and abs(ee[2] - self.hover_z_m) < 0.02:
                self.phase = 1
            return above, GRIP_OPEN
        if self.phase == 1:
            tgt = np.r_[cube[:2], self.grasp_z_m]
            if ee[2] < self.grasp_z_m + 0.006:
                self.phase, self.timer = 2, 0
            if np.linalg.norm(ee[:2] - cube[:2]) > 0.015:
                self.phase = 0
            return tgt, GRIP_OPEN
        if self.phase == 2:  # close and wait until the jaws stop moving on the cube
            self.timer += 1
            settled = abs(float(s.gripper) - self.last_grip) < 0.01
            self.last_grip = float(s.gripper)
            if self.timer >= 4 and settled:
                self.phase = 3
            return np.r_[cube[:2], self.grasp_z_m], GRIP_CLOSED
        if np.linalg.norm(ee - cube) > 0.04:  # dropped it: start over
            self.phase = 0
            return np.r_[ee[:2], self.hover_z_m], GRIP_OPEN
        return np.r_[ee[:2], self.lift_z_m], GRIP_CLOSED


EXPERTS = {"reach": ReachExpert, "push": PushExpert, "lift": LiftExpert}


def expert_for(env) -> ScriptedExpert:
    """The scripted expert of the env's task; call ``reset()`` after each ``env.reset()``."""
    task = env.unwrapped.task.name
    return EXPERTS[task](env)
