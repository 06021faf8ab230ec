"""Packet framing, checksums, register encodings; property tests with random and hostile bytes."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from se_robot.hardware import dynamixel, feetech
from se_robot.hardware.dynamixel import DynamixelProtocol, crc16, stuff, unstuff
from se_robot.hardware.feetech import FeetechProtocol
from se_robot.hardware.registers import STS3215, XL430, Register
from se_robot.hardware.transport import Corrupt, Frame

pytestmark = pytest.mark.timeout(120)

PROTOCOLS = [FeetechProtocol(), DynamixelProtocol()]


def test_ping_bytes_match_the_manuals():
    assert FeetechProtocol().ping(1).hex(" ") == "ff ff 01 02 01 fb"
    assert DynamixelProtocol().ping(1).hex(" ") == "ff ff fd 00 01 03 00 01 19 4e"


def test_crc_matches_robotis_sdk_table():
    from dynamixel_sdk.protocol2_packet_handler import Protocol2PacketHandler

    sdk = Protocol2PacketHandler()
    for data in (b"", b"\x00", bytes(range(256)), b"\xff\xff\xfd\x00\x01\x03\x00\x01"):
        assert crc16(data) == sdk.updateCRC(0, list(data), len(data))


@given(st.binary(max_size=200))
def test_crc_equals_sdk_on_random_bytes(data):
    from dynamixel_sdk.protocol2_packet_handler import Protocol2PacketHandler

    assert crc16(data) == Protocol2PacketHandler().updateCRC(0, list(data), len(data))


@given(st.binary(max_size=100))
def test_stuffing_round_trips_and_hides_headers(payload):
    stuffed = stuff(payload)
    assert unstuff(stuffed) == payload
    # after stuffing, every FF FF FD is followed by the stuffed FD
    i = stuffed.find(b"\xff\xff\xfd")
    while i >= 0:
        assert stuffed[i + 3:i + 4] == b"\xfd"
        i = stuffed.find(b"\xff\xff\xfd", i + 4)


def test_dynamixel_write_with_header_bytes_in_data_is_stuffed():
    pkt = DynamixelProtocol().write(1, 116, bytes([0xFF, 0xFF, 0xFD, 0x00]))
    assert b"\xff\xff\xfd\xfd" in pkt
    frame, skipped, consumed = DynamixelProtocol().extract(pkt, status=False)
    assert isinstance(frame, Frame) and frame.params == bytes([116, 0, 0xFF, 0xFF, 0xFD, 0x00])
    assert (skipped, consumed) == (0, len(pkt))


@pytest.mark.parametrize("proto", PROTOCOLS, ids=lambda p: p.name)
def test_status_round_trip_with_noise_before(proto):
    pkt = proto.status(7, 0, b"\x01\x02\x03")
    frame, skipped, consumed = proto.extract(b"\x00\x13\x42" + pkt)
    assert isinstance(frame, Frame)
    assert (frame.servo_id, frame.error, frame.params) == (7, 0, b"\x01\x02\x03")
    assert skipped == 3 and consumed == 3 + len(pkt)


@pytest.mark.parametrize("proto", PROTOCOLS, ids=lambda p: p.name)
def test_bad_checksum_and_truncation_are_detected(proto):
    pkt = bytearray(proto.status(2, 0, b"\x10\x20"))
    bad = bytes(pkt[:-1]) + bytes([pkt[-1] ^ 0xFF])
    item, skipped, consumed = proto.extract(bad)
    assert isinstance(item, Corrupt) and consumed == 1
    item, _, _ = proto.extract(bytes(pkt[:-2]))
    assert item is None  # truncated: needs more bytes


@pytest.mark.parametrize("proto", PROTOCOLS, ids=lambda p: p.name)
def test_real_packet_found_after_damaged_one(proto):
    good = proto.status(3, 0, b"\x05\x06")
    damaged = bytearray(proto.status(1, 0, b"\x07\x08"))
    damaged[-1] ^= 0x01
    frames = _all_frames(proto, bytes(damaged) + good)
    assert [f.servo_id for f in frames] == [3]


def _all_frames(proto, data: bytes) -> list[Frame]:
    buf = bytearray(data)
    out = []
    for _ in range(len(data) + 2):
        item, skipped, consumed = proto.extract(buf)
        assert 0 <= skipped <= consumed <= len(buf)
        if isinstance(item, Frame):
            out.append(item)
        if item is None and consumed == 0:
            break
        del buf[:consumed]
    return out


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PROTOCOLS), st.binary(max_size=300))
def test_hostile_bytes_never_crash_and_always_progress(proto, data):
    _all_frames(proto, data)


@settings(max_examples=200)
@given(st.sampled_from(PROTOCOLS), st.binary(max_size=60).map(lambda b: b.replace(b"\xff", b"")),
       st.integers(0, 252), st.integers(0, 0x7F), st.binary(max_size=20))
def test_packet_hidden_in_noise_is_found(proto, noise, servo_id, error, data):
    pkt = proto.status(servo_id, error, data)
    frames = _all_frames(proto, noise + pkt)
    assert len(frames) == 1
    assert (frames[0].servo_id, frames[0].error, frames[0].params) == (servo_id, error, data)


@given(st.integers(-4095, 4095))
def test_feetech_sign_magnitude(value):
    reg = STS3215["Present_Velocity"]
    raw = reg.encode(value)
    assert reg.decode(raw) == value
    assert (int.from_bytes(raw, "little") >> 15) == (1 if value < 0 else 0)


def test_feetech_sign_bits_of_load_and_homing_offset():
    assert STS3215["Present_Load"].decode((1024 + 100).to_bytes(2, "little")) == -100
    assert STS3215["Homing_Offset"].encode(-5) == (2048 + 5).to_bytes(2, "little")
    assert STS3215["Present_Position"].decode(b"\x01\x80") == -1


@given(st.integers(-(2**31), 2**31 - 1))
def test_dynamixel_twos_complement(value):
    reg = XL430["Present_Position"]
    assert reg.decode(reg.encode(value)) == value


def test_values_that_do_not_fit_name_the_register():
    with pytest.raises(ValueError, match="Goal_Position"):
        STS3215["Goal_Position"].encode(40000)
    with pytest.raises(ValueError, match="Torque_Enable"):
        Register("Torque_Enable", 40, 1).encode(256)
    with pytest.raises(KeyError, match="no register"):
        STS3215["Nope"]


def test_state_blocks_are_contiguous():
    assert STS3215.block(STS3215.state_block) == (56, 6)
    assert XL430.block(XL430.state_block) == (126, 10)
    with pytest.raises(ValueError, match="not contiguous"):
        STS3215.block(("Goal_Position", "Present_Position"))


def test_status_fault_names():
    assert "overload" in FeetechProtocol().status_faults(0x20)
    assert FeetechProtocol().is_fault(0x04) and not FeetechProtocol().is_fault(0x02)
    assert DynamixelProtocol().status_faults(dynamixel.ALERT_BIT, 0x04) == ("overheat",)
    assert feetech.checksum(b"\x01\x02\x01") == 0xFB
