"""Build a teleop device by name, as ``se-robot record --teleop`` and the ROS teleop node do."""

from __future__ import annotations

from typing import Any

from se_robot.teleop.base import CombinedDevice, TeleopDevice

KINDS = ("keyboard", "gamepad", "spacemouse", "leader")


def make_teleop(kind: str, *, device: str | None = None, estop: Any | None = None, keyboard_buttons: bool = True,
                leader_arm: str = "so101", leader_calibration: str | None = None, leader_arm_id: str | None = None,
                follower_arm: Any = None, speed: float = 0.5, action_scale_rad: float | None = None) -> TeleopDevice:
    """``device``: the evdev node (gamepad, spacemouse), the serial port (leader) or a tty (keyboard).

    A leader arm uses ``leader_calibration`` (a YAML path), else the calibration stored for
    ``leader_arm_id`` (default: ``<leader arm name>_leader``), never the follower's.

    ``action_scale_rad``: the env's ``joint_step_rad``, so a leader arm's joint_delta actions mean
    what the follower env will do with them (the leader's default otherwise).

    With ``keyboard_buttons`` the terminal keyboard is added for success/failure/re-record/e-stop
    to devices with few or no buttons (SpaceMouse, leader arm, and the gamepad as a backup).
    """
    from se_robot.teleop.keyboard import KeyboardTeleop

    if kind == "keyboard":
        return KeyboardTeleop(tty_path=device, speed=speed, estop=estop)
    if kind in ("gamepad", "spacemouse"):
        if not device:
            raise ValueError(f"--teleop {kind} needs --device /dev/input/eventN (see ls -l /dev/input/by-id/)")
        from se_robot.teleop.evdev import GamepadTeleop, SpaceMouseTeleop

        motion: TeleopDevice = (GamepadTeleop if kind == "gamepad" else SpaceMouseTeleop)(device, speed=speed)
    elif kind == "leader":
        if not device:
            raise ValueError("--teleop leader needs --device with the leader arm's serial port, e.g. /dev/ttyACM1")
        from se_robot.arm import load_arm
        from se_robot.teleop.leader import LeaderArmTeleop

        motion = LeaderArmTeleop(load_arm(leader_arm), device, leader_calibration, follower_arm=follower_arm,
                                 action_scale_rad=action_scale_rad, arm_id=leader_arm_id)
    else:
        raise ValueError(f"unknown teleop device {kind!r}; allowed: {', '.join(KINDS)}")
    if not keyboard_buttons:
        motion.estop = estop
        return motion
    return CombinedDevice(motion, KeyboardTeleop(), estop=estop)
