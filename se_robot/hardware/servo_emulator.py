"""A byte-level servo bus on a pseudo-terminal, so drivers are tested through their real port code.

``ServoEmulator`` opens a pty, keeps one control table per servo and answers instruction packets
the way the servos do (status packets, one reply per id for a sync read, silence for broadcast
writes). Any client that opens ``emulator.port`` (pyserial, the vendors' SDKs, ``se-robot``) sees
an arm. Every goal position written is logged with its time so tests and safety checks can ask
exactly what reached the "motors". The reality gap is a set of knobs, all off by default, and
faults can be injected one packet at a time for deterministic error-path tests.
"""

from __future__ import annotations

import math
import os
import random
import select
import threading
import time
import tty
from collections import deque
from dataclasses import dataclass

from se_robot.hardware.registers import ServoModel
from se_robot.hardware.servo_bus import make_protocol
from se_robot.hardware.transport import Corrupt, Frame


@dataclass
class RealityGap:
    """Ways a real bus and real servos differ from an ideal one; zero means off."""

    command_latency_s: float = 0.0  # a written goal takes effect this much later
    sensor_latency_s: float = 0.0  # reported state is this old
    response_delay_s: float = 0.0  # wait before sending a status packet
    position_noise_ticks: float = 0.0  # std of Gaussian noise on reported position
    deadband_ticks: float = 0.0  # goals closer than this to the present position are ignored
    backlash_ticks: float = 0.0  # reported position lags by half this against the motion direction
    quantization_ticks: int = 0  # reported positions rounded to multiples of this
    drop_probability: float = 0.0  # instruction packets silently ignored
    corrupt_probability: float = 0.0  # replies with one byte flipped
    wire_baudrate: int = 0  # delay each reply by the time its bytes take on a wire at this rate (10 bits/byte)
    seed: int = 0


@dataclass(frozen=True)
class GoalRecord:
    time_s: float  # time.monotonic() when the packet arrived
    servo_id: int
    ticks: int


class FirstOrderServos:
    """Default physics: each servo approaches its goal exponentially, with a speed cap; no gravity,
    no coupling. Integrated lazily at each query, so it needs no thread."""

    def __init__(self, time_constant_s: float = 0.05, max_speed_ticks_s: float = 6000.0):
        self.tau = time_constant_s
        self.max_speed = max_speed_ticks_s
        self._pos: dict[int, float] = {}
        self._vel: dict[int, float] = {}
        self._goal: dict[int, float] = {}
        self._torque: dict[int, bool] = {}
        self._t = time.monotonic()

    def reset(self, positions_ticks: dict[int, float]) -> None:
        self._pos = dict(positions_ticks)
        self._goal = dict(positions_ticks)
        self._vel = {k: 0.0 for k in positions_ticks}
        self._torque = {k: False for k in positions_ticks}
        self._t = time.monotonic()

    def _advance(self, now: float) -> None:
        dt = now - self._t
        if dt <= 0:
            return
        self._t = now
        for sid, pos in self._pos.items():
            if not self._torque[sid]:
                self._vel[sid] = 0.0
                continue
            err = self._goal[sid] - pos
            step = err * (1.0 - pow(2.718281828, -dt / self.tau))
            step = max(-self.max_speed * dt, min(self.max_speed * dt, step))
            self._pos[sid] = pos + step
            self._vel[sid] = step / dt

    def set_goal(self, servo_id: int, ticks: float, now: float) -> None:
        self._advance(now)
        self._goal[servo_id] = float(ticks)

    def set_torque(self, servo_id: int, enabled: bool, now: float) -> None:
        self._advance(now)
        self._torque[servo_id] = enabled
        if enabled:  # a servo that wakes up holds where it is until told otherwise
            self._goal[servo_id] = self._pos[servo_id]

    def move_to(self, servo_id: int, ticks: float) -> None:
        """Move a servo by hand (torque off): used by calibration tests."""
        self._pos[servo_id] = float(ticks)

    def state(self, now: float) -> dict[int, tuple[float, float, float]]:
        """id -> (position ticks, velocity ticks/s, load as a fraction of stall torque)."""
        self._advance(now)
        return {sid: (self._pos[sid], self._vel[sid],
                      max(-1.0, min(1.0, (self._goal[sid] - self._pos[sid]) / 400.0)) if self._torque[sid] else 0.0)
                for sid in self._pos}

    def close(self) -> None:
        pass


class ServoEmulator:
    """Servos with ids ``servo_ids`` of one ``model`` behind a pty; ``start()`` then open ``port``."""

    def __init__(self, protocol: str, model: ServoModel, servo_ids: list[int], *,
                 initial_ticks: dict[int, int] | None = None, physics=None, gap: RealityGap | None = None):
        self.protocol = make_protocol(protocol)
        self.model = model
        self.servo_ids = list(servo_ids)
        self.gap = gap or RealityGap()
        self.physics = physics if physics is not None else FirstOrderServos()
        self.tables: dict[int, bytearray] = {sid: self._default_table(sid) for sid in self.servo_ids}
        start = {sid: float((initial_ticks or {}).get(sid, model.ticks_per_rev // 2)) for sid in self.servo_ids}
        self.physics.reset(start)
        self.goal_log: list[GoalRecord] = []
        self.instructions_seen = 0
        self.bad_packets_seen = 0
        self._faults: dict[int, int] = {}
        self._injections: deque[str] = deque()
        self._pending: deque[tuple[float, int, float]] = deque()  # (apply_at, id, ticks)
        self._history: deque[tuple[float, dict]] = deque(maxlen=2000)
        self._direction: dict[int, float] = {sid: 1.0 for sid in self.servo_ids}
        self._rng = random.Random(self.gap.seed)
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._master = self._slave = -1
        self.port = ""

    # ---- set-up ------------------------------------------------------------------------------
    def _default_table(self, servo_id: int) -> bytearray:
        table = bytearray(self.model.table_size)
        for name, value in self.model.defaults.items():
            reg = self.model[name]
            table[reg.address:reg.address + reg.size] = reg.encode(value)
        reg = self.model["ID"]
        table[reg.address:reg.address + reg.size] = reg.encode(servo_id)
        return table

    def start(self) -> "ServoEmulator":
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="servo-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering and close the pty: a connected client sees its port vanish."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        for fd in (self._master, self._slave):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = -1
        self.physics.close()

    def __enter__(self) -> "ServoEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- test hooks --------------------------------------------------------------------------
    def inject(self, kind: str, count: int = 1) -> None:
        """Damage the next ``count`` replies: drop | corrupt | truncate | garbage | wrong_id."""
        if kind not in ("drop", "corrupt", "truncate", "garbage", "wrong_id"):
            raise ValueError(f"unknown injection {kind!r}; allowed: drop, corrupt, truncate, garbage, wrong_id")
        with self._lock:
            self._injections.extend([kind] * count)

    def clear_injections(self) -> None:
        with self._lock:
            self._injections.clear()

    def set_fault(self, servo_id: int, bits: int) -> None:
        """Report ``bits`` in every status packet of ``servo_id`` (Feetech error bits, or the
        Dynamixel Hardware_Error_Status bits with the alert flag); 0 clears."""
        with self._lock:
            self._faults[servo_id] = bits
            if "Hardware_Error_Status" in self.model.registers:
                self._poke(servo_id, "Hardware_Error_Status", bits)

    def register(self, servo_id: int, name: str) -> int:
        reg = self.model[name]
        with self._lock:
            self._refresh(time.monotonic())
            return reg.decode(bytes(self.tables[servo_id][reg.address:reg.address + reg.size]))

    def set_register(self, servo_id: int, name: str, value: int) -> None:
        with self._lock:
            self._poke(servo_id, name, value)

    def goals(self, servo_id: int) -> list[int]:
        return [g.ticks for g in self.goal_log if g.servo_id == servo_id]

    # ---- serving -----------------------------------------------------------------------------
    def _poke(self, servo_id: int, name: str, value: int) -> None:
        reg = self.model[name]
        self.tables[servo_id][reg.address:reg.address + reg.size] = reg.encode(value)

    def _run(self) -> None:
        buf = bytearray()
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._master], [], [], 0.005)
                chunk = os.read(self._master, 4096) if ready else b""
            except OSError:
                return
            now = time.monotonic()
            with self._lock:
                self._apply_pending(now)
                if self.gap.sensor_latency_s:
                    self._history.append((now, self.physics.state(now)))
                buf += chunk
                while buf:
                    item, _, consumed = self.protocol.extract(buf, status=False)
                    del buf[:consumed]
                    if item is None:
                        break
                    if isinstance(item, Corrupt):
                        self.bad_packets_seen += 1
                        continue
                    try:
                        self._handle(item, now)
                    except (IndexError, ValueError):  # a well-framed packet with nonsense inside
                        self.bad_packets_seen += 1

    def _apply_pending(self, now: float) -> None:
        while self._pending and self._pending[0][0] <= now:
            _, sid, ticks = self._pending.popleft()
            self.physics.set_goal(sid, ticks, now)

    def _params(self, frame: Frame) -> tuple[int, int, bytes]:
        """(address, length-or-first-data, rest) for either protocol's read/write/sync layout."""
        p = frame.params
        if self.protocol.name == "feetech":
            return p[0], p[1] if len(p) > 1 else 0, p[2:] if frame.instruction != self.protocol.INST_WRITE else p[1:]
        address = int.from_bytes(p[0:2], "little")
        if frame.instruction == self.protocol.INST_WRITE:
            return address, 0, p[2:]
        return address, int.from_bytes(p[2:4], "little"), p[4:]

    def _handle(self, frame: Frame, now: float) -> None:
        self.instructions_seen += 1
        if self.gap.drop_probability and self._rng.random() < self.gap.drop_probability:
            return
        proto, inst = self.protocol, frame.instruction
        if inst == proto.INST_PING and frame.servo_id in self.tables:
            data = b""
            if proto.name == "dynamixel":
                data = self.model.registers["Model_Number"].encode(self.model.model_number) + bytes([52])
            self._reply(frame.servo_id, data)
        elif inst == proto.INST_READ and frame.servo_id in self.tables:
            address, length, _ = self._params(frame)
            self._refresh(now)
            self._reply(frame.servo_id, bytes(self.tables[frame.servo_id][address:address + length]))
        elif inst == proto.INST_WRITE:
            address, _, data = self._params(frame)
            targets = self.servo_ids if frame.servo_id == proto.broadcast_id else [frame.servo_id]
            for sid in targets:
                if sid in self.tables:
                    self._write(sid, address, data, now)
            if frame.servo_id in self.tables:
                self._reply(frame.servo_id, b"")
        elif inst == proto.INST_SYNC_READ:
            address, length, ids = self._params(frame)
            self._refresh(now)
            for sid in ids:
                if sid in self.tables:
                    self._reply(sid, bytes(self.tables[sid][address:address + length]))
        elif inst == proto.INST_SYNC_WRITE:
            address, length, blob = self._params(frame)
            step = length + 1
            for i in range(0, len(blob) - step + 1, step):
                sid = blob[i]
                if sid in self.tables:
                    self._write(sid, address, blob[i + 1:i + step], now)

    def _write(self, servo_id: int, address: int, data: bytes, now: float) -> None:
        table = self.tables[servo_id]
        if address + len(data) > len(table):
            return
        table[address:address + len(data)] = data
        touched = range(address, address + len(data))
        goal, torque = self.model["Goal_Position"], self.model["Torque_Enable"]
        if torque.address in touched:
            self.physics.set_torque(servo_id, bool(table[torque.address]), now)
        if goal.address in touched:
            ticks = goal.decode(bytes(table[goal.address:goal.address + goal.size]))
            self.goal_log.append(GoalRecord(now, servo_id, ticks))
            present = self.physics.state(now)[servo_id][0]
            if self.gap.deadband_ticks and abs(ticks - present) < self.gap.deadband_ticks:
                return
            if self.gap.command_latency_s:
                self._pending.append((now + self.gap.command_latency_s, servo_id, float(ticks)))
            else:
                self.physics.set_goal(servo_id, float(ticks), now)

    def _refresh(self, now: float) -> None:
        """Copy the physics state into the Present_* registers, through the reality-gap knobs."""
        state = self.physics.state(now)
        if self.gap.sensor_latency_s and self._history:
            old = [s for t, s in self._history if t <= now - self.gap.sensor_latency_s]
            if old:
                state = old[-1]
        m = self.model
        for sid, (pos, vel, load) in state.items():
            if abs(vel) > 1e-6:
                self._direction[sid] = 1.0 if vel > 0 else -1.0
            pos -= self._direction[sid] * self.gap.backlash_ticks / 2
            if self.gap.position_noise_ticks:
                pos += self._rng.gauss(0.0, self.gap.position_noise_ticks)
            q = self.gap.quantization_ticks
            ticks = int(round(pos / q) * q) if q else int(round(pos))
            vel_counts = vel * (2 * math.pi / m.ticks_per_rev) / m.velocity_unit_rad_s
            for name, value in (("Present_Position", ticks), ("Present_Velocity", int(round(vel_counts))),
                                (m.effort_register, int(round(load * 1000)))):
                reg = m[name]
                limit = (1 << (reg.sign_bit if reg.sign_bit is not None else 8 * reg.size - 1)) - 1
                self._poke(sid, name, max(-limit, min(limit, value)))

    def _reply(self, servo_id: int, data: bytes) -> None:
        error = self._faults.get(servo_id, 0)
        if self.protocol.name == "dynamixel":
            error = 0x80 if error else 0
        packet = bytearray(self.protocol.status(servo_id, error, data))
        kind = self._injections.popleft() if self._injections else None
        if kind is None and self.gap.corrupt_probability and self._rng.random() < self.gap.corrupt_probability:
            kind = "corrupt"
        if kind == "drop":
            return
        if kind == "corrupt":
            packet[-1] ^= 0x5A
        elif kind == "truncate":
            packet = packet[:len(packet) // 2]
        elif kind == "garbage":
            packet = bytearray(b"\x00\x13\xff\x42") + packet
        elif kind == "wrong_id":
            other = next((s for s in self.servo_ids if s != servo_id), (servo_id + 1) % 250)
            packet = bytearray(self.protocol.status(other, error, data))
        delay = self.gap.response_delay_s + (len(packet) * 10 / self.gap.wire_baudrate if self.gap.wire_baudrate else 0)
        if delay:
            time.sleep(delay)
        try:
            os.write(self._master, bytes(packet))
        except OSError:
            pass
