"""Feetech STS/SMS servos, protocol 0: ``FF FF id len instr params checksum``.

``len`` counts the instruction (or error) byte, the parameters and the checksum; the checksum is
the inverted low byte of the sum of id, len, instruction and parameters. Status packets have the
same shape with the servo's error bits where the instruction was. Sync read makes every listed
servo answer with its own status packet, in the order the ids were listed.
"""

from __future__ import annotations

from se_robot.hardware.transport import Corrupt, Frame

BROADCAST_ID = 0xFE
INST_PING = 0x01
INST_READ = 0x02
INST_WRITE = 0x03
INST_REG_WRITE = 0x04
INST_ACTION = 0x05
INST_SYNC_READ = 0x82
INST_SYNC_WRITE = 0x83

# Error bits of a status packet (Feetech manual, "status packet").
ERROR_BITS = {0x01: "input voltage error", 0x02: "angle (sensor/limit) error", 0x04: "overheat",
              0x08: "overcurrent", 0x20: "overload"}
# Bits that mean the servo is in trouble, not merely that a goal was outside its limits.
FAULT_MASK = 0x01 | 0x04 | 0x08 | 0x20

_HEADER = b"\xff\xff"
_MAX_LENGTH = 250


def checksum(body: bytes | bytearray) -> int:
    """Inverted low byte of the sum of everything after the header."""
    return (~sum(body)) & 0xFF


class FeetechProtocol:
    """Builds and parses protocol-0 packets; holds no state, so one instance serves any bus."""

    name = "feetech"
    broadcast_id = BROADCAST_ID
    header = _HEADER
    INST_PING, INST_READ, INST_WRITE = INST_PING, INST_READ, INST_WRITE
    INST_SYNC_READ, INST_SYNC_WRITE = INST_SYNC_READ, INST_SYNC_WRITE

    # ---- building ----------------------------------------------------------------------------
    def packet(self, servo_id: int, instruction_or_error: int, params: bytes = b"") -> bytes:
        if not 0 <= servo_id <= 0xFE:
            raise ValueError(f"feetech: servo id {servo_id} outside 0..254")
        length = len(params) + 2
        if length > _MAX_LENGTH:
            raise ValueError(f"feetech: packet of {len(params)} parameter bytes exceeds {_MAX_LENGTH - 2}")
        body = bytes([servo_id, length, instruction_or_error]) + bytes(params)
        return _HEADER + body + bytes([checksum(body)])

    def ping(self, servo_id: int) -> bytes:
        return self.packet(servo_id, INST_PING)

    def read(self, servo_id: int, address: int, length: int) -> bytes:
        return self.packet(servo_id, INST_READ, bytes([address, length]))

    def write(self, servo_id: int, address: int, data: bytes) -> bytes:
        return self.packet(servo_id, INST_WRITE, bytes([address]) + bytes(data))

    def sync_read(self, servo_ids: list[int], address: int, length: int) -> bytes:
        return self.packet(BROADCAST_ID, INST_SYNC_READ, bytes([address, length, *servo_ids]))

    def sync_write(self, address: int, length: int, items: list[tuple[int, bytes]]) -> bytes:
        params = bytearray([address, length])
        for servo_id, data in items:
            if len(data) != length:
                raise ValueError(f"feetech: sync write to servo {servo_id}: {len(data)} bytes, expected {length}")
            params += bytes([servo_id]) + bytes(data)
        return self.packet(BROADCAST_ID, INST_SYNC_WRITE, bytes(params))

    def status(self, servo_id: int, error: int = 0, data: bytes = b"") -> bytes:
        return self.packet(servo_id, error, data)

    # ---- parsing -----------------------------------------------------------------------------
    def extract(self, buf: bytes | bytearray, status: bool = True) -> tuple[Frame | Corrupt | None, int, int]:
        """Find the next packet in ``buf``.

        Returns ``(item, skipped, consumed)``: ``skipped`` bytes before the packet were noise,
        ``consumed`` bytes (noise included) may be dropped. ``item`` is None when more bytes are
        needed. A damaged packet consumes only its first byte, so a real packet hidden inside it
        is still found.
        """
        n = len(buf)
        start = 0
        while True:
            idx = bytes(buf).find(_HEADER, start)
            if idx < 0:
                keep = 1 if n and buf[-1] == 0xFF else 0
                return None, n - keep, n - keep
            if idx + 2 < n and buf[idx + 2] == 0xFF:  # FF FF FF: the header starts one byte later
                start = idx + 1
                continue
            break
        if n < idx + 4:
            return None, idx, idx
        servo_id, length = buf[idx + 2], buf[idx + 3]
        if length < 2 or length > _MAX_LENGTH or (status and servo_id > 0xFD):
            raw = bytes(buf[idx:idx + 4])
            return Corrupt(f"bad id {servo_id} or length {length}", raw), idx, idx + 1
        total = length + 4
        if n < idx + total:
            return None, idx, idx
        raw = bytes(buf[idx:idx + total])
        if checksum(raw[2:-1]) != raw[-1]:
            return Corrupt(f"checksum {raw[-1]:02x} != {checksum(raw[2:-1]):02x}", raw), idx, idx + 1
        code = raw[4]
        if status:
            return Frame(servo_id, 0, raw[5:-1], raw, error=code), idx, idx + total
        return Frame(servo_id, code, raw[5:-1], raw), idx, idx + total

    def status_faults(self, error: int) -> tuple[str, ...]:
        """Names of the error bits set in a status packet's error byte."""
        names = tuple(name for bit, name in ERROR_BITS.items() if error & bit)
        unknown = error & ~sum(ERROR_BITS)
        return names + ((f"unknown error bits 0x{unknown:02x}",) if unknown else ())

    def is_fault(self, error: int) -> bool:
        return bool(error & FAULT_MASK)
