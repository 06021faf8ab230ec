"""ROBOTIS Dynamixel protocol 2.0: ``FF FF FD 00 id lenL lenH instr params crcL crcH``.

``len`` counts instruction, parameters and the CRC. The CRC is CRC-16 with polynomial 0x8005
(no reflection, initial value 0) over everything before it. So that ``FF FF FD`` never appears
inside a packet, the sender stuffs an extra ``FD`` after every ``FF FF FD`` in the instruction and
parameters (and the length counts the stuffed bytes); the receiver removes it. Status packets
carry instruction 0x55 followed by an error byte: bit 7 is the hardware alert (details in the
Hardware_Error_Status register), the low bits a protocol error number.
"""

from __future__ import annotations

from se_robot.hardware.transport import Corrupt, Frame

BROADCAST_ID = 0xFE
INST_PING = 0x01
INST_READ = 0x02
INST_WRITE = 0x03
INST_STATUS = 0x55
INST_SYNC_READ = 0x82
INST_SYNC_WRITE = 0x83

PROTOCOL_ERRORS = {1: "result fail", 2: "instruction error", 3: "CRC error", 4: "data range error",
                   5: "data length error", 6: "data limit error", 7: "access error"}
ALERT_BIT = 0x80
# Hardware_Error_Status (address 70) bits.
HARDWARE_ERROR_BITS = {0x01: "input voltage error", 0x04: "overheat", 0x08: "motor encoder error",
                       0x10: "electrical shock", 0x20: "overload"}

_HEADER = b"\xff\xff\xfd"
_MAX_LENGTH = 1024


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: bytes | bytearray) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) ^ _CRC_TABLE[((crc >> 8) ^ byte) & 0xFF]) & 0xFFFF
    return crc


def stuff(payload: bytes) -> bytes:
    out = bytearray()
    for byte in payload:
        out.append(byte)
        if len(out) >= 3 and out[-3:] == _HEADER:
            out.append(0xFD)
    return bytes(out)


def unstuff(payload: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(payload):
        out.append(payload[i])
        if len(out) >= 3 and out[-3:] == _HEADER and i + 1 < len(payload) and payload[i + 1] == 0xFD:
            i += 1  # drop the stuffed FD
        i += 1
    return bytes(out)


class DynamixelProtocol:
    """Builds and parses protocol-2.0 packets; stateless."""

    name = "dynamixel"
    broadcast_id = BROADCAST_ID
    header = _HEADER
    INST_PING, INST_READ, INST_WRITE = INST_PING, INST_READ, INST_WRITE
    INST_SYNC_READ, INST_SYNC_WRITE = INST_SYNC_READ, INST_SYNC_WRITE

    # ---- building ----------------------------------------------------------------------------
    def packet(self, servo_id: int, instruction: int, params: bytes = b"") -> bytes:
        if not 0 <= servo_id <= 0xFE:
            raise ValueError(f"dynamixel: servo id {servo_id} outside 0..254")
        payload = stuff(bytes([instruction]) + bytes(params))
        length = len(payload) + 2
        if length > _MAX_LENGTH:
            raise ValueError(f"dynamixel: packet length {length} exceeds {_MAX_LENGTH}")
        head = _HEADER + bytes([0x00, servo_id, length & 0xFF, length >> 8]) + payload
        return head + crc16(head).to_bytes(2, "little")

    def ping(self, servo_id: int) -> bytes:
        return self.packet(servo_id, INST_PING)

    def read(self, servo_id: int, address: int, length: int) -> bytes:
        return self.packet(servo_id, INST_READ, address.to_bytes(2, "little") + length.to_bytes(2, "little"))

    def write(self, servo_id: int, address: int, data: bytes) -> bytes:
        return self.packet(servo_id, INST_WRITE, address.to_bytes(2, "little") + bytes(data))

    def sync_read(self, servo_ids: list[int], address: int, length: int) -> bytes:
        params = address.to_bytes(2, "little") + length.to_bytes(2, "little") + bytes(servo_ids)
        return self.packet(BROADCAST_ID, INST_SYNC_READ, params)

    def sync_write(self, address: int, length: int, items: list[tuple[int, bytes]]) -> bytes:
        params = bytearray(address.to_bytes(2, "little") + length.to_bytes(2, "little"))
        for servo_id, data in items:
            if len(data) != length:
                raise ValueError(f"dynamixel: sync write to servo {servo_id}: {len(data)} bytes, expected {length}")
            params += bytes([servo_id]) + bytes(data)
        return self.packet(BROADCAST_ID, INST_SYNC_WRITE, bytes(params))

    def status(self, servo_id: int, error: int = 0, data: bytes = b"") -> bytes:
        return self.packet(servo_id, INST_STATUS, bytes([error]) + bytes(data))

    # ---- parsing -----------------------------------------------------------------------------
    def extract(self, buf: bytes | bytearray, status: bool = True) -> tuple[Frame | Corrupt | None, int, int]:
        """Find the next packet in ``buf``; same contract as ``FeetechProtocol.extract``."""
        data = bytes(buf)
        n = len(data)
        idx = data.find(_HEADER)
        if idx < 0:
            keep = 2 if data.endswith(b"\xff\xff") else (1 if data.endswith(b"\xff") else 0)
            return None, n - keep, n - keep
        if n < idx + 7:
            return None, idx, idx
        reserved, servo_id = data[idx + 3], data[idx + 4]
        length = data[idx + 5] | (data[idx + 6] << 8)
        if reserved != 0x00 or length < 3 or length > _MAX_LENGTH or (status and length < 4):
            return Corrupt(f"bad reserved byte {reserved:02x} or length {length}", data[idx:idx + 7]), idx, idx + 1
        total = 7 + length
        if n < idx + total:
            return None, idx, idx
        raw = data[idx:idx + total]
        crc = int.from_bytes(raw[-2:], "little")
        if crc16(raw[:-2]) != crc:
            return Corrupt(f"CRC {crc:04x} != {crc16(raw[:-2]):04x}", raw), idx, idx + 1
        payload = unstuff(raw[7:-2])
        if status:
            if payload[0] != INST_STATUS:
                return Corrupt(f"instruction {payload[0]:02x} where a status (55) was expected", raw), idx, idx + total
            return Frame(servo_id, INST_STATUS, payload[2:], raw, error=payload[1]), idx, idx + total
        return Frame(servo_id, payload[0], payload[1:], raw), idx, idx + total

    def status_faults(self, error: int, hardware_error: int = 0) -> tuple[str, ...]:
        names = []
        if error & ALERT_BIT:
            hw = [name for bit, name in HARDWARE_ERROR_BITS.items() if hardware_error & bit]
            names.extend(hw or ["hardware alert"])
        code = error & 0x7F
        if code:
            names.append(PROTOCOL_ERRORS.get(code, f"protocol error {code}"))
        return tuple(names)

    def is_fault(self, error: int) -> bool:
        return bool(error & ALERT_BIT)
