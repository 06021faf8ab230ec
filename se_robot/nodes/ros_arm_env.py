"""The rclpy side of RosArmEnv: subscriptions, the command publisher and service clients.

``RosArmEnv`` (``se_robot.envs.ros_env``) holds the env logic and never imports rclpy; this module
gives it a :class:`RclpyLink` over the topics that arm_node, camera_node and sim_node serve, and
``make_ros_env`` is what ``se_robot.envs.make_env(task, backend="ros")`` calls. The link spins its
own node on a background executor thread, so ``env.step`` can block on a condition variable while
messages keep arriving; messages are kept raw and converted only when the env asks for them.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import rclpy
from geometry_msgs.msg import PoseArray
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from se_robot import ros_params as names
from se_robot.arm import load_arm
from se_robot.envs.ros_env import Observation, RosArmEnv, StaleObservationError
from se_robot.nodes import conversions as conv
from se_robot.nodes.runtime import COMMAND_QOS, IMAGE_QOS, SENSOR_QOS, ensure_ament_prefix

_TOPIC_LABEL = {"state": names.JOINT_STATES, "image": names.IMAGE, "task": names.TASK_STATE}


class RclpyLink:
    """RobotLink over ROS 2. ``task_state``: True/False, or None to detect ``sim/reset_task``."""

    def __init__(self, joint_names: list[str], *, namespace: str = "", sim_node_name: str = "sim_node",
                 task_state: bool | None = None, node_name: str = "ros_arm_env", discovery_timeout_s: float = 5.0,
                 domain_id: int | None = None):
        ensure_ament_prefix()
        # Its own context: the env works the same inside a node process or a plain script.
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.joint_names = list(joint_names)
        self.node = Node(node_name, namespace=namespace, context=self.context)
        self._cond = threading.Condition()
        self._latest: dict[str, Any] = {}
        self._stamp: dict[str, int] = {}
        self._received: dict[str, int] = {}
        n = self.node
        n.create_subscription(JointState, names.JOINT_STATES, lambda m: self._store("state", m), SENSOR_QOS)
        n.create_subscription(Image, names.IMAGE, lambda m: self._store("image", m), IMAGE_QOS)
        n.create_subscription(PoseArray, names.TASK_STATE, lambda m: self._store("task", m), SENSOR_QOS)
        self._cmd_pub = n.create_publisher(Float64MultiArray, names.JOINT_COMMANDS, COMMAND_QOS)
        self._home = n.create_client(Trigger, names.HOME_SERVICE)
        self._estop = n.create_client(Trigger, names.ESTOP_SERVICE)
        self._reset_task = n.create_client(Trigger, names.TASK_RESET_SERVICE)
        ns = namespace.rstrip("/")
        self._sim_params = n.create_client(SetParameters, f"{ns}/{sim_node_name}/set_parameters")
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(n)
        self._thread = threading.Thread(target=self._spin, name="ros-arm-env", daemon=True)
        self._thread.start()
        if not self._home.wait_for_service(timeout_sec=discovery_timeout_s):
            self.close()
            raise RuntimeError(f"service {n.resolve_service_name(names.HOME_SERVICE)} not found within "
                               f"{discovery_timeout_s} s: is arm_node (activated) or sim_node running in "
                               "this ROS_DOMAIN_ID?")
        if task_state is None:
            task_state = self._reset_task.wait_for_service(timeout_sec=1.0)
        self.has_task_state = bool(task_state)

    def _spin(self) -> None:
        try:
            self._executor.spin()
        except Exception:  # noqa: BLE001 - shutdown races end the thread quietly
            pass

    def _store(self, key: str, msg: Any) -> None:
        stamp = conv.time_to_ns(msg.header.stamp)
        with self._cond:
            self._latest[key], self._stamp[key] = msg, stamp
            self._received[key] = time.time_ns()
            self._cond.notify_all()

    # ------------------------------------------------------------------ RobotLink
    def send_command(self, q: np.ndarray) -> int:
        t = time.time_ns()
        self._cmd_pub.publish(conv.array_msg(q))
        return t

    def wait_observation(self, newer_than_ns: int, need_image: bool, need_task: bool,
                         timeout_s: float) -> Observation:
        keys = ["state"] + (["image"] if need_image else []) + (["task"] if need_task else [])
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                missing = [k for k in keys if self._stamp.get(k, -1) <= newer_than_ns]
                if not missing:
                    msgs = {k: self._latest[k] for k in keys}
                    stamps = {k: self._stamp[k] for k in keys}
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StaleObservationError(self._stale_reason(missing, newer_than_ns, timeout_s))
                self._cond.wait(remaining)
        q, qd, _ = conv.msg_to_joint_state(msgs["state"], self.joint_names)
        obs = Observation(q=q, qd=qd, state_ns=stamps["state"])
        if need_image:
            obs.image, obs.image_ns = conv.msg_to_image(msgs["image"]), stamps["image"]
        if need_task:
            poses = msgs["task"].poses
            obs.target_pos = np.array([poses[0].position.x, poses[0].position.y, poses[0].position.z])
            obs.cube_pos = np.array([poses[1].position.x, poses[1].position.y, poses[1].position.z])
            obs.task_ns = stamps["task"]
        return obs

    def _stale_reason(self, missing: list[str], newer_than_ns: int, timeout_s: float) -> str:
        parts = []
        for k in missing:
            topic = self.node.resolve_topic_name(_TOPIC_LABEL[k])
            if k not in self._stamp:
                parts.append(f"no message on {topic} yet")
            else:
                parts.append(f"newest {topic} is {(newer_than_ns - self._stamp[k]) * 1e-9:.3f} s older than the command")
        return f"stale observation after waiting {timeout_s:.3f} s: " + "; ".join(parts)

    def _call(self, client: Any, request: Any, timeout_s: float) -> Any:
        if not client.wait_for_service(timeout_sec=min(timeout_s, 5.0)):
            raise RuntimeError(f"service {client.srv_name} is not available")
        future = client.call_async(request)
        done = threading.Event()
        future.add_done_callback(lambda f: done.set())
        if not done.wait(timeout_s):
            client.remove_pending_request(future)
            raise TimeoutError(f"service {client.srv_name} did not answer within {timeout_s} s")
        return future.result()

    def reset_task(self, seed: int | None) -> tuple[bool, str]:
        if seed is not None:
            req = SetParameters.Request(parameters=[ParameterMsg(
                name="seed", value=ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=int(seed)))])
            result = self._call(self._sim_params, req, 5.0).results[0]
            if not result.successful:
                return False, f"setting seed={seed}: {result.reason}"
        res = self._call(self._reset_task, Trigger.Request(), 10.0)
        return res.success, res.message

    def home(self, timeout_s: float) -> tuple[bool, str]:
        res = self._call(self._home, Trigger.Request(), timeout_s)
        return res.success, res.message

    def estop(self, reason: str) -> None:
        """Latch the arm node's e-stop (fire and forget: called from the EStop's listener)."""
        self.node.get_logger().error(f"e-stop: {reason}")
        self._estop.call_async(Trigger.Request())

    def close(self) -> None:
        if self._executor is None:
            return
        self._executor.shutdown(timeout_sec=1.0)
        self._executor = None
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=2.0)


_LINK_KEYS = ("namespace", "sim_node_name", "task_state", "discovery_timeout_s", "node_name", "domain_id")
_ENV_KEYS = ("max_episode_steps", "stale_timeout_s", "strict_freshness", "home_tolerance_rad")


def make_ros_env(task: str = "reach", arm: str = "so101", **options: Any) -> RosArmEnv:
    """RosArmEnv on the topics of a running arm_node + camera_node, or sim_node.

    ``options``: EnvConfig options (obs_mode, image_size, action_mode, control_hz, ...), the
    env's timing options (max_episode_steps, stale_timeout_s, strict_freshness,
    home_tolerance_rad) and the link's (namespace, sim_node_name, task_state).
    """
    arm_desc = load_arm(arm)
    link_kw = {k: options.pop(k) for k in _LINK_KEYS if k in options}
    env_kw = {k: options.pop(k) for k in _ENV_KEYS if k in options}
    link = RclpyLink(arm_desc.joint_names, **link_kw)
    try:
        return RosArmEnv(link, task, arm_desc, **env_kw, **options)
    except Exception:
        link.close()
        raise
