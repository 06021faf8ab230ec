"""Leader-arm teleoperation: a second servo-bus arm, torque off, moved by hand; the follower copies it.

The leader is read with the same ``SerialArm`` driver as the follower (so calibration turns ticks
into the same radians), joint to joint by name. It is a physical arm of its own with a calibration
of its own, looked up by its arm id: ``<leader arm name>_leader`` (``so101_leader``) unless given,
never the follower's. Calibrate it once with ``se-robot calibrate --port /dev/ttyACM1 --leader``
(the same as ``--arm-id so101_leader``).

Its positions become the follower's joint targets (``TeleopCommand.joint_targets``, clipped to
the follower's limits) and, given the follower's measured joints, a ``joint_delta`` action scaled
by ``action_scale_rad`` per unit, the form the envs take. The follower's safety filter still
bounds every step, so a leader yanked across its range moves the follower no faster than
``max_joint_step_rad`` per tick.

A leader has no buttons: combine it with the keyboard (``CombinedDevice``) for success, failure,
re-record and e-stop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from se_robot.arm import ArmDescription
from se_robot.hardware.calibration import default_leader_arm_id, resolve_calibration
from se_robot.teleop.base import TeleopDevice


class LeaderArmTeleop(TeleopDevice):
    action_mode = "joint_delta"
    name = "leader"

    def __init__(self, leader_arm: ArmDescription, port: str, calibration: Any = None,
                 follower_arm: ArmDescription | None = None, joint_map: Mapping[str, str] | None = None,
                 action_scale_rad: float | None = None, motion_threshold_rad: float = 0.01,
                 estop: Any | None = None, arm_id: str | None = None):
        """``joint_map`` maps follower joint name -> leader joint name (default: same names).

        ``calibration``: an ``ArmCalibration`` or YAML path; without one, the calibration stored
        for ``arm_id`` (default ``default_leader_arm_id``: ``<leader arm name>_leader``). A missing
        one raises ``CalibrationError`` here, naming the calibrate command, before anything opens.
        """
        super().__init__(estop=estop)
        self.leader_arm = leader_arm
        self.follower_arm = follower_arm or leader_arm
        self.port = port
        self.arm_id = arm_id or default_leader_arm_id(leader_arm)
        self.calibration = resolve_calibration(leader_arm, calibration, self.arm_id, port)
        names = self.follower_arm.joint_names
        jm = dict(joint_map or {n: n for n in names})
        missing = [n for n in names if n not in jm]
        if missing:
            raise ValueError(f"joint_map: no leader joint given for follower joint(s) {missing}")
        unknown = [v for v in jm.values() if v not in leader_arm.joint_names]
        if unknown:
            raise ValueError(f"joint_map: leader arm {leader_arm.name!r} has no joint(s) {unknown}; "
                             f"it has {leader_arm.joint_names}")
        self._index = np.array([leader_arm.joint_names.index(jm[n]) for n in names])
        self.action_scale_rad = (action_scale_rad if action_scale_rad is not None
                                 else self.follower_arm.safety.max_joint_step_rad)
        self.motion_threshold_rad = motion_threshold_rad
        margin = self.follower_arm.safety.soft_margin_rad
        self._lower = self.follower_arm.lower + margin
        self._upper = self.follower_arm.upper - margin
        self._driver = None
        self._previous: np.ndarray | None = None
        self.last_joint_targets: np.ndarray | None = None

    def connect(self) -> "LeaderArmTeleop":
        from se_robot.hardware.serial_arm import SerialArm

        driver = SerialArm(self.leader_arm, self.port, self.calibration, arm_id=self.arm_id, disconnect_torque="off")
        driver.connect()
        try:
            driver.torque_off()  # the human moves it; the servos only report
        except Exception:
            driver.disconnect()
            raise
        self._driver = driver
        return self

    def disconnect(self) -> None:
        if self._driver is not None:
            self._driver.disconnect()
            self._driver = None

    def leader_positions(self) -> np.ndarray:
        if self._driver is None:
            raise RuntimeError("LeaderArmTeleop.poll before connect()")
        return self._driver.read_state().positions

    def targets_from_leader(self, q_leader_rad: np.ndarray) -> np.ndarray:
        """Follower joint targets (rad, follower order) for leader positions."""
        return np.clip(np.asarray(q_leader_rad, dtype=np.float64)[self._index], self._lower, self._upper)

    def _read(self, follower_q: np.ndarray | None) -> tuple[np.ndarray, bool, set[str]]:
        targets = self.targets_from_leader(self.leader_positions())
        active = self._previous is not None and bool(
            np.max(np.abs(targets - self._previous)) > self.motion_threshold_rad)
        self._previous = targets
        self.last_joint_targets = targets
        if follower_q is None:
            action = np.zeros(len(targets), dtype=np.float32)
        else:
            action = (targets - np.asarray(follower_q, dtype=np.float64)) / self.action_scale_rad
        return action, active, set()
