"""RosRobot: the arm behind the topics and services of arm_node / camera_node / sim_node, as a
:class:`se_robot.robot.Robot`, so ``ArmEnv`` drives it exactly as it drives the twin or the bus.

``se_robot.envs.make_env(task, backend="ros", ...)`` builds it with :func:`make_ros_robot`. It
has its own rclpy ``Context`` and node. Joint states, images and task state are
:class:`~se_robot.nodes.runtime.PolledSubscription` s: the caller's thread takes the newest
message from the DDS reader when it reads (no executor callback per message, so the CPU cost
follows the control rate, not the publish rate, and no Python thread competes with the control
loop for the GIL); messages are converted only when asked for. A background executor thread
serves the service clients (home, reset, e-stop), which are quiet between calls.

Clock: stamps are wall-clock seconds (``time.time``; message header stamps), so this process and
the nodes need synchronised clocks (same machine, or chrony/PTP across machines).

Freshness (nothing older is ever reused):
- ``read`` and ``object_state`` return a joint / task state stamped after the last command
  (``send``/``hold``), the last ``home`` or ``reset_scene``, and at most ``max_state_age_s``
  before the call (so a dead node is noticed even when no command was sent). Waiting longer than
  ``stale_timeout_s`` raises :class:`StaleObservationError` naming the topic and the age of its
  newest message. Both topics come at the node's ``state_rate_hz`` (100 Hz by default).
- ``capture`` waits for an image stamped after ``newer_than_s``; when none comes in time it
  returns the newest one flagged ``stale`` (no image at all raises).

Safety: ``send`` runs a local copy of the SafetyFilter against the last measured joints, so the
command it returns (and the reference ``ArmEnv`` decodes the next action against) is what a
SerialRobot or TwinRobot would return; the node applies the authoritative filter again before the
bus. The local ``estop`` latch calls ``arm/estop``, so a teleop button or a fault in this process
stops the arm at the node; going on takes ``arm/reset`` at the node and ``estop.reset()`` here.
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
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from se_robot import ros_params as names
from se_robot.arm import ArmDescription, load_arm
from se_robot.estop import EStop
from se_robot.nodes import conversions as conv
from se_robot.nodes.runtime import COMMAND_QOS, IMAGE_QOS, SENSOR_QOS, PolledSubscription, private_context
from se_robot.robot import Frame, HomingError, ObjectState, RobotNotConnected, RobotState, StaleReading
from se_robot.safety import SafeCommand, SafetyFilter
from se_robot.sim.kinematics import Kinematics
from se_robot.tasks import ResetSample

#: A node that was just launched answers ``arm/home`` before its lifecycle activation finishes:
#: keep asking this long while the answer is HOME_NOT_ACTIVE (an arm left inactive stays an error).
HOME_ACTIVATION_WAIT_S = 5.0

#: The keyword options :func:`make_ros_robot` accepts (a caller splits its options with it).
ROBOT_OPTIONS = frozenset({"namespace", "sim_node_name", "task_state", "camera", "node_name",
                           "discovery_timeout_s", "domain_id", "stale_timeout_s", "max_state_age_s"})


def _stamp_ns(msg: Any) -> int:
    return conv.time_to_ns(msg.header.stamp)


class StaleObservationError(StaleReading):
    """A fresh enough joint state / image / task state did not arrive in time."""


class RosServiceError(RuntimeError):
    """A service of arm_node / sim_node is missing, silent or answered with a failure."""


class RosRobot:
    """See the module docstring. ``task_state``: True/False, or None to detect ``sim/reset_task``
    at connect (``has_object_state`` is then known). ``camera``: the name ``capture`` answers to
    (the one camera on ``camera/image_raw``). ``discovery_timeout_s`` is long because a launch file
    starts the robot's node and the nodes that use it together, and the twin takes seconds to load."""

    realtime = True

    def __init__(self, arm: ArmDescription, *, namespace: str = "", sim_node_name: str = "sim_node",
                 task_state: bool | None = None, camera: str = "scene", node_name: str = "ros_robot",
                 discovery_timeout_s: float = 30.0, domain_id: int | None = None, stale_timeout_s: float = 0.5,
                 max_state_age_s: float = 0.1):
        self.arm = arm
        self.camera_names = (camera,)
        self.namespace = namespace
        self.sim_node_name = sim_node_name
        self.node_name = node_name
        self.discovery_timeout_s = discovery_timeout_s
        self.domain_id = domain_id
        self.stale_timeout_s = stale_timeout_s
        self.max_state_age_s = max_state_age_s
        self._task_state_option = task_state
        self.has_object_state = bool(task_state)
        self.estop = EStop()
        self.safety = SafetyFilter(arm, Kinematics(arm), self.estop)
        self.estop.add_listener(self._latch_node)
        self._subs: dict[str, PolledSubscription] = {}
        self._fresh_after_ns = 0
        self._q_goal: np.ndarray | None = None      # the last safe target this process sent
        self._q_measured: np.ndarray | None = None  # the last joint state read
        self._node: Node | None = None
        self._executor: SingleThreadedExecutor | None = None
        self.counters = {"ros/commands": 0, "ros/stale": 0, "ros/home_retries": 0}

    # ------------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        """Start the node, find ``arm/home`` (arm_node activated, or sim_node) within
        ``discovery_timeout_s``, and detect sim_node's task services when not told."""
        if self._node is not None:
            return
        # Its own context: the robot works the same inside a node process or a plain script.
        self.context = private_context(self.domain_id)
        n = self._node = Node(self.node_name, namespace=self.namespace, context=self.context)
        self._subs = {key: PolledSubscription(n, msg_type, topic, qos, _stamp_ns) for key, msg_type, topic, qos in (
            ("state", JointState, names.JOINT_STATES, SENSOR_QOS), ("image", Image, names.IMAGE, IMAGE_QOS),
            ("task", PoseArray, names.TASK_STATE, SENSOR_QOS))}
        self._cmd_pub = n.create_publisher(Float64MultiArray, names.JOINT_COMMANDS, COMMAND_QOS)
        self._home = n.create_client(Trigger, names.HOME_SERVICE)
        self._estop_client = n.create_client(Trigger, names.ESTOP_SERVICE)
        self._reset_task = n.create_client(Trigger, names.TASK_RESET_SERVICE)
        ns = self.namespace.rstrip("/")
        self._sim_params = n.create_client(SetParameters, f"{ns}/{self.sim_node_name}/set_parameters")
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(n)
        self._thread = threading.Thread(target=self._spin, args=(self._executor,), name="ros-robot", daemon=True)
        self._thread.start()
        if not self._home.wait_for_service(timeout_sec=self.discovery_timeout_s):
            service = n.resolve_service_name(names.HOME_SERVICE)
            self.close()
            raise RosServiceError(f"service {service} not found within {self.discovery_timeout_s} s: is "
                                  "arm_node (activated) or sim_node running in this ROS_DOMAIN_ID?")
        if self._task_state_option is None:
            self.has_object_state = self._reset_task.wait_for_service(timeout_sec=1.0)

    def close(self) -> None:
        """Stop this process's node (the arm node's watchdog holds the arm when commands stop)."""
        if self._executor is None:
            return
        self._executor.shutdown(timeout_sec=1.0)
        self._executor = None
        for sub in self._subs.values():
            sub.close()
        self._subs = {}
        self._node.destroy_node()
        self._node = None
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=2.0)

    @property
    def is_connected(self) -> bool:
        return self._node is not None

    @staticmethod
    def _spin(executor: SingleThreadedExecutor) -> None:
        try:
            executor.spin()
        except ExternalShutdownException:
            pass

    def _require(self) -> Node:
        if self._node is None:
            raise RobotNotConnected("RosRobot: call connect() first")
        return self._node

    # ------------------------------------------------------------------ freshness
    def _wait(self, key: str, newer_than_ns: int, timeout_s: float) -> tuple[Any, int]:
        """The newest message of ``key`` stamped after ``newer_than_ns``, waiting ``timeout_s``."""
        self._require()
        sub = self._subs[key]
        if sub.take_newer(newer_than_ns, timeout_s):
            return sub.latest, sub.latest_stamp_ns
        self.counters["ros/stale"] += 1
        if sub.latest is None:
            raise StaleObservationError(f"no message on {sub.topic} within {timeout_s:.3f} s")
        age_s = (newer_than_ns - sub.latest_stamp_ns) * 1e-9
        raise StaleObservationError(f"stale {sub.topic}: after waiting {timeout_s:.3f} s its newest "
                                    f"message is {age_s:.3f} s older than required")

    def _read_newer_than(self, newer_than_ns: int, timeout_s: float) -> RobotState:
        msg, stamp_ns = self._wait("state", newer_than_ns, timeout_s)
        q, qd, effort = conv.msg_to_joint_state(msg, self.arm.joint_names)
        self._q_measured = q
        return RobotState(q, qd, effort, stamp_ns * 1e-9)

    def _fresh_floor_ns(self) -> int:
        """Messages stamped at or before this are not fresh (see the module docstring)."""
        return max(self._fresh_after_ns, time.time_ns() - int(self.max_state_age_s * 1e9))

    def _mark_fresh(self) -> None:
        """From now on, only messages stamped after this moment count as fresh."""
        self._fresh_after_ns = time.time_ns()

    # ------------------------------------------------------------------ Robot
    def now(self) -> float:
        return time.time()

    def read(self) -> RobotState:
        return self._read_newer_than(self._fresh_floor_ns(), self.stale_timeout_s)

    def _measured(self) -> np.ndarray:
        return self._q_measured if self._q_measured is not None else self.read().positions

    def send(self, q_rad: np.ndarray) -> SafeCommand:
        """Filtered against the last joint state read (a fresh one if none was read yet)."""
        cmd = self.safety.filter(q_rad, self._measured())
        self._q_goal = cmd.positions
        self._publish(cmd.positions)
        return cmd

    def hold(self, reason: str) -> SafeCommand:
        """Re-send the last safe goal (the measured joints if this process sent none): the node's
        watchdog stays fed and the arm stays there."""
        cmd = self.safety.hold(self._q_goal if self._q_goal is not None else self._measured(), reason)
        self._publish(cmd.positions)
        return cmd

    def _publish(self, q: np.ndarray) -> None:
        self._require()
        self._mark_fresh()
        if not self.estop.latched:  # the node refuses them too; not sending keeps its log quiet
            self._cmd_pub.publish(conv.array_msg(q))
            self.counters["ros/commands"] += 1

    def trigger_estop(self, reason: str) -> None:
        self.estop.latch(reason)

    def _latch_node(self, reason: str) -> None:
        """EStop listener: latch the node that drives the bus (fire and forget)."""
        if self._node is not None:
            self._node.get_logger().error(f"e-stop: {reason}")
            self._estop_client.call_async(Trigger.Request())

    def advance(self, dt_s: float) -> None:
        """Real time passes by itself."""

    def prefetch(self) -> None:
        """Decode the newest joint state, task state and image already received, so the reads
        after the tick only take what arrived in the last moments (the control clock calls this
        in its spin before the tick)."""
        if self._node is None:
            return
        for sub in self._subs.values():
            sub.prefetch()

    def capture(self, camera: str, size: int, newer_than_s: float, timeout_s: float) -> Frame:
        """The camera's native image (the caller crops and resizes to ``size``)."""
        if camera not in self.camera_names:
            raise ValueError(f"RosRobot has camera {self.camera_names[0]!r} on {names.IMAGE}, not {camera!r}")
        try:
            newer_than_ns = int(newer_than_s * 1e9) if np.isfinite(newer_than_s) else -1  # render(): any frame
            msg, stamp_ns = self._wait("image", newer_than_ns, timeout_s)
            stale = False
        except StaleObservationError:
            sub = self._subs["image"]
            if sub.latest is None:
                raise
            msg, stamp_ns = sub.latest, sub.latest_stamp_ns
            stale = True
        return Frame(conv.msg_to_image(msg), stamp_ns * 1e-9, stale)

    def object_state(self) -> ObjectState | None:
        """Target and cube from ``sim/task_state`` (sim_node), or None without one."""
        if not self.has_object_state:
            return None
        msg, _ = self._wait("task", self._fresh_floor_ns(), self.stale_timeout_s)
        target, cube = (np.array([p.position.x, p.position.y, p.position.z]) for p in msg.poses[:2])
        return ObjectState(cube_pos=cube, target_pos=target)

    def reset_scene(self, rng: np.random.Generator) -> ResetSample | None:
        """Seed sim_node's sampler from ``rng`` and call ``sim/reset_task`` (arm at home, objects
        resampled); None without sim_node. ``cube_yaw`` is NaN: ``sim/task_state`` has positions only."""
        if not self.has_object_state:
            return None
        seed = int(rng.integers(0, 2**31 - 1))
        request = SetParameters.Request(parameters=[ParameterMsg(
            name="seed", value=ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=seed))])
        result = self._call(self._sim_params, request, 5.0).results[0]
        if not result.successful:
            raise RosServiceError(f"setting {self.sim_node_name} seed={seed}: {result.reason}")
        answer = self._call(self._reset_task, Trigger.Request(), 10.0)
        if not answer.success:
            raise RosServiceError(f"{self._reset_task.srv_name} failed: {answer.message}")
        self._q_goal = self.arm.home.copy()
        self._mark_fresh()
        objects = self.object_state()
        return ResetSample(cube_pos=objects.cube_pos, cube_yaw=float("nan"), target_pos=objects.target_pos)

    def home(self, tolerance_rad: float, timeout_s: float) -> None:
        """``arm/home`` (the node moves at its ``home_speed_rad_s`` and checks its tolerance), then
        a fresh joint state must be within ``tolerance_rad`` of home."""
        deadline = time.monotonic() + HOME_ACTIVATION_WAIT_S
        try:
            answer = self._call(self._home, Trigger.Request(), timeout_s)
            while (not answer.success and answer.message.startswith(names.HOME_NOT_ACTIVE)
                   and time.monotonic() < deadline):
                self.counters["ros/home_retries"] += 1
                time.sleep(0.1)
                answer = self._call(self._home, Trigger.Request(), timeout_s)
        except RosServiceError as e:
            raise HomingError(str(e)) from None
        if not answer.success:
            raise HomingError(f"{self._home.srv_name} failed: {answer.message}")
        self._q_goal = self.arm.home.copy()
        self._mark_fresh()
        q = self._read_newer_than(self._fresh_after_ns, self.stale_timeout_s + 1.0).positions
        err = np.abs(q - self.arm.home)
        if np.any(err > tolerance_rad):
            worst = int(np.argmax(err))
            raise HomingError(f"after {self._home.srv_name}, {self.arm.joint_names[worst]} is {err[worst]:.3f} rad "
                              f"from home (tolerance {tolerance_rad})")

    def _call(self, client: Any, request: Any, timeout_s: float) -> Any:
        self._require()
        if not client.wait_for_service(timeout_sec=min(timeout_s, 5.0)):
            raise RosServiceError(f"service {client.srv_name} is not available")
        future = client.call_async(request)
        done = threading.Event()
        future.add_done_callback(lambda f: done.set())
        if not done.wait(timeout_s):
            client.remove_pending_request(future)
            raise RosServiceError(f"service {client.srv_name} did not answer within {timeout_s} s")
        return future.result()

    def diagnostics(self) -> dict[str, float]:
        out = {k: float(v) for k, v in self.counters.items()}
        out.update({f"safety/{k}": float(v) for k, v in self.safety.stats.items()})
        out["safety/estop_latched"] = float(self.estop.latched)
        return out


def make_ros_robot(arm: str | ArmDescription = "so101", **options: Any) -> RosRobot:
    """A connected :class:`RosRobot` on the topics of a running arm_node + camera_node, or sim_node.

    ``options``: any of :data:`ROBOT_OPTIONS` (see :class:`RosRobot`); others are refused by name.
    """
    unknown = sorted(set(options) - ROBOT_OPTIONS)
    if unknown:
        raise TypeError(f"make_ros_robot: unknown options {unknown}; allowed: {sorted(ROBOT_OPTIONS)}")
    robot = RosRobot(load_arm(arm) if isinstance(arm, str) else arm, **options)
    robot.connect()
    return robot
