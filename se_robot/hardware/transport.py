"""Bytes on the wire: the serial port, the packet types both protocols share, and bus errors.

The two servo protocols differ in framing and checksums but agree on the shape of a packet (an id,
an instruction or error byte, parameters), so the bus, the emulator and the tests all speak in
``Frame`` objects and only the protocol modules know the bytes. The port wrapper turns every way
a serial device can vanish (EIO on a closed pty, a pulled USB adapter) into one ``PortLostError``
so the arm layer can latch its e-stop instead of spinning on exceptions it does not recognise.
"""

from __future__ import annotations

import os
import select
from dataclasses import dataclass


class BusError(RuntimeError):
    """A servo-bus transaction failed; the message names servo, register and the bytes seen."""


class BusTimeoutError(BusError):
    """No complete, valid reply arrived within the retry budget."""


class CorruptPacketError(BusError):
    """Replies kept arriving damaged (checksum, length, wrong id) after every retry."""


class PortLostError(BusError):
    """The serial port closed or failed underneath us; nothing more can be sent."""


class PortInUseError(BusError):
    """Another process (or another driver in this one) already holds the serial port open."""


class ServoStatusError(BusError):
    """A servo reported a hardware fault (overload, overheat, voltage, ...) in its status packet."""

    def __init__(self, servo_id: int, faults: tuple[str, ...], register: str = ""):
        self.servo_id = servo_id
        self.faults = faults
        where = f" while accessing {register}" if register else ""
        super().__init__(f"servo {servo_id} reports {', '.join(faults)}{where}")


@dataclass(frozen=True)
class Frame:
    """One decoded packet. ``instruction`` is the instruction byte of an instruction packet; for a
    status packet ``error`` holds the error byte and ``params`` the data that follows it."""

    servo_id: int
    instruction: int
    params: bytes
    raw: bytes
    error: int = 0


@dataclass(frozen=True)
class Corrupt:
    """Bytes that started like a packet but failed a check; ``reason`` says which."""

    reason: str
    raw: bytes


def hexs(data: bytes | bytearray) -> str:
    """Bytes as ``ff ff 01 ..`` for error messages (capped so a flood does not bury the message)."""
    data = bytes(data)
    text = data[:64].hex(" ")
    return text + (f" ... (+{len(data) - 64} bytes)" if len(data) > 64 else "") if data else "(nothing)"


class SerialTransport:
    """A pyserial port used without pyserial's blocking timeouts: reads wait on ``select`` with
    the caller's deadline, so one slow reply never stretches into the next control tick.

    The port is opened exclusively (pyserial's ``exclusive=True``: an ``flock`` on POSIX, which
    also covers a second open in this process): two drivers on one bus would interleave goals,
    so the second one fails with ``PortInUseError`` instead.
    """

    def __init__(self, port: str, baudrate: int = 1_000_000):
        self.port = port
        self.baudrate = baudrate
        self._serial = None

    def open(self) -> None:
        import serial

        try:
            self._serial = serial.Serial(self.port, self.baudrate, timeout=0, write_timeout=1.0,
                                         exclusive=True if os.name == "posix" else None)
        except serial.SerialException as e:
            if "exclusively lock" in str(e):
                raise PortInUseError(f"serial port {self.port!r} is held by another process (or another "
                                     f"driver in this one); close it there first, e.g. find it with "
                                     f"`fuser {self.port}`") from e
            raise PortLostError(f"cannot open serial port {self.port!r} at {self.baudrate} baud: {e}") from e
        except (OSError, ValueError) as e:
            raise PortLostError(f"cannot open serial port {self.port!r} at {self.baudrate} baud: {e}") from e

    @property
    def is_open(self) -> bool:
        return self._serial is not None and self._serial.is_open

    def close(self) -> None:
        if self._serial is not None:
            try:
                self._serial.close()
            except OSError:
                pass
            self._serial = None

    def _port(self):
        if self._serial is None:
            raise PortLostError(f"serial port {self.port!r} is not open")
        return self._serial

    def write(self, data: bytes) -> None:
        import serial

        try:
            written = self._port().write(data)
        except (serial.SerialException, OSError) as e:
            raise PortLostError(f"write to {self.port!r} failed: {e}") from e
        if written != len(data):
            raise PortLostError(f"write to {self.port!r} sent {written} of {len(data)} bytes")

    def read(self, timeout_s: float) -> bytes:
        """Whatever arrives within ``timeout_s`` (possibly nothing); raises if the port is gone."""
        import serial

        port = self._port()
        try:
            ready, _, _ = select.select([port.fileno()], [], [], max(0.0, timeout_s))
            if not ready:
                return b""
            data = port.read(max(1, port.in_waiting))
        except (serial.SerialException, OSError, ValueError, TypeError) as e:
            raise PortLostError(f"read from {self.port!r} failed: {e}") from e
        if not data:
            raise PortLostError(f"read from {self.port!r} failed: port readable but returned no data")
        return data

    def drain(self, quiet_s: float = 0.0) -> bytes:
        """Discard and return bytes left over from earlier transactions (late replies, noise),
        reading until nothing has arrived for ``quiet_s``."""
        out = bytearray()
        while True:
            chunk = self.read(quiet_s)
            if not chunk or len(out) > 65536:  # a babbling line must not stall the caller forever
                return bytes(out)
            out += chunk
