"""Human interventions during training: an attached teleop device can take over from the policy.

HIL-SERL's observation: a few corrections at the moments a policy goes wrong teach more than many
demonstrations up front. While the operator holds control (toggled with the device's intervene
button, or simply by deflecting it when ``takeover_on_motion``), the device's action replaces the
policy's and ``info["intervention"] = True``. The loop stores the *executed* action
(``info["executed_action"]``), puts intervention transitions in both the demo and the online
buffers, and logs ``info["intervention_rate"]``.

The operator's buttons act here too: success ends the episode as a success (``terminated``,
``info["is_success"] = True``, ``info["operator_label"] = "success"``), failure truncates it,
e-stop has already latched the robot's EStop inside the device (the arm holds) and is reported in
``info["estop"]``. The device is any object with ``poll(follower_q) -> TeleopCommand``
(``se_robot.teleop``); nothing here imports a device driver. Observations pass through untouched
(dicts with the env's keys); the wrapper acts on actions and info only.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


def find_estop(env: gym.Env) -> Any:
    """The EStop latch of the robot under ``env`` (an ``ArmEnv`` under its wrappers)."""
    return env.unwrapped.robot.estop


def commanded_joints(env: gym.Env) -> np.ndarray:
    """The follower's commanded joints (the reference joint_delta actions are relative to)."""
    return env.unwrapped.commanded_joints


class InterventionWrapper(gym.Wrapper):
    """Let ``device`` replace the policy's action; see the module docstring for the info keys."""

    def __init__(self, env: gym.Env, device: Any, *, takeover_on_motion: bool = True,
                 operator_labels: bool = True, success_reward: float | None = None):
        super().__init__(env)
        self.device = device
        self.takeover_on_motion = takeover_on_motion
        self.operator_labels = operator_labels
        self.success_reward = success_reward
        if getattr(device, "estop", None) is None and hasattr(device, "estop"):
            device.estop = find_estop(env)  # the e-stop button must stop this arm
        self.total_steps = 0
        self.intervention_steps = 0
        self._episode_steps = 0
        self._episode_interventions = 0

    @property
    def intervention_rate(self) -> float:
        """Share of all steps so far in which the human drove."""
        return self.intervention_steps / max(self.total_steps, 1)

    def close(self) -> None:
        try:
            disconnect = getattr(self.device, "disconnect", None)
            if disconnect is not None:
                disconnect()
        finally:
            super().close()

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self.device.poll(commanded_joints(self.env))  # forget presses made between episodes
        self._episode_steps = self._episode_interventions = 0
        return obs, {**info, "intervention": False}

    def step(self, action: Any):
        cmd = self.device.poll(commanded_joints(self.env))
        policy_action = np.asarray(action, dtype=np.float32)
        intervening = bool(cmd.intervening or (self.takeover_on_motion and cmd.active))
        executed = policy_action
        if intervening:
            executed = np.asarray(cmd.action, dtype=np.float32)
            if executed.shape != policy_action.shape:
                raise ValueError(f"teleop device {getattr(self.device, 'name', self.device)!r} gives actions of "
                                 f"shape {executed.shape}, the env takes {policy_action.shape}; use a device "
                                 f"for this action_mode")
        obs, reward, terminated, truncated, info = self.env.step(executed)
        self.total_steps += 1
        self._episode_steps += 1
        self.intervention_steps += int(intervening)
        self._episode_interventions += int(intervening)
        info = dict(info)
        info.update({"intervention": intervening, "executed_action": executed, "policy_action": policy_action,
                     "intervention_rate": self.intervention_rate,
                     "episode_intervention_rate": self._episode_interventions / self._episode_steps,
                     "estop": cmd.pressed("estop")})
        if self.operator_labels:
            if cmd.pressed("success"):
                terminated = True
                info["is_success"] = True
                info["operator_label"] = "success"
                if self.success_reward is not None:
                    reward = self.success_reward
            elif cmd.pressed("failure"):
                truncated = True
                info["operator_label"] = "failure"
        return obs, reward, terminated, truncated, info
