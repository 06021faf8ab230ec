"""RosRobot against a scripted arm node in this process, over real DDS on a private domain:
waiting out a node's activation (and not more), freshness errors, the local filter, the e-stop."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import rclpy  # noqa: F401 - required: CI must fail, not skip, without it

from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from se_robot.arm import load_arm  # noqa: E402
from se_robot.nodes import conversions as conv  # noqa: E402
from tests.support import ros_harness as harness  # noqa: E402
from se_robot.nodes.ros_robot import StaleObservationError, make_ros_robot  # noqa: E402
from se_robot.nodes.runtime import COMMAND_QOS, SENSOR_QOS, ensure_ament_prefix  # noqa: E402
from se_robot.robot import HomingError, Robot  # noqa: E402
from se_robot.ros_params import HOME_NOT_ACTIVE  # noqa: E402

pytestmark = pytest.mark.timeout(120)

DOMAIN = harness.pick_domain_id(6)
ARM = load_arm("so101")


class ScriptedArm:
    """Serves ``arm/home`` (answering "not active" for ``inactive_for_s`` from the first call)
    and ``arm/estop``, publishes home joint states at 50 Hz while
    ``publishing`` is set, and records the commands it receives."""

    def __init__(self, inactive_for_s: float):
        ensure_ament_prefix()
        self.inactive_for_s = inactive_for_s
        self.active_at: float | None = None
        self.publishing = threading.Event()
        self.publishing.set()
        self.commands: list[np.ndarray] = []
        self.estops = 0
        self.context = Context()
        rclpy.init(context=self.context, domain_id=DOMAIN)
        n = self.node = Node("scripted_arm", context=self.context)
        self._pub = n.create_publisher(JointState, "joint_states", SENSOR_QOS)
        n.create_subscription(Float64MultiArray, "arm/joint_commands",
                              lambda m: self.commands.append(np.array(m.data)), COMMAND_QOS)
        n.create_service(Trigger, "arm/home", self._home)
        n.create_service(Trigger, "arm/estop", self._estop)
        n.create_timer(0.02, self._tick)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(n)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _tick(self) -> None:
        if self.publishing.is_set():
            self._pub.publish(conv.joint_state_to_msg(ARM.joint_names, ARM.home, None, None, time.time_ns()))

    def _home(self, request, response):
        if self.active_at is None:
            self.active_at = time.monotonic() + self.inactive_for_s
        if time.monotonic() < self.active_at:
            response.success, response.message = False, f"{HOME_NOT_ACTIVE} (configure and activate it first)"
        else:
            response.success, response.message = True, "homed"
        return response

    def _estop(self, request, response):
        self.estops += 1
        response.success = True
        return response

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=2.0)


@pytest.fixture
def rig():
    made = []

    def start(inactive_for_s: float = 0.0):
        arm = ScriptedArm(inactive_for_s)
        made.append(arm)
        robot = make_ros_robot("so101", domain_id=DOMAIN, discovery_timeout_s=30.0, stale_timeout_s=2.0)
        made.append(robot)
        return arm, robot

    yield start
    for thing in reversed(made):
        thing.close()


def test_unknown_options_are_refused_by_name():
    with pytest.raises(TypeError, match="stale_timout_s"):
        make_ros_robot("so101", stale_timout_s=1.0)


def test_home_waits_for_a_node_that_is_still_activating(rig):
    arm, robot = rig(inactive_for_s=0.5)
    assert isinstance(robot, Robot) and robot.realtime and not robot.has_object_state
    assert robot.reset_scene(np.random.default_rng(0)) is None and robot.object_state() is None
    robot.home(tolerance_rad=0.05, timeout_s=10.0)
    assert robot.diagnostics()["ros/home_retries"] >= 1
    state = robot.read()
    np.testing.assert_allclose(state.positions, ARM.home)
    assert 0 < robot.now() - state.stamp_s < 2.0


def test_home_reports_an_arm_left_inactive(rig):
    _, robot = rig(inactive_for_s=1e9)
    with pytest.raises(HomingError, match="not active"):
        robot.home(tolerance_rad=0.05, timeout_s=10.0)


def test_a_silent_joint_state_topic_is_an_error_naming_it(rig):
    arm, robot = rig()
    robot.read()
    arm.publishing.clear()
    time.sleep(0.3)
    robot.stale_timeout_s = 0.3
    with pytest.raises(StaleObservationError, match=r"joint_states.*older than required"):
        robot.read()


def test_send_applies_the_local_filter_and_the_estop_latches_the_node(rig):
    arm, robot = rig()
    robot.home(tolerance_rad=0.05, timeout_s=10.0)
    far = ARM.home + 1.0
    cmd = robot.send(far)
    assert cmd.clipped and not np.allclose(cmd.positions, far)
    deadline = time.monotonic() + 5.0
    while not arm.commands and time.monotonic() < deadline:
        time.sleep(0.02)
    np.testing.assert_allclose(arm.commands[-1], cmd.positions)
    robot.trigger_estop("operator pressed e-stop")
    deadline = time.monotonic() + 5.0
    while arm.estops == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert arm.estops == 1
    sent = len(arm.commands)
    assert robot.send(ARM.home).held
    time.sleep(0.3)
    assert len(arm.commands) == sent  # latched: nothing goes out
