"""Transactions on a half-duplex servo bus: ping, read, write, sync read, sync write.

Every transaction has a deadline and a bounded number of retries. Anything wrong on the wire (a
checksum that does not match, a packet cut short, a reply from the wrong servo, noise between
packets) is counted and the transaction is sent again; when the budget runs out the error names
the servo, the register and the bytes that did arrive, which is what one needs at the bench to
tell a loose cable from a wrong baud rate. Status-packet faults (overload, overheat, voltage) are
not retried: the servo answered correctly and said it is in trouble.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from se_robot.hardware.dynamixel import DynamixelProtocol
from se_robot.hardware.feetech import FeetechProtocol
from se_robot.hardware.registers import Register, ServoModel
from se_robot.hardware.transport import (BusError, BusTimeoutError, Corrupt, CorruptPacketError, Frame,
                                         PortLostError, SerialTransport, ServoStatusError, hexs)

Protocol = FeetechProtocol | DynamixelProtocol


def make_protocol(name: str) -> Protocol:
    if name == "feetech":
        return FeetechProtocol()
    if name == "dynamixel":
        return DynamixelProtocol()
    raise ValueError(f"unknown servo protocol {name!r}; allowed: feetech, dynamixel")


@dataclass
class BusCounters:
    """Diagnostics of one bus: what went wrong on the wire and how often."""

    transactions: int = 0
    retries: int = 0
    timeouts: int = 0
    corrupt_packets: int = 0
    wrong_id_packets: int = 0
    garbage_bytes: int = 0
    status_errors: int = 0
    failures: int = 0
    last_error: str = ""
    history: list[str] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, float]:
        return {f"bus/{k}": float(v) for k, v in vars(self).items() if isinstance(v, int)}


class ServoBus:
    """One serial bus with servos of one model. Thread-safe: a lock serialises transactions, so
    a watchdog thread and the control loop can share it."""

    def __init__(self, transport: SerialTransport, protocol: Protocol, model: ServoModel, *,
                 timeout_s: float = 0.05, retries: int = 3):
        if model.protocol != protocol.name:
            raise ValueError(f"servo model {model.name} speaks {model.protocol}, not {protocol.name}")
        self.transport = transport
        self.protocol = protocol
        self.model = model
        self.timeout_s = timeout_s
        self.retries = retries
        self.counters = BusCounters()
        self.lock = threading.RLock()
        self._buf = bytearray()

    # ---- low level ---------------------------------------------------------------------------
    def _note(self, message: str) -> None:
        self.counters.history.append(message)
        del self.counters.history[:-20]

    def _receive(self, expected_ids: list[int], deadline: float) -> tuple[list[Frame], bytes]:
        """Status frames from ``expected_ids`` in that order, or raise a retryable error."""
        frames: list[Frame] = []
        seen = bytearray()
        while len(frames) < len(expected_ids):
            item, skipped, consumed = self.protocol.extract(self._buf, status=True)
            if skipped:
                self.counters.garbage_bytes += skipped
            if item is None:
                del self._buf[:consumed]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.counters.timeouts += 1
                    raise BusTimeoutError(f"timeout after {self.timeout_s * 1e3:.0f} ms waiting for servo "
                                          f"{expected_ids[len(frames)]}; received: {hexs(seen + self._buf)}")
                chunk = self.transport.read(remaining)
                self._buf += chunk
                continue
            seen += self._buf[:consumed]
            del self._buf[:consumed]
            if isinstance(item, Corrupt):
                self.counters.corrupt_packets += 1
                raise CorruptPacketError(f"corrupt reply ({item.reason}) while waiting for servo "
                                         f"{expected_ids[len(frames)]}: {hexs(item.raw)}")
            want = expected_ids[len(frames)]
            if item.servo_id != want:
                self.counters.wrong_id_packets += 1
                raise CorruptPacketError(f"reply from servo {item.servo_id} where servo {want} was expected: "
                                         f"{hexs(item.raw)}")
            frames.append(item)
        return frames, bytes(seen)

    def transact(self, packet: bytes, expected_ids: list[int], what: str,
                 data_length: int | None = None, raise_faults: bool = True) -> list[Frame]:
        """Send ``packet`` and collect one status from each of ``expected_ids``, retrying on bad bytes.

        With ``raise_faults`` False a servo's fault bits are counted but the data is returned
        (a driver whose e-stop is already latched still needs to see the arm)."""
        try:
            return self._transact(packet, expected_ids, what, data_length, raise_faults)
        except PortLostError as e:
            self.counters.failures += 1
            self.counters.last_error = f"{what}: {e}"
            raise PortLostError(f"serial port lost during {what}: {e}") from e

    def _transact(self, packet: bytes, expected_ids: list[int], what: str,
                  data_length: int | None, raise_faults: bool = True) -> list[Frame]:
        with self.lock:
            self.counters.transactions += 1
            last: BusError | None = None
            for attempt in range(self.retries + 1):
                if attempt:
                    self.counters.retries += 1
                # After a failed attempt the rest of its replies may still be on their way: wait
                # for the bus to go quiet so they are not mistaken for answers to the retry.
                stale = self.transport.drain(quiet_s=min(self.timeout_s, 0.003) if attempt else 0.0)
                self._buf.clear()
                if stale:
                    self.counters.garbage_bytes += len(stale)
                self.transport.write(packet)
                if not expected_ids:
                    return []
                try:
                    frames, _ = self._receive(expected_ids, time.monotonic() + self.timeout_s)
                except (BusTimeoutError, CorruptPacketError) as e:
                    last = e
                    self._note(f"attempt {attempt + 1}: {e}")
                    continue
                bad = [f for f in frames if data_length is not None and len(f.params) != data_length]
                if bad:
                    self.counters.corrupt_packets += 1
                    last = CorruptPacketError(f"servo {bad[0].servo_id} returned {len(bad[0].params)} data bytes, "
                                              f"expected {data_length}: {hexs(bad[0].raw)}")
                    self._note(f"attempt {attempt + 1}: {last}")
                    continue
                self._check_status(frames, what, raise_faults)
                return frames
            self.counters.failures += 1
            kind = type(last)
            message = f"{what}: no valid reply after {self.retries + 1} attempts; last: {last}"
            self.counters.last_error = message
            raise kind(message)

    def _check_status(self, frames: list[Frame], what: str, raise_faults: bool = True) -> None:
        for frame in frames:
            if not frame.error:
                continue
            hw = 0
            if isinstance(self.protocol, DynamixelProtocol) and self.protocol.is_fault(frame.error):
                hw = self._read_hardware_error(frame.servo_id)
            faults = (self.protocol.status_faults(frame.error, hw) if isinstance(self.protocol, DynamixelProtocol)
                      else self.protocol.status_faults(frame.error))
            self.counters.status_errors += 1
            if self.protocol.is_fault(frame.error) or isinstance(self.protocol, DynamixelProtocol):
                self.counters.last_error = f"servo {frame.servo_id}: {', '.join(faults)} ({what})"
                if raise_faults:
                    raise ServoStatusError(frame.servo_id, faults, what)
                continue
            self._note(f"servo {frame.servo_id} warning: {', '.join(faults)} ({what})")

    def _read_hardware_error(self, servo_id: int) -> int:
        reg = self.model["Hardware_Error_Status"]
        packet = self.protocol.read(servo_id, reg.address, reg.size)
        try:
            self.transport.drain()
            self._buf.clear()
            self.transport.write(packet)
            frames, _ = self._receive([servo_id], time.monotonic() + self.timeout_s)
            return frames[0].params[0] if frames[0].params else 0
        except (BusTimeoutError, CorruptPacketError):
            return 0

    # ---- operations ----------------------------------------------------------------------------
    def ping(self, servo_id: int) -> int:
        """Model number of ``servo_id`` (raises BusTimeoutError when nobody answers)."""
        frames = self.transact(self.protocol.ping(servo_id), [servo_id], f"ping of servo {servo_id}")
        if isinstance(self.protocol, DynamixelProtocol) and len(frames[0].params) >= 2:
            return int.from_bytes(frames[0].params[:2], "little")
        return self.read(servo_id, "Model_Number")

    def read(self, servo_id: int, register: str | Register) -> int:
        reg = register if isinstance(register, Register) else self.model[register]
        frames = self.transact(self.protocol.read(servo_id, reg.address, reg.size), [servo_id],
                               f"read of {reg.name} (address {reg.address}) from servo {servo_id}", reg.size)
        return reg.decode(frames[0].params)

    def write(self, servo_id: int, register: str | Register, value: int, raise_faults: bool = True) -> None:
        """One register of one servo; ``raise_faults``: see ``transact``."""
        reg = register if isinstance(register, Register) else self.model[register]
        self.transact(self.protocol.write(servo_id, reg.address, reg.encode(value)), [servo_id],
                      f"write of {reg.name}={value} to servo {servo_id}", raise_faults=raise_faults)

    def sync_read(self, servo_ids: list[int], registers: tuple[str, ...],
                  raise_faults: bool = True) -> dict[int, dict[str, int]]:
        """Contiguous ``registers`` of every servo in one instruction; replies come in id order.
        ``raise_faults``: see ``transact``."""
        start, length = self.model.block(registers)
        frames = self.transact(self.protocol.sync_read(servo_ids, start, length), list(servo_ids),
                               f"sync read of {'+'.join(registers)} from servos {list(servo_ids)}", length,
                               raise_faults)
        return {f.servo_id: self.model.decode_block(registers, f.params) for f in frames}

    def sync_write(self, register: str, values: dict[int, int]) -> None:
        """One broadcast packet; servos do not answer, so only the port can fail here."""
        reg = self.model[register]
        items = [(sid, reg.encode(v)) for sid, v in values.items()]
        with self.lock:
            self.counters.transactions += 1
            try:
                self.transport.write(self.protocol.sync_write(reg.address, reg.size, items))
            except PortLostError as e:
                self.counters.failures += 1
                raise PortLostError(f"serial port lost during sync write of {register} to {list(values)}: {e}") from e


def open_bus(port: str, protocol: str, model: ServoModel, baudrate: int = 1_000_000, **kwargs) -> ServoBus:
    """Open ``port`` and wrap it in a bus; the caller closes ``bus.transport``."""
    transport = SerialTransport(port, baudrate)
    transport.open()
    return ServoBus(transport, make_protocol(protocol), model, **kwargs)


__all__ = ["ServoBus", "BusCounters", "open_bus", "make_protocol", "BusError", "BusTimeoutError",
           "CorruptPacketError", "PortLostError", "ServoStatusError"]
