"""The arm's ROS interface, shared by arm_node (servo bus) and sim_node (MuJoCo twin).

Both nodes serve the same topics and services (names in :mod:`se_robot.ros_params`) from one
lifecycle node class over a :class:`se_robot.robot.Robot`; they differ only in which Robot they
build (``SerialRobot`` or ``TwinRobot``). That is what lets a launch file swap the hardware for
the twin with ``use_sim`` and nothing else.

Lifecycle: configure connects the robot (opens the port and energises the servos holding their
present position, or builds the twin), activate starts accepting commands, deactivate holds
(torque stays on, no motion), cleanup closes the robot. Joint states are published in every
configured state; commands act only while active.

Control loop (one thread of its own, paced by a drift-free ``ControlClock`` at ``state_rate_hz``,
not an executor timer: a timer's every tick went through rclpy's Python executor -- wait-set
rebuild, hand-off to a pool thread -- which cost more CPU than the tick itself and, on a loaded
machine, delayed ticks by tens of milliseconds): let the robot's world advance by the wall-clock
time since the last tick (a no-op on real-time robots; the twin's physics keeps wall-clock
time), read state, publish ``JointState`` (stamped with the wall clock), then send the current
target through ``Robot.send``, which applies the SafetyFilter at the lowest layer. Targets come
from a stream of ``Float64MultiArray`` commands (the newest wins; the watchdog expects one every
``command_timeout_s``), a ``JointTrajectory`` (linear interpolation between points), or
``~/home``. When the stream stops (the commanding node died or hung) the watchdog holds the arm
where it is until the next command.

Every call into the robot holds ``io_lock``: the control timer, the services and sim_node's
camera thread share one robot, and neither the bus nor MuJoCo data may be used by two at once.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from se_robot import ros_params as names
from se_robot.estop import Watchdog
from se_robot.nodes import conversions as conv
from se_robot.nodes.arm_diagnostics import arm_diagnostics, loop_rate_hz
from se_robot.nodes.params import NodeParams
from se_robot.nodes.runtime import COMMAND_QOS, DIAGNOSTICS_QOS, LATCHED_QOS, run_node, sensor_publisher
from se_robot.nodes.trajectory import Trajectory, trajectory_from_msg
from se_robot.robot import ControlClock, Robot, request_realtime


class ArmServerNode(LifecycleNode):
    """The arm's topics, services, watchdog and diagnostics around a :class:`Robot`.

    ``make_robot(cfg)`` builds the (not yet connected) robot from the node's parameters.
    """

    def __init__(self, node_name: str, params_cls: type, make_robot: Callable[[Any], Robot], **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self.params_cls = params_cls
        self.params = NodeParams(self, (params_cls,), on_change=self._on_params)
        self._make_robot = make_robot
        self.robot: Robot | None = None
        self.io_lock = threading.RLock()
        self.active = False
        self._lock = threading.RLock()
        self._mode = "idle"            # idle | stream | trajectory | home
        self._target: np.ndarray | None = None
        self._trajectory: Trajectory | None = None
        self._watchdog: Watchdog | None = None
        self._last_q: np.ndarray | None = None
        self._last_tick_s: float | None = None
        self._counters = {"watchdog_holds": 0, "rejected_commands": 0, "loop_ticks": 0, "bus_errors": 0}
        self._tick_times: deque[float] = deque(maxlen=200)
        self._last_error = ""
        self._srv_group = ReentrantCallbackGroup()
        self._loop_thread: threading.Thread | None = None
        self._loop_stop = threading.Event()
        self._diag_timer = None
        self._estop_pub = None
        self._subs: list[Any] = []
        self._srvs: list[Any] = []

    @property
    def cfg(self) -> Any:
        return self.params.get(self.params_cls)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        robot = None
        try:
            robot = self._make_robot(self.cfg)  # no calibration for the arm id fails here, saying what to run
            with self.io_lock:
                robot.connect()
        except Exception as e:  # noqa: BLE001 - any open failure must fail the transition with its reason
            self.get_logger().error(f"configure failed: {type(e).__name__}: {e}")
            if robot is not None:
                robot.close()
            return TransitionCallbackReturn.FAILURE
        self.robot = robot
        robot.estop.add_listener(lambda reason: self._publish_estop())
        self._watchdog = Watchdog(self.cfg.command_timeout_s)
        self._last_tick_s = None
        self._js_pub = sensor_publisher(self, JointState, names.JOINT_STATES)
        self._estop_pub = self.create_publisher(Bool, names.ESTOP_STATE, LATCHED_QOS)
        self._diag_pub = sensor_publisher(self, DiagnosticArray, names.DIAGNOSTICS, DIAGNOSTICS_QOS)
        self._subs = [
            self.create_subscription(Float64MultiArray, names.JOINT_COMMANDS, self._on_command, COMMAND_QOS,
                                     callback_group=self._srv_group),
            self.create_subscription(JointTrajectory, names.JOINT_TRAJECTORY, self._on_trajectory, 10,
                                     callback_group=self._srv_group),
        ]
        self._srvs = [
            self.create_service(Trigger, names.ESTOP_SERVICE, self._on_estop, callback_group=self._srv_group),
            self.create_service(Trigger, names.RESET_SERVICE, self._on_reset, callback_group=self._srv_group),
            self.create_service(Trigger, names.HOME_SERVICE, self._on_home, callback_group=self._srv_group),
        ]
        self._start_timers()
        self._publish_estop()
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._lock:
            self._mode, self._target, self._trajectory = "idle", None, None
            self.active = True
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._lock:
            self.active = False
            self._mode = "idle"
            self._safe_hold("deactivated")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def _teardown(self) -> None:
        self._stop_loop()  # before taking _lock: its last tick may be waiting for it
        with self._lock:
            self.active = False
            if self._diag_timer is not None:
                self.destroy_timer(self._diag_timer)
            self._diag_timer = None
            for s in self._subs:
                self.destroy_subscription(s)
            for s in self._srvs:
                self.destroy_service(s)
            self._subs, self._srvs = [], []
            if self.robot is not None:
                try:
                    with self.io_lock:
                        self.robot.close()
                finally:
                    self.robot = None

    def close(self) -> None:
        self._teardown()

    def autostart(self) -> None:
        """configure + activate at start (``autostart`` parameter), as launch_ros's LifecycleNode
        events would; a failure leaves the node unconfigured with the reason in the log."""
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def _start_timers(self) -> None:
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
        self._diag_timer = self.create_timer(self.cfg.diagnostics_period_s, self._publish_diagnostics,
                                             callback_group=self._srv_group)
        if self._loop_thread is None:
            self._loop_stop.clear()
            self._loop_thread = threading.Thread(target=self._run_loop, name="arm-loop", daemon=True)
            self._loop_thread.start()

    def _stop_loop(self) -> None:
        """Stop the loop thread and wait for its last tick (the robot is closed after this)."""
        self._loop_stop.set()
        if self._loop_thread is not None and self._loop_thread is not threading.current_thread():
            self._loop_thread.join(timeout=5.0)
        self._loop_thread = None

    def _run_loop(self) -> None:
        """Tick ``_loop`` at ``state_rate_hz`` (re-read every tick, so a parameter update applies at
        once) until stopped. A plain sleep (``spin_s=0``): a state stamp's exact phase matters less
        than the CPU a spin would take at this rate."""
        problem = request_realtime(self.cfg.rt_priority)
        if problem is not None:
            self.get_logger().warning(f"control loop at normal priority: {problem}")
        rate = self.cfg.state_rate_hz
        clock = ControlClock(1.0 / rate, spin_s=0.0)
        while not self._loop_stop.is_set():
            if self.cfg.state_rate_hz != rate:
                rate = self.cfg.state_rate_hz
                clock = ControlClock(1.0 / rate, spin_s=0.0)
            clock.wait()
            try:
                self._loop()
            except Exception as e:  # noqa: BLE001 - the loop must outlive one bad tick; the error is reported
                self._last_error = f"loop: {type(e).__name__}: {e}"
                self.get_logger().error(self._last_error, throttle_duration_sec=1.0)

    def _on_params(self, changed: set[str]) -> None:
        if self.robot is None:
            return
        if "diagnostics_period_s" in changed:
            self._start_timers()
        if "command_timeout_s" in changed:
            self._watchdog = Watchdog(self.cfg.command_timeout_s)

    # ------------------------------------------------------------------ control loop
    def world_seconds(self, wall_elapsed_s: float) -> float:
        """How much of the robot's world passes in ``wall_elapsed_s`` (sim_node scales it)."""
        return wall_elapsed_s

    def _advance(self, robot: Robot, now: float) -> None:
        """Advance by the wall-clock time since the previous tick, at most 5 control periods, so
        a stalled process does not make a simulated world jump (real-time robots ignore it)."""
        period = 1.0 / self.cfg.state_rate_hz
        elapsed = period if self._last_tick_s is None else min(max(now - self._last_tick_s, 0.0), 5 * period)
        self._last_tick_s = now
        robot.advance(self.world_seconds(elapsed))

    def _loop(self) -> None:
        robot = self.robot
        if robot is None:
            return
        now = time.monotonic()
        self._tick_times.append(now)
        self._counters["loop_ticks"] += 1
        try:
            with self.io_lock:
                self._advance(robot, now)
                st = robot.read()
        except Exception as e:  # noqa: BLE001 - a bus error must be counted and reported, not kill the loop
            self._counters["bus_errors"] += 1
            self._last_error = f"{type(e).__name__}: {e}"
            return
        self._last_q = st.positions
        self._js_pub.publish(conv.joint_state_to_msg(robot.arm.joint_names, st.positions, st.velocities,
                                                     st.efforts, time.time_ns(), self.cfg.joint_frame_id))
        with self._lock:
            if not self.active or self._mode == "idle":
                return
            if robot.estop.latched:  # latched elsewhere (bus fault): the robot already refuses to move
                self._mode = "idle"
                return
            if self._mode == "stream" and self._watchdog.expired(now):
                self._counters["watchdog_holds"] += 1
                self.get_logger().warning(f"no command for {self._watchdog.time_since_feed(now):.3f} s: holding")
                self._mode = "idle"
                self._safe_hold("watchdog")
                return
            target = self._target if self._mode == "stream" else self._trajectory.at(now)
        try:
            with self.io_lock:
                robot.send(target)
        except Exception as e:  # noqa: BLE001
            self._counters["bus_errors"] += 1
            self._last_error = f"{type(e).__name__}: {e}"

    def _safe_hold(self, reason: str) -> None:
        if self.robot is None:
            return
        try:
            with self.io_lock:
                self.robot.hold(reason)
        except Exception as e:  # noqa: BLE001
            self._counters["bus_errors"] += 1
            self._last_error = f"hold: {type(e).__name__}: {e}"

    # ------------------------------------------------------------------ commands
    def _reject(self, why: str) -> None:
        self._counters["rejected_commands"] += 1
        self._last_error = why
        self.get_logger().warning(why, throttle_duration_sec=1.0)

    def _on_command(self, msg: Float64MultiArray) -> None:
        if self.robot is None:
            return
        try:
            q = conv.msg_to_command(msg, len(self.robot.arm.joint_names))
        except conv.ConversionError as e:
            self._reject(f"{names.JOINT_COMMANDS}: {e}")
            return
        if self.robot.estop.latched:
            self._reject(f"{names.JOINT_COMMANDS}: ignored, e-stop latched ({self.robot.estop.reason})")
            return
        with self._lock:
            if not self.active or self._mode == "home":
                return
            self._watchdog.feed()
            self._target, self._mode = q, "stream"

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        if self.robot is None or self._last_q is None:
            return
        try:
            traj = trajectory_from_msg(msg, self.robot.arm.joint_names, self._last_q.copy(), time.monotonic())
        except ValueError as e:
            self._reject(f"{names.JOINT_TRAJECTORY}: {e}")
            return
        with self._lock:
            if self.active and self._mode != "home" and not self.robot.estop.latched:
                self._trajectory, self._mode = traj, "trajectory"

    # ------------------------------------------------------------------ services
    def _publish_estop(self) -> None:
        if self._estop_pub is not None and self.robot is not None:
            self._estop_pub.publish(Bool(data=self.robot.estop.latched))

    def _on_estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.robot is None:
            response.success, response.message = False, "not configured"
            return response
        with self._lock:
            self._mode = "idle"
            try:
                with self.io_lock:
                    self.robot.trigger_estop("estop service")
            except Exception as e:  # noqa: BLE001 - the latch is set before the hold; report the hold's failure
                self._counters["bus_errors"] += 1
                self._last_error = f"estop hold: {type(e).__name__}: {e}"
        response.success, response.message = True, "e-stop latched; call reset to clear"
        return response

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.robot is None:
            response.success, response.message = False, "not configured"
            return response
        held = self.robot.estop.reset()
        self._publish_estop()
        response.success = True
        response.message = f"cleared e-stop ({held})" if held else "e-stop was not latched"
        return response

    def _on_home(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        robot = self.robot
        if robot is None or not self.active or self._last_q is None:
            response.success, response.message = False, f"{names.HOME_NOT_ACTIVE} (configure and activate it first)"
            return response
        if robot.estop.latched:
            response.success, response.message = False, f"e-stop latched ({robot.estop.reason}); reset first"
            return response
        with self._lock:
            start = self._last_q.copy()
            duration = max(0.1, float(np.max(np.abs(robot.arm.home - start))) / self.cfg.home_speed_rad_s)
            self._trajectory = Trajectory(time.monotonic(), start, np.array([duration]), robot.arm.home[None])
            self._mode = "home"
        deadline = time.monotonic() + duration + max(1.0, 0.5 * duration)
        tol = self.cfg.home_tolerance_rad
        while time.monotonic() < deadline:
            time.sleep(0.02)
            if robot.estop.latched or self._mode != "home":
                response.success, response.message = False, "homing interrupted (e-stop or deactivate)"
                return response
            if time.monotonic() >= self._trajectory.end_s:
                err = np.abs(self._last_q - robot.arm.home)
                if np.all(err <= tol):
                    break
        err = np.abs(self._last_q - robot.arm.home)
        with self._lock:
            if self._mode == "home":
                self._mode = "idle"
        if np.all(err <= tol):
            response.success, response.message = True, f"home reached (max error {err.max():.4f} rad)"
        else:
            worst = int(np.argmax(err))
            response.success = False
            response.message = (f"home not reached: {robot.arm.joint_names[worst]} is {err[worst]:.4f} rad "
                                f"away (tolerance {tol} rad)")
        return response

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        robot = self.robot
        if robot is None:
            return
        with self.io_lock:
            stats = robot.diagnostics()
        self._diag_pub.publish(arm_diagnostics(
            self.get_name(), time.time_ns(), stats, robot.estop, counters=self._counters,
            last_error=self._last_error, rate_hz=loop_rate_hz(self._tick_times),
            want_rate_hz=self.cfg.state_rate_hz, mode=self._mode, active=self.active))


def run_arm_server(node_cls: type[ArmServerNode], args: list[str] | None = None) -> int:
    """``main`` of arm_node and sim_node: build the node, autostart it if asked, spin."""
    def make() -> ArmServerNode:
        node = node_cls()
        if node.cfg.autostart:
            node.autostart()
        return node

    return run_node(make, args)
