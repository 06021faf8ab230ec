"""teleop_node: a teleoperation device (keyboard, gamepad, SpaceMouse, leader arm) drives the arm.

Cartesian devices' ``ee_delta`` actions become joint targets with the same ``ActionDecoder`` the
envs use (IK seeded from the last command); a leader arm gives joint targets directly. Targets
are published on ``arm/joint_commands`` only while the operator is moving the device, so letting
go stops the stream and arm_node's watchdog holds the arm. The device's e-stop button calls
``arm/estop`` (the latch lives in arm_node / sim_node, where it stops the bus).

The keyboard reads a terminal: standard input, or the tty named by ``device_path``. Under
``ros2 launch`` standard input is a pipe, which would read nothing forever, so the node refuses
to start then and says what to do (teleop.launch.py runs it in a terminal of its own).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from se_robot import ros_params as names
from se_robot.nodes import conversions as conv
from se_robot.nodes.params import NodeParams
from se_robot.nodes.runtime import COMMAND_QOS, SENSOR_QOS, run_node
from se_robot.ros_params import TeleopParams


class TeleopNode(Node):
    def __init__(self, node_name: str = "teleop_node", **kwargs: Any):
        super().__init__(node_name, **kwargs)
        from se_robot.arm import load_arm
        from se_robot.config import from_dict
        from se_robot.envs.spaces import ActionDecoder, EnvConfig
        from se_robot.sim.kinematics import Kinematics
        from se_robot.estop import EStop
        from se_robot.teleop.devices import make_teleop

        self.params = NodeParams(self, (TeleopParams,))
        p = self.params.get(TeleopParams)
        if p.device == "keyboard" and not p.device_path and not os.isatty(0):
            raise SystemExit(f"{self.get_name()}: device keyboard reads keys from a terminal, and this process's "
                             "standard input is not one (under ros2 launch it is a pipe). Launch it with "
                             "teleop.launch.py terminal:='xterm -e' (the default), run `ros2 run se_robot "
                             "teleop_node` in a terminal of its own, or set device_path to a tty (/dev/pts/N).")
        self.arm = load_arm(p.arm)
        self.decoder = ActionDecoder(self.arm, Kinematics(self.arm),
                                     from_dict(EnvConfig, {"action_mode": "ee_delta", "ee_step_m": p.ee_step_m}))
        self.estop = EStop()
        self.estop.add_listener(self._call_estop)
        self.device = make_teleop(p.device, device=p.device_path or None, estop=self.estop, speed=p.speed,
                                  leader_arm=p.arm, leader_arm_id=p.leader_arm_id or None).connect()
        self._q: np.ndarray | None = None
        self._q_cmd: np.ndarray | None = None
        self._pub = self.create_publisher(Float64MultiArray, names.JOINT_COMMANDS, COMMAND_QOS)
        self.create_subscription(JointState, names.JOINT_STATES, self._on_state, SENSOR_QOS)
        self._estop_client = self.create_client(Trigger, names.ESTOP_SERVICE)
        self.create_timer(1.0 / p.rate_hz, self._tick)

    def _on_state(self, msg: JointState) -> None:
        self._q, _, _ = conv.msg_to_joint_state(msg, self.arm.joint_names)

    def _call_estop(self, reason: str) -> None:
        self.get_logger().error(f"e-stop from the teleop device: {reason}")
        self._estop_client.call_async(Trigger.Request())

    def _tick(self) -> None:
        if self._q is None:
            return
        cmd = self.device.poll(self._q)
        if not cmd.active:
            self._q_cmd = None  # re-seed from the measured pose when the operator moves again
            return
        if cmd.joint_targets is not None:
            target = np.asarray(cmd.joint_targets, dtype=np.float64)
        else:
            seed = self._q if self._q_cmd is None else self._q_cmd
            target = self.decoder.decode(cmd.action, seed)
        self._q_cmd = target
        self._pub.publish(conv.array_msg(target))

    def close(self) -> None:
        self.device.disconnect()


def main(args: list[str] | None = None) -> int:
    return run_node(TeleopNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
