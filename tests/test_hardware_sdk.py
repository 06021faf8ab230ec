"""The vendors' SDKs as independent peers: they talk to the emulator over its pty, and the bytes
se_robot sends equal the bytes the SDKs send for the same operation (captured on a pty)."""

from __future__ import annotations

import os
import select
import time
import tty

import pytest

from se_robot.hardware.dynamixel import DynamixelProtocol
from se_robot.hardware.feetech import FeetechProtocol
from se_robot.hardware.registers import STS3215, XL430
from se_robot.hardware.servo_emulator import ServoEmulator

pytestmark = pytest.mark.timeout(120)

import scservo_sdk as scs
import dynamixel_sdk as dxl

IDS = [1, 2, 3, 4, 5, 6]


@pytest.fixture
def patient_sdks(monkeypatch):
    """The SDKs wait 2 x 16 ms + 2 ms for a reply, tuned for USB adapters; the emulator runs in a
    Python thread on a shared CI machine, so give it more (the bytes are what is under test)."""
    monkeypatch.setattr(scs.port_handler, "LATENCY_TIMER", 100)
    monkeypatch.setattr(dxl.port_handler, "LATENCY_TIMER", 100)


class Capture:
    """A bare pty: whatever a client writes to it can be read back, and nothing ever answers."""

    def __enter__(self):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        return self

    def take(self) -> bytes:
        out = bytearray()
        while select.select([self.master], [], [], 0.05)[0]:
            out += os.read(self.master, 4096)
        return bytes(out)

    def __exit__(self, *exc):
        os.close(self.master)
        os.close(self.slave)


def _feetech_sdk(path):
    port = scs.PortHandler(path)
    assert port.openPort()
    return port, scs.PacketHandler(0)


def _dxl_sdk(path):
    port = dxl.PortHandler(path)
    assert port.openPort()
    return port, dxl.PacketHandler(2.0)


# ---- byte equality ---------------------------------------------------------------------------

def test_feetech_packets_byte_equal_sdk():
    ours = FeetechProtocol()
    with Capture() as cap:
        port, ph = _feetech_sdk(cap.path)
        ph.ping(port, 1)  # the SDK pings, waits, gives up (no reply), so only the ping is sent
        assert cap.take() == ours.ping(1)
        ph.read2ByteTxRx(port, 3, 56)
        assert cap.take() == ours.read(3, 56, 2)
        ph.write2ByteTxRx(port, 2, 42, 3000)
        assert cap.take() == ours.write(2, 42, (3000).to_bytes(2, "little"))
        ph.write1ByteTxRx(port, 5, 40, 1)
        assert cap.take() == ours.write(5, 40, b"\x01")
        group = scs.GroupSyncRead(port, ph, 56, 6)
        for i in IDS:
            group.addParam(i)
        group.txPacket()
        assert cap.take() == ours.sync_read(IDS, 56, 6)
        port.is_using = False  # the SDK keeps the port busy until it has read the replies
        wgroup = scs.GroupSyncWrite(port, ph, 42, 2)
        goals = {i: 1000 + 100 * i for i in IDS}
        for i, g in goals.items():
            wgroup.addParam(i, [g & 0xFF, g >> 8])
        wgroup.txPacket()
        assert cap.take() == ours.sync_write(42, 2, [(i, g.to_bytes(2, "little")) for i, g in goals.items()])
        port.closePort()


def test_dynamixel_packets_byte_equal_sdk():
    ours = DynamixelProtocol()
    with Capture() as cap:
        port, ph = _dxl_sdk(cap.path)
        ph.ping(port, 1)
        assert cap.take() == ours.ping(1)
        ph.read4ByteTxRx(port, 3, 132)
        assert cap.take() == ours.read(3, 132, 4)
        ph.write4ByteTxRx(port, 2, 116, 3000)
        assert cap.take() == ours.write(2, 116, (3000).to_bytes(4, "little"))
        # Data containing FF FF FD must be stuffed (protocol 2.0 spec). dynamixel_sdk 4.1.0 computes
        # the stuffed packet but discards it (addStuffing's result is not used by txPacket), so
        # here the SDK's bytes differ from the spec; se_robot stuffs, and its parser accepts both.
        ph.write4ByteTxRx(port, 2, 116, 0x00FDFFFF)
        sdk_bytes = cap.take()
        stuffed = ours.write(2, 116, (0x00FDFFFF).to_bytes(4, "little"))
        assert b"\xff\xff\xfd\xfd" in stuffed
        for packet in (sdk_bytes, stuffed):
            frame, _, _ = ours.extract(packet, status=False)
            assert frame.params == bytes([116, 0, 0xFF, 0xFF, 0xFD, 0x00])
        group = dxl.GroupSyncRead(port, ph, 126, 10)
        for i in IDS:
            group.addParam(i)
        group.txPacket()
        assert cap.take() == ours.sync_read(IDS, 126, 10)
        port.is_using = False
        wgroup = dxl.GroupSyncWrite(port, ph, 116, 4)
        goals = {i: 1000 + 100 * i for i in IDS}
        for i, g in goals.items():
            wgroup.addParam(i, list(g.to_bytes(4, "little")))
        wgroup.txPacket()
        assert cap.take() == ours.sync_write(116, 4, [(i, g.to_bytes(4, "little")) for i, g in goals.items()])
        port.closePort()


# ---- SDKs as clients of the emulator ------------------------------------------------------------

def test_feetech_sdk_drives_the_emulator(patient_sdks):
    with ServoEmulator("feetech", STS3215, IDS, initial_ticks={i: 2000 + i for i in IDS}) as emu:
        port, ph = _feetech_sdk(emu.port)
        model, result, error = ph.ping(port, 3)
        assert (model, result, error) == (777, scs.COMM_SUCCESS, 0)
        _, result, _ = ph.ping(port, 9)  # nobody home
        assert result == scs.COMM_RX_TIMEOUT
        pos, result, _ = ph.read2ByteTxRx(port, 4, 56)
        assert (pos, result) == (2004, scs.COMM_SUCCESS)
        assert ph.write1ByteTxRx(port, 4, 40, 1) == (scs.COMM_SUCCESS, 0)
        assert ph.write2ByteTxRx(port, 4, 42, 2500) == (scs.COMM_SUCCESS, 0)
        group = scs.GroupSyncRead(port, ph, 56, 2)
        for i in IDS:
            group.addParam(i)
        assert group.txRxPacket() == scs.COMM_SUCCESS
        assert group.getData(1, 56, 2) == 2001
        wgroup = scs.GroupSyncWrite(port, ph, 42, 2)
        for i in IDS:
            wgroup.addParam(i, [(1500 + i) & 0xFF, (1500 + i) >> 8])
        assert wgroup.txPacket() == scs.COMM_SUCCESS
        _wait(lambda: len(emu.goals(6)) == 1)
        assert emu.goals(4) == [2500, 1504] and emu.goals(6) == [1506]
        emu.set_fault(2, 0x20)
        _, result, error = ph.read2ByteTxRx(port, 2, 56)
        assert result == scs.COMM_SUCCESS and error & 0x20  # ERRBIT_OVERLOAD
        port.closePort()


def test_dynamixel_sdk_drives_the_emulator(patient_sdks):
    with ServoEmulator("dynamixel", XL430, IDS, initial_ticks={i: 2000 + i for i in IDS}) as emu:
        port, ph = _dxl_sdk(emu.port)
        assert ph.ping(port, 2) == (1060, dxl.COMM_SUCCESS, 0)
        pos, result, _ = ph.read4ByteTxRx(port, 5, 132)
        assert (pos, result) == (2005, dxl.COMM_SUCCESS)
        assert ph.write4ByteTxRx(port, 1, 116, 0x00FDFFFF)[0] == dxl.COMM_SUCCESS  # stuffed on the wire
        group = dxl.GroupSyncRead(port, ph, 132, 4)
        for i in IDS:
            group.addParam(i)
        assert group.txRxPacket() == dxl.COMM_SUCCESS
        assert [group.getData(i, 132, 4) for i in IDS] == [2000 + i for i in IDS]
        wgroup = dxl.GroupSyncWrite(port, ph, 116, 4)
        for i in IDS:
            wgroup.addParam(i, list((3000 + i).to_bytes(4, "little")))
        assert wgroup.txPacket() == dxl.COMM_SUCCESS
        _wait(lambda: len(emu.goals(6)) == 1)
        assert emu.goals(1) == [0x00FDFFFF, 3001]
        port.closePort()


def _wait(cond, timeout_s: float = 2.0) -> None:
    end = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.005)
