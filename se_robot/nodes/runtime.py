"""What every se_robot node shares: QoS profiles, start-up and shutdown.

QoS choices (why):
- sensor data (images, joint states): best effort, keep last 1-5, volatile. A late frame is
  worthless; retransmitting it only delays the next one.
- commands: reliable, keep last 1. Only the newest target matters, but it must not be lost on a
  quiet link, and the watchdog covers a dead commander.
- latched state (e-stop): reliable, transient local, keep last 1, so a node that starts later
  still learns the arm is stopped.
- learner traffic (transitions, weights): reliable, keep last 256 chunks; weights are transient
  local so an actor that starts late receives the current policy.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Protocol

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

SENSOR_QOS = qos_profile_sensor_data
IMAGE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2, reliability=ReliabilityPolicy.BEST_EFFORT,
                       durability=DurabilityPolicy.VOLATILE)
COMMAND_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
STREAM_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=256, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)
WEIGHTS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=256, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)


def ensure_ament_prefix() -> None:
    """The PyPI wheels install share/ under sys.prefix; ament_index needs it on AMENT_PREFIX_PATH."""
    prefixes = os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)
    if sys.prefix not in prefixes:
        os.environ["AMENT_PREFIX_PATH"] = os.pathsep.join([p for p in prefixes if p] + [sys.prefix])


class ClosableNode(Protocol):
    """Every se_robot node: an rclpy ``Node`` with ``close()`` (stop its threads, release devices)."""

    def close(self) -> None: ...
    def destroy_node(self) -> None: ...


def run_node(make_node: Callable[[], ClosableNode], args: list[str] | None = None, threads: int = 4) -> int:
    """Init rclpy, spin the node on a multi-threaded executor until Ctrl-C/SIGTERM, clean up.

    Service callbacks that wait (``~/home``) need a second thread while the control timer runs,
    hence the multi-threaded executor. Returns the node's ``exit_code`` if it has one (a node whose
    worker died shuts its context down and sets it, so a supervisor sees a failure).
    """
    ensure_ament_prefix()
    rclpy.init(args=args)
    node = None
    try:
        node = make_node()
        executor = MultiThreadedExecutor(num_threads=threads)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except SystemExit as e:
        if node is None and e.code not in (None, 0):
            print(e.code, file=sys.stderr)
            return 2
        raise
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
    return int(getattr(node, "exit_code", 0))
