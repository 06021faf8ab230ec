"""arm_node: the real arm on its servo bus (``SerialRobot``) as a ROS 2 lifecycle node.

Lifecycle: configure connects the robot (opens the port, checks every servo, energises them
holding their present position, so nothing jumps), activate starts accepting commands,
deactivate holds, cleanup releases the port. Topics, services, watchdog and diagnostics are
those of :class:`se_robot.nodes.arm_server.ArmServerNode`, shared with sim_node. Every command
passes the robot's safety filter, the lowest layer that writes to the bus; a bus fault latches
the e-stop there, and the latched ``arm/estopped`` topic reports it.

``autostart: true`` configures and activates it at start (the launch files pass their
``autostart`` argument, default true; plain ``ros2 run`` keeps the parameter's default, false, so
no servo is energised unasked). Otherwise drive it by hand: ``ros2 lifecycle set /arm_node
configure``, then ``activate`` (``lifecycle_msgs/srv/ChangeState`` on ``/arm_node/change_state``).
"""

from __future__ import annotations

from typing import Any

from se_robot.nodes.arm_server import ArmServerNode, run_arm_server
from se_robot.ros_params import ArmParams
from se_robot.robot import Robot


def make_serial_robot(cfg: ArmParams) -> Robot:
    """The arm on ``cfg.port``, not yet connected; raises ``CalibrationError`` (naming the calibrate
    command) when neither ``calibration`` nor a calibration stored for ``arm_id`` exists."""
    from se_robot.hardware.serial_robot import SerialRobot

    return SerialRobot(cfg.arm, cfg.port, cfg.calibration or None, arm_id=cfg.arm_id or None,
                       timeout_s=cfg.bus_timeout_s, retries=cfg.bus_retries)


class ArmNode(ArmServerNode):
    def __init__(self, node_name: str = "arm_node", **kwargs: Any):
        super().__init__(node_name, ArmParams, make_serial_robot, **kwargs)


def main(args: list[str] | None = None) -> int:
    return run_arm_server(ArmNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
