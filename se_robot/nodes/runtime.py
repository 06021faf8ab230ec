"""What every se_robot node shares: QoS profiles, start-up and shutdown.

QoS choices (why):
- sensor data (joint states, images, camera info, task state, diagnostics) is published reliable,
  keep last N, volatile: a reliable publisher serves a subscriber of either reliability, and most
  tools subscribe with the default QoS (reliable) -- MoveIt's state monitor, ``ros2 bag record``,
  a user's script -- which would receive nothing from a best-effort publisher. Keep-last bounds
  what a slow reader can hold up. Each of these publishers declares ROS 2's standard QoS override
  parameters (``qos_overrides.<topic>.publisher.reliability|history|depth``), so a user who wants
  best effort on a lossy link sets it per topic in a parameters file, without code.
- se_robot's own sensor subscribers are best effort, keep last few: they take the newest message,
  and a best-effort subscriber matches a publisher of either kind, whatever a user overrode.
- commands: reliable, keep last 1. Only the newest target matters, but it must not be lost on a
  quiet link, and the watchdog covers a dead commander.
- latched state (e-stop): reliable, transient local, keep last 1, so a node that starts later
  still learns the arm is stopped.
- learner traffic (transitions, weights): reliable, keep last 256 chunks; weights are transient
  local so an actor that starts late receives the current policy.

Shutdown (why it is ours): rclpy's own SIGINT handler invalidates the context at once, while the
nodes' worker threads (camera, learner) may be publishing, which printed ``RCLError: ... context
is invalid`` tracebacks on every Ctrl-C under ``ros2 launch``. :func:`run_node` takes SIGINT and
SIGTERM itself and stops in order: executor, node threads, node, context.
"""

from __future__ import annotations

import copy
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Protocol

import rclpy
from rclpy.callback_groups import CallbackGroup
from rclpy.context import Context
from rclpy.guard_condition import GuardCondition
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.serialization import deserialize_message
from rclpy.signals import SignalHandlerOptions

# Subscribers of sensor data (best effort: matches reliable and best-effort publishers).
SENSOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.BEST_EFFORT,
                        durability=DurabilityPolicy.VOLATILE)
IMAGE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2, reliability=ReliabilityPolicy.BEST_EFFORT,
                       durability=DurabilityPolicy.VOLATILE)
# Publishers of sensor data (reliable: a default-QoS subscriber receives them); see sensor_publisher.
SENSOR_PUBLISHER_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE,
                                  durability=DurabilityPolicy.VOLATILE)
IMAGE_PUBLISHER_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2, reliability=ReliabilityPolicy.RELIABLE,
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

class _NeverByExecutor(CallbackGroup):
    """A callback group no executor ever runs: its subscriptions are read with :class:`PolledSubscription`."""

    def can_execute(self, entity: Any) -> bool:
        return False

    def beginning_execution(self, entity: Any) -> bool:
        return False

    def ending_execution(self, entity: Any) -> None:
        pass


class PolledSubscription:
    """A subscription whose reader takes the newest message itself, when it needs one.

    Why not an executor callback: rclpy's Python executors cost a few hundred microseconds of
    interpreter time per message (wait-set rebuild, task, callback), all under the GIL. A client
    that hears joint states and task state at 200 Hz and images at 60 Hz took 7-9 ms of CPU per
    20 ms control step that way (3 ms polled) and took the GIL from the control loop at every
    message, though the loop reads at 50 Hz. Here the messages wait in the DDS reader's keep-last history
    (``qos.depth``) and cost nothing until :meth:`take_newer` drains it: the work follows the
    control rate, not the publish rate, and nothing runs behind the control loop's back.

    The wait is rclpy's own wait set (``_rclpy.WaitSet``, the one ``rclpy.wait_for_message`` uses,
    with a guard condition so :meth:`close` wakes it); the GIL is released while it waits.
    Thread safety: one taker at a time (a lock); :meth:`close` wakes a waiting taker.
    """

    def __init__(self, node: Node, msg_type: Any, topic: str, qos: QoSProfile, stamp_ns: Callable[[Any], int]):
        self.node = node
        self._stamp_ns = stamp_ns
        self.sub = node.create_subscription(msg_type, topic, lambda msg: None, qos,
                                            callback_group=_NeverByExecutor())
        self._wake = GuardCondition(None, None, node.context)
        self._lock = threading.Lock()
        self._closed = False
        self.latest: Any = None
        self.latest_stamp_ns = -1

    @property
    def topic(self) -> str:
        return self.sub.topic_name

    def _drain(self) -> None:
        """Take every message the reader holds, serialized, and deserialize only the last (the
        newest: one publisher's samples arrive in order); older ones cost a copy, not a decode."""
        handle, last = self.sub.handle, None
        while True:
            taken = handle.take_message(self.sub.msg_type, True)
            if taken is None:
                break
            last = taken[0]
        if last is not None:
            msg = deserialize_message(last, self.sub.msg_type)
            stamp = self._stamp_ns(msg)
            if stamp >= self.latest_stamp_ns:
                self.latest, self.latest_stamp_ns = msg, stamp

    def take_newer(self, newer_than_ns: int, timeout_s: float) -> bool:
        """Drain the reader, waiting up to ``timeout_s`` for a message stamped after
        ``newer_than_ns``; True when :attr:`latest` is such a message."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            context = self.node.context.handle
            with context, self.sub.handle, self._wake.handle:
                wait_set = _rclpy.WaitSet(1, 1, 0, 0, 0, 0, context)
                while not self._closed:
                    self._drain()
                    if self.latest_stamp_ns > newer_than_ns:
                        return True
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    wait_set.clear_entities()
                    wait_set.add_subscription(self.sub.handle)
                    wait_set.add_guard_condition(self._wake.handle)
                    wait_set.wait(int(remaining * 1e9))
        return False

    def prefetch(self) -> None:
        """Drain the reader now without waiting (see :meth:`RosRobot.prefetch`); a no-op when
        another thread is taking or the subscription is closed."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            if not self._closed:
                with self.sub.handle:
                    self._drain()
        finally:
            self._lock.release()

    def close(self) -> None:
        """Wake a waiting taker and destroy the subscription once it has let go (once)."""
        if self._closed:
            return
        self._closed = True
        self._wake.trigger()
        with self._lock:
            self.node.destroy_subscription(self.sub)
            self._wake.destroy()


#: Seconds the main thread waits in the executor between looks at the stop flag.
_SPIN_PERIOD_S = 0.1


def sensor_publisher(node: Node, msg_type: Any, topic: str, qos: QoSProfile = SENSOR_PUBLISHER_QOS) -> Any:
    """A publisher with ``qos`` whose history, depth and reliability a user may override from
    parameters (``qos_overrides./<topic>.publisher.reliability: best_effort``). rclpy writes the
    overrides into the profile it is given, so each publisher gets its own copy."""
    return node.create_publisher(msg_type, topic, copy.copy(qos),
                                 qos_overriding_options=QoSOverridingOptions.with_default_policies())


def ensure_ament_prefix() -> None:
    """The PyPI wheels install share/ under sys.prefix; ament_index needs it on AMENT_PREFIX_PATH."""
    prefixes = os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)
    if sys.prefix not in prefixes:
        os.environ["AMENT_PREFIX_PATH"] = os.pathsep.join([p for p in prefixes if p] + [sys.prefix])


def private_context(domain_id: int | None = None) -> Context:
    """An initialised rclpy context of its own for a helper node inside another process (RosRobot,
    the scene operator). It reads no command line: the process's ``--ros-args`` (launch's
    ``__node:=learner_node``) belong to the process's own node, and applied here they gave the
    helper the same name, so two ``learner_node`` showed on the graph. It installs no signal
    handlers either (rclpy installs them for the default context only)."""
    ensure_ament_prefix()
    context = Context()
    rclpy.init(args=[], context=context, domain_id=domain_id)
    return context


class ClosableNode(Protocol):
    """Every se_robot node: an rclpy ``Node`` with ``close()`` (stop its threads, release devices)."""

    context: Context

    def close(self) -> None: ...
    def destroy_node(self) -> None: ...


def _drain(executor: MultiThreadedExecutor, timeout_s: float) -> None:
    """Wait for the callbacks the executor has handed to its threads. ``shutdown`` destroys the
    executor's guard condition first, and a callback still queued then fails when it signals it
    (``InvalidHandle ... destruction was requested``, printed as a never-retrieved exception)."""
    deadline = time.monotonic() + timeout_s
    for future in list(getattr(executor, "_futures", ())):
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)


def run_node(make_node: Callable[[], ClosableNode], args: list[str] | None = None, threads: int = 4) -> int:
    """Init rclpy, spin the node on a multi-threaded executor until SIGINT/SIGTERM or until the
    node shuts its context down, then stop in order (see the module docstring).

    Service callbacks that wait (``~/home``) need a second thread while the control timer runs,
    hence the multi-threaded executor. Returns the node's ``exit_code`` if it has one (a node whose
    worker died shuts its context down and sets it, so a supervisor sees a failure).
    """
    ensure_ament_prefix()
    stop = threading.Event()
    # Kept to the end: under ros2 launch a Ctrl-C brings two SIGINTs (the terminal's and launch's).
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda signum, frame: stop.set())
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    executor = None
    try:
        node = make_node()
        executor = MultiThreadedExecutor(num_threads=threads)
        executor.add_node(node)
        while not stop.is_set() and node.context.ok():
            executor.spin_once(timeout_sec=_SPIN_PERIOD_S)
    except ExternalShutdownException:
        pass   # the node shut its context down (its worker died): exit with its exit_code
    except SystemExit as e:
        if node is None and e.code not in (None, 0):
            print(e.code, file=sys.stderr)
            return 2
        raise
    finally:
        if executor is not None:
            _drain(executor, timeout_s=5.0)
            executor.shutdown(timeout_sec=5.0)   # no callback runs past here
        if node is not None:
            node.close()                         # threads stop while the context is still valid
            node.destroy_node()
        rclpy.try_shutdown()
        # Python puts the default handlers back while the interpreter finalises (DDS teardown takes
        # a moment), and a second SIGINT then killed the process (status -2): ignore them to exit.
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
    return int(getattr(node, "exit_code", 0))
