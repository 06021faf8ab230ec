"""PolledSubscription over real DDS on a private domain: the newest sample, a timeout on a quiet
topic, no executor ever running its callback, and a close that wakes a waiting reader."""

from __future__ import annotations

import threading
import time

import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import JointState

from se_robot.nodes import conversions as conv
from se_robot.nodes.runtime import SENSOR_PUBLISHER_QOS, SENSOR_QOS, PolledSubscription, ensure_ament_prefix
from tests.support import ros_harness as harness

pytestmark = pytest.mark.timeout(120)


def _stamp(msg: JointState) -> int:
    return conv.time_to_ns(msg.header.stamp)


@pytest.fixture()
def ros():
    ensure_ament_prefix()
    context = Context()
    rclpy.init(args=[], context=context, domain_id=harness.pick_domain_id(9))
    node = Node("polled_test", context=context)
    pub = node.create_publisher(JointState, "joint_states", SENSOR_PUBLISHER_QOS)
    polled = PolledSubscription(node, JointState, "joint_states", SENSOR_QOS, _stamp)
    # An executor spinning the same node must leave the polled subscription alone.
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        yield node, pub, polled
    finally:
        executor.shutdown(timeout_sec=2.0)
        polled.close()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        spinner.join(timeout=5.0)


def publish(pub, stamp_ns: int) -> None:
    msg = JointState()
    msg.header = conv.header(stamp_ns, "base_link")
    msg.name, msg.position = ["a"], [float(stamp_ns % 1000)]
    pub.publish(msg)


def test_takes_the_newest_sample_and_times_out_on_a_quiet_topic(ros):
    node, pub, polled = ros
    deadline = time.monotonic() + 30.0
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert polled.take_newer(-1, 0.0) is False and polled.latest is None
    for k in range(1, 4):
        publish(pub, 10_000 + k)
    assert polled.take_newer(10_000, 30.0)
    deadline = time.monotonic() + 30.0   # all three may not have arrived at the first take
    while polled.latest_stamp_ns != 10_003 and time.monotonic() < deadline:
        polled.take_newer(10_000, 1.0)
    assert polled.latest_stamp_ns == 10_003
    assert polled.latest.position[0] == 3.0
    t0 = time.monotonic()
    assert polled.take_newer(10_003, 0.2) is False   # nothing newer comes
    assert time.monotonic() - t0 >= 0.2
    assert polled.latest_stamp_ns == 10_003          # the older sample stays readable


def test_a_sample_published_while_waiting_ends_the_wait(ros):
    node, pub, polled = ros
    deadline = time.monotonic() + 30.0
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    timer = threading.Timer(0.3, publish, args=(pub, 20_000))
    timer.start()
    try:
        assert polled.take_newer(19_999, 30.0)
    finally:
        timer.join()
    assert polled.latest_stamp_ns == 20_000


def test_close_wakes_a_waiting_reader(ros):
    node, pub, polled = ros
    result: list[bool] = []
    reader = threading.Thread(target=lambda: result.append(polled.take_newer(10**18, 60.0)))
    reader.start()
    time.sleep(0.3)
    polled.close()
    reader.join(timeout=30.0)
    assert not reader.is_alive() and result == [False]


def test_prefetch_decodes_what_arrived_without_waiting(ros):
    node, pub, polled = ros
    deadline = time.monotonic() + 30.0
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    polled.prefetch()                      # nothing there: returns at once, nothing taken
    assert polled.latest is None
    publish(pub, 30_000)
    deadline = time.monotonic() + 30.0
    while polled.latest is None and time.monotonic() < deadline:
        polled.prefetch()
        time.sleep(0.01)
    assert polled.latest_stamp_ns == 30_000
    # the sample is taken: a read after it finds it without another message
    assert polled.take_newer(29_999, 0.0)
