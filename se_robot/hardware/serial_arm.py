"""``SerialArm``: the arm on a servo bus, in radians, behind the safety filter.

This is the lowest layer that moves the real arm, so it is where safety is enforced: every goal
passes ``SafetyFilter.filter`` inside ``send_joint_targets`` before a byte is written, measured
against the last goal written and a reading taken in the same call (never a cached one), so
consecutive goals and goal-to-arm distances both respect the step cap. One control tick costs one
sync read and one sync write.

Holding keeps the last goal written: position servos hold it against gravity, whereas re-writing
the measured position every tick lets the arm sag a little further each time. Only when the
servos' goal is unknown (after connect, after torque was off) does a hold take the present position.

A latch of the e-stop (a servo fault, a vanished port, a bus that keeps returning garbage, a
teleop key, a ROS service) makes exactly one write: a hold at the present position, or torque off
(``arm.safety.estop_action``); then nothing until ``estop.reset()``. Bus faults raise a
``SafetyFault`` once; later sends return a held command instead of raising again, so a control
loop cannot turn a fault into a crash loop, and ``read_state`` keeps working (reads are safe) so
the operator and the env still see the arm. An optional watchdog thread holds the arm (or drops
torque) when the commands stop coming.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from se_robot.arm import ArmDescription
from se_robot.estop import EStop, FaultKind, SafetyFault, Watchdog
from se_robot.hardware.calibration import ArmCalibration, calibrate_command, default_arm_id, resolve_calibration
from se_robot.hardware.registers import get_model
from se_robot.hardware.servo_bus import ServoBus, make_protocol
from se_robot.hardware.transport import (BusError, BusTimeoutError, PortLostError, SerialTransport,
                                         ServoStatusError)
from se_robot.safety import SafeCommand, SafetyFilter


#: how many times a latch's stop write is tried (at the latch, then by the watchdog or disconnect)
STOP_TRIES = 3


@dataclass(frozen=True)
class JointState:
    positions: np.ndarray  # rad, joint order
    velocities: np.ndarray  # rad/s
    efforts: np.ndarray  # N*m, approximate (from load or current registers)
    stamp: float  # time.monotonic() when the reply arrived


class SerialArm:
    """An arm of ``arm.bus.model`` servos on serial ``port``; see the module docstring.

    ``calibration`` is an ``ArmCalibration`` or a YAML path; without one, the calibration stored
    for ``arm_id`` (default: the arm's name) by ``se-robot calibrate --arm-id``. With neither,
    construction fails with a ``CalibrationError`` that names the command to run.
    """

    def __init__(self, arm: ArmDescription, port: str, calibration: ArmCalibration | str | None = None, *,
                 arm_id: str | None = None,
                 safety_filter: SafetyFilter | None = None, estop: EStop | None = None,
                 timeout_s: float = 0.05, retries: int = 3,
                 disconnect_torque: Literal["hold", "off"] | None = None):
        self.arm = arm
        self.port = port
        self.arm_id = arm_id or default_arm_id(arm)
        self.calibration = resolve_calibration(arm, calibration, self.arm_id, port)
        self.model = get_model(arm.bus.model)
        self.estop = estop if estop is not None else (safety_filter.estop if safety_filter else EStop())
        self._filter = safety_filter
        self.watchdog = Watchdog(arm.safety.watchdog_timeout_s)
        # What disconnect() leaves the servos doing; the arm's watchdog action unless overridden.
        self.disconnect_torque = disconnect_torque or (
            "off" if arm.safety.disconnect_action == "disable_torque" else "hold")
        self.timeout_s = timeout_s
        self.retries = retries
        self.bus: ServoBus | None = None
        self._bus_counters = None  # kept after disconnect for diagnostics
        self.counters = {"ticks": 0, "clipped": 0, "held": 0, "calibration_clamped": 0,
                         "watchdog_trips": 0, "faults": 0, "estop_stops": 0, "estop_stop_failures": 0}
        self._ids = arm.servo_ids
        self._names = arm.joint_names
        self._last_state: JointState | None = None
        self._lock = threading.RLock()
        self._wd_thread: threading.Thread | None = None
        self._wd_stop = threading.Event()
        self._wd_tripped = False
        # The last goal written (rad, exactly the ticks sent); None while the servos' goal is
        # unknown to us (before the first write, after torque was off).
        self._goal: np.ndarray | None = None
        self._stop_tries_left = 0  # > 0: a latch whose one stop write has not reached the bus yet
        self._bus_suspect = False   # the latch came from the bus failing: do not wait on a re-read
        self.estop.add_listener(self._on_latch)

    # ---- lifecycle ---------------------------------------------------------------------------
    @property
    def safety_filter(self) -> SafetyFilter:
        if self._filter is None:
            from se_robot.sim.kinematics import Kinematics

            self._filter = SafetyFilter(self.arm, Kinematics(self.arm), self.estop)
        return self._filter

    @property
    def is_connected(self) -> bool:
        return self.bus is not None

    def connect(self) -> "SerialArm":
        """Open the port, check every servo answers with the expected model and sits inside its
        calibrated range, read the state."""
        _ = self.safety_filter  # build kinematics before anything can move
        transport = SerialTransport(self.port, self.arm.bus.baudrate)
        transport.open()  # exclusive: PortInUseError names the port when someone else holds it
        self.bus = ServoBus(transport, make_protocol(self.arm.bus.protocol), self.model,
                            timeout_s=self.timeout_s, retries=self.retries)
        self._bus_counters = self.bus.counters
        try:
            for sid, name in zip(self._ids, self._names):
                try:
                    number = self.bus.ping(sid)
                except BusTimeoutError as e:
                    raise BusTimeoutError(f"servo {sid} ({name}) does not answer on {self.port}: {e}") from None
                if number != self.model.model_number:
                    raise BusError(f"servo {sid} ({name}) is model number {number}, "
                                   f"expected {self.model.model_number} ({self.model.name})")
            self.read_state()
            raw = self._read_raw()  # refuse a calibration made on another arm before anything moves
            self.calibration.check_within_range(
                [raw[s]["Present_Position"] for s in self._ids], self._names,
                f"Recalibrate it: {calibrate_command(self.arm, self.arm_id, self.port)}")
        except Exception:
            transport.close()
            self.bus = None
            raise
        self._goal = None  # whatever the servos hold now, we did not write it
        self.watchdog.feed()
        return self

    def disconnect(self) -> None:
        """Stop the watchdog, apply the disconnect torque policy (best effort), close the port.

        Under a latched e-stop the stop write is made first if it has not reached the bus yet.
        """
        self.stop_watchdog()
        if self.bus is None:
            return
        try:
            self._write_pending_stop()
            if self.disconnect_torque == "off":
                self.torque_off()
            elif not self.estop.latched:
                self.hold()
        except (BusError, SafetyFault):
            pass  # the port may be the thing that failed; closing it is all that is left
        finally:
            self.bus.transport.close()
            self.bus = None

    def __enter__(self) -> "SerialArm":
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.disconnect()

    # ---- faults ------------------------------------------------------------------------------
    def _fault(self, error: BusError) -> SafetyFault:
        if isinstance(error, ServoStatusError):
            fault = SafetyFault(FaultKind.SERVO_STATUS, str(error), error.servo_id)
        elif isinstance(error, PortLostError):
            fault = SafetyFault(FaultKind.PORT_LOST, str(error))
        else:
            fault = SafetyFault(FaultKind.RETRIES_EXHAUSTED, str(error))
        self.counters["faults"] += 1
        self._bus_suspect = not isinstance(error, ServoStatusError)
        self.estop.latch(fault)
        return fault

    def _on_latch(self, reason: str) -> None:
        """EStop listener (runs in whichever thread latched): make the one stop write now."""
        with self._lock:
            self._stop_tries_left = STOP_TRIES
            self._write_pending_stop()

    def _write_pending_stop(self) -> None:
        """Hold at the present position (or torque off, per ``arm.safety.estop_action``) once per
        latch. A failed write stays pending, so the watchdog and ``disconnect`` try it again, up to
        ``STOP_TRIES`` times in all (a vanished port would otherwise count a fault every period)."""
        with self._lock:
            if not (self._stop_tries_left > 0 and self.estop.latched and self.bus is not None):
                return
            self._stop_tries_left -= 1
            suspect, self._bus_suspect = self._bus_suspect, False
            try:
                if self.arm.safety.estop_action == "disable_torque":
                    self._torque(False)
                    self._goal = None
                else:
                    self._write_goals(self._present_for_stop(fresh=not suspect), clamp=False)
                self._stop_tries_left = 0
                self.counters["estop_stops"] += 1
            except (BusError, SafetyFault):
                self.counters["estop_stop_failures"] += 1

    def _present_for_stop(self, fresh: bool) -> np.ndarray:
        """Where the arm is: a fresh reading unless the bus itself just failed (then the newest
        one we have, so a stop never waits on another round of retries)."""
        if fresh:
            try:
                return self.read_state().positions
            except SafetyFault:
                pass
        if self._last_state is not None:
            return self._last_state.positions
        if self._goal is not None:
            return self._goal
        raise SafetyFault(FaultKind.BAD_STATE, f"no reading of the arm on {self.port} to stop at")

    def _require_bus(self) -> ServoBus:
        if self.bus is None:
            raise RuntimeError(f"SerialArm on {self.port} is not connected; call connect() first")
        return self.bus

    # ---- state and commands ------------------------------------------------------------------
    def _read_raw(self) -> dict[int, dict[str, int]]:
        """One sync read. Once the e-stop is latched a servo's fault bits no longer raise (they
        are counted on the bus): reads are safe, and the operator still needs to see the arm."""
        bus = self._require_bus()
        try:
            return bus.sync_read(self._ids, self.model.state_block, raise_faults=not self.estop.latched)
        except BusError as e:
            raise self._fault(e) from e

    def read_state(self) -> JointState:
        """Positions, velocities and efforts of every joint from one sync read."""
        with self._lock:
            raw = self._read_raw()
            m = self.model
            ticks = np.array([raw[s]["Present_Position"] for s in self._ids], dtype=np.float64)
            vel = np.array([raw[s]["Present_Velocity"] for s in self._ids], dtype=np.float64)
            eff = np.array([raw[s][m.effort_register] for s in self._ids], dtype=np.float64)
            cal = self.calibration
            state = JointState(cal.ticks_to_rad(ticks, self._names),
                               cal.velocity_to_rad_s(vel, self._names, m.velocity_unit_rad_s),
                               cal.direction_of(self._names) * eff * m.effort_unit_nm, time.monotonic())
            self._last_state = state
            return state

    def send_joint_targets(self, q_rad: np.ndarray) -> SafeCommand:
        """Filter ``q_rad`` against the last goal and a reading taken now, write it as goal positions.

        Returns what was actually sent; a held command re-sends the last goal (the arm stays
        where it was commanded, it does not sag to where gravity pulled it). With the e-stop
        latched nothing is written and the returned command is a hold with reason ``estop``.
        """
        with self._lock:
            if self.estop.latched:
                self.counters["held"] += 1
                return self.safety_filter.filter(q_rad, self._reference())
            state = self.read_state()  # same tick: never a cached reading
            cmd = self.safety_filter.filter(q_rad, state.positions, self._goal)
            if self.estop.latched:  # latched while the filter ran: the stop was written, send nothing
                self.counters["held"] += 1
                return self.safety_filter.hold(self._reference(), "estop")
            # Round ticks towards the middle of the allowed window so quantisation never makes a
            # step longer than the filter allowed, from the goal or from the reading.
            ref = state.positions if self._goal is None else 0.5 * (state.positions + self._goal)
            self._write_goals(cmd.positions, toward_rad=ref)
            self.counters["ticks"] += 1
            self.counters["clipped"] += int(cmd.clipped)
            self.counters["held"] += int(cmd.held)
            self.watchdog.feed()
            self._wd_tripped = False
            return cmd

    def _reference(self) -> np.ndarray:
        """What the servos are holding as far as we know: the last goal, else the last reading."""
        if self._goal is not None:
            return self._goal
        return self._last_state.positions if self._last_state is not None else self.arm.home

    def _write_goals(self, q_rad: np.ndarray, clamp: bool = True, toward_rad: np.ndarray | None = None) -> None:
        cal = self.calibration
        ticks = cal.rad_to_ticks(q_rad, self._names, clamp=clamp, toward_rad=toward_rad)
        if clamp and not np.array_equal(ticks, cal.rad_to_ticks(q_rad, self._names, clamp=False)):
            self.counters["calibration_clamped"] += 1
        try:
            self._require_bus().sync_write("Goal_Position", dict(zip(self._ids, (int(t) for t in ticks))))
        except BusError as e:
            raise self._fault(e) from e
        self._goal = cal.ticks_to_rad(ticks.astype(np.float64), self._names)

    def hold(self, reason: str = "hold") -> SafeCommand:
        """Keep the last goal written (it passed the filter; position servos hold it against
        gravity). When the servos' goal is unknown (after connect or torque off) the present
        position becomes the goal. Under a latched e-stop nothing is written: the latch already
        wrote its one stop. ``reason`` is what the filter counts."""
        with self._lock:
            if self.estop.latched:
                self._write_pending_stop()
                return self.safety_filter.hold(self._reference(), "estop")
            goal = self._goal if self._goal is not None else self.read_state().positions
            cmd = self.safety_filter.hold(goal, reason)
            self._write_goals(cmd.positions, clamp=False)
            return cmd

    def _torque(self, enabled: bool) -> None:
        bus = self._require_bus()
        try:
            for sid in self._ids:  # under a latch a faulted servo must not keep the rest powered
                bus.write(sid, "Torque_Enable", int(enabled), raise_faults=not self.estop.latched)
        except BusError as e:
            raise self._fault(e) from e

    def torque_on(self) -> None:
        """Goal = present first, so waking the servos never makes the arm jump."""
        with self._lock:
            if self.estop.latched:
                raise SafetyFault(FaultKind.USER, f"e-stop latched ({self.estop.reason}); reset it first")
            self.hold()
            self._torque(True)
            self.watchdog.feed()

    def torque_off(self) -> None:
        """Limp servos; the next hold takes the present position (someone may move the arm)."""
        with self._lock:
            self._goal = None
            self._torque(False)

    # ---- watchdog ----------------------------------------------------------------------------
    def start_watchdog(self, period_s: float | None = None) -> None:
        """Background thread: when no command came for ``arm.safety.watchdog_timeout_s``, hold
        (or drop torque, per ``arm.safety.watchdog_action``) once, until commands resume."""
        if self._wd_thread is not None:
            return
        period = period_s or self.watchdog.timeout_s / 5
        self._wd_stop.clear()
        self.watchdog.feed()
        self._wd_thread = threading.Thread(target=self._watch, args=(period,), name="arm-watchdog", daemon=True)
        self._wd_thread.start()

    def stop_watchdog(self) -> None:
        self._wd_stop.set()
        if self._wd_thread is not None and self._wd_thread is not threading.current_thread():
            self._wd_thread.join(timeout=2.0)
        self._wd_thread = None

    def _watch(self, period_s: float) -> None:
        while not self._wd_stop.wait(period_s):
            if self.estop.latched:
                self._write_pending_stop()  # a stop the latch could not write is retried here
                continue
            if self._wd_tripped or not self.watchdog.expired() or self.bus is None:
                continue
            try:
                with self._lock:
                    if self.arm.safety.watchdog_action == "disable_torque":
                        self.torque_off()
                    else:
                        self.hold()
                self._wd_tripped = True
                self.counters["watchdog_trips"] += 1
            except (SafetyFault, RuntimeError):
                continue  # the e-stop is latched (its stop is retried above); the control thread hears of it

    # ---- diagnostics -------------------------------------------------------------------------
    def diagnostics(self) -> dict[str, float]:
        """Flat counters: ``bus/*`` wire errors, ``arm/*`` commands, ``safety/*`` filter stats."""
        out = {f"arm/{k}": float(v) for k, v in self.counters.items()}
        if self._bus_counters is not None:
            out.update(self._bus_counters.as_dict())
        out.update({f"safety/{k}": float(v) for k, v in self.safety_filter.stats.items()})
        out["safety/estop_latched"] = float(self.estop.latched)
        return out
