"""Teleop devices through their real seams: bytes typed into a pty, evdev records through a FIFO,
a leader arm on the servo emulator's pty."""

from __future__ import annotations

import os

import numpy as np
import pytest

from se_robot.teleop.base import CombinedDevice, apply_deadzone
from se_robot.teleop.evdev import (ABS_RY, ABS_RZ, ABS_X, ABS_Y, BTN_0, BTN_1, BTN_MODE, BTN_SOUTH, BTN_WEST,
                                   EV_ABS, EV_KEY, EV_REL, EV_SYN, EVENT_SIZE, REL_X, REL_Y, REL_Z, GamepadTeleop,
                                   SpaceMouseTeleop, encode_event, parse_events)
from se_robot.teleop.keyboard import KeyboardTeleop, parse_keys

pytestmark = pytest.mark.timeout(60)


class _EStop:
    """Stand-in only if the safety layer is missing; the real one is used when importable."""

    def __init__(self):
        self.reason = None

    @property
    def latched(self):
        return self.reason is not None

    def latch(self, reason="latched"):
        self.reason = self.reason or reason


def _estop():
    try:
        from se_robot.estop import EStop
    except ImportError:
        return _EStop()
    return EStop()


@pytest.fixture
def pty_keyboard():
    master, slave = os.openpty()
    kb = KeyboardTeleop(tty_path=os.ttyname(slave), estop=_estop())
    kb.connect()
    yield kb, master
    kb.disconnect()
    os.close(master)
    os.close(slave)


def _type(master: int, kb: KeyboardTeleop, data: bytes):
    os.write(master, data)
    # the pty delivers what was written before the read returns; poll until it has arrived
    for _ in range(200):
        import select

        if select.select([kb._fd], [], [], 0.05)[0]:
            break
    return kb.poll()


def test_parse_keys_handles_escape_sequences_split_across_reads():
    buf = bytearray(b"w\x1b[A\x1b[")
    assert parse_keys(buf) == ["w", "up"] and buf == bytearray(b"\x1b[")
    buf += b"6~q"
    assert parse_keys(buf) == ["pgdn", "q"] and not buf


def test_keyboard_over_a_pty_moves_marks_and_estops(pty_keyboard):
    kb, master = pty_keyboard
    cmd = _type(master, kb, b"w")
    np.testing.assert_allclose(cmd.action, [0.5, 0, 0, 1.0])
    assert cmd.active and not cmd.buttons
    assert not kb.poll().active  # one tick per press (the terminal repeats held keys)
    cmd = _type(master, kb, b"\x1b[D\x1b[5~g")  # left arrow, page up, gripper toggle
    np.testing.assert_allclose(cmd.action, [0, 0.5, 0.5, -1.0])
    cmd = _type(master, kb, b"+\x1b[B")
    np.testing.assert_allclose(cmd.action[:3], [-0.75, 0, 0])
    cmd = _type(master, kb, b"\r")
    assert cmd.buttons == {"success"} and not cmd.active
    assert _type(master, kb, b"n").buttons == {"failure"}
    assert _type(master, kb, b"\x7f").buttons == {"rerecord"}
    cmd = _type(master, kb, b"i")
    assert cmd.intervening and _type(master, kb, b"\t").intervening is False
    assert not kb.estop.latched
    assert _type(master, kb, b" ").pressed("estop")
    assert kb.estop.latched and "keyboard" in kb.estop.reason
    assert _type(master, kb, b"\x03").buttons == {"quit"}  # Ctrl-C is a byte, not a signal


def test_keyboard_restores_the_terminal(tmp_path):
    import termios

    master, slave = os.openpty()
    before = termios.tcgetattr(slave)
    with KeyboardTeleop(fd=slave):
        assert not termios.tcgetattr(slave)[3] & termios.ICANON
    assert termios.tcgetattr(slave) == before
    os.close(master)
    os.close(slave)


def test_parse_events_keeps_partial_records():
    data = encode_event(EV_ABS, ABS_X, -5, 1.25) + encode_event(EV_SYN, 0, 0)
    buf = bytearray(data + data[:10])
    events = parse_events(buf)
    assert [(e.type, e.code, e.value) for e in events] == [(EV_ABS, ABS_X, -5), (EV_SYN, 0, 0)]
    assert events[0].time_s == pytest.approx(1.25) and len(buf) == 10 and EVENT_SIZE == 24


def test_deadzone_rescales():
    assert apply_deadzone(0.05, 0.1) == 0.0
    assert apply_deadzone(1.0, 0.1) == 1.0 and apply_deadzone(-0.55, 0.1) == pytest.approx(-0.5)


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "event0"
    os.mkfifo(path)
    # keep a writer open so the reader's O_NONBLOCK open succeeds and reads see "no data" not EOF
    reader_fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    writer = os.open(path, os.O_WRONLY)
    yield str(path), writer
    os.close(writer)
    os.close(reader_fd)


def _frame(*events: tuple[int, int, int]) -> bytes:
    return b"".join(encode_event(*e) for e in events) + encode_event(EV_SYN, 0, 0)


def test_gamepad_from_evdev_bytes(fifo):
    path, writer = fifo
    estop = _estop()
    with GamepadTeleop(path, estop=estop) as pad:
        assert not pad.poll().active
        os.write(writer, _frame((EV_ABS, ABS_Y, -32768), (EV_ABS, ABS_X, 0), (EV_ABS, ABS_RY, 32767)))
        cmd = pad.poll()
        np.testing.assert_allclose(cmd.action, [1.0, 0.0, -1.0, 1.0], atol=1e-4)
        assert cmd.active
        os.write(writer, _frame((EV_ABS, ABS_RZ, 1023), (EV_KEY, BTN_SOUTH, 1)))
        cmd = pad.poll()
        assert cmd.action[3] == -1.0 and cmd.buttons == {"success"}  # right trigger closes
        os.write(writer, _frame((EV_KEY, BTN_SOUTH, 2), (EV_KEY, BTN_SOUTH, 0), (EV_KEY, BTN_WEST, 1)))
        cmd = pad.poll()
        assert cmd.buttons == {"intervene"} and cmd.intervening  # auto-repeat is not a second press
        os.write(writer, _frame((EV_ABS, ABS_Y, 1000), (EV_ABS, ABS_RY, 0)))  # inside the deadzone
        assert not pad.poll().active
        os.write(writer, _frame((EV_KEY, BTN_MODE, 1)))
        assert pad.poll().pressed("estop") and estop.latched


def test_gamepad_partial_record_completes_on_next_read(fifo):
    path, writer = fifo
    with GamepadTeleop(path) as pad:
        data = _frame((EV_ABS, ABS_Y, -32768))
        os.write(writer, data[:10])
        assert not pad.poll().active
        os.write(writer, data[10:])
        assert pad.poll().action[0] == pytest.approx(1.0)


def test_spacemouse_rel_and_abs_events(fifo):
    path, writer = fifo
    with SpaceMouseTeleop(path) as sm:
        os.write(writer, _frame((EV_REL, REL_Y, -350), (EV_REL, REL_X, 175), (EV_REL, REL_Z, 20)))
        cmd = sm.poll()
        assert cmd.action[0] == pytest.approx(1.0) and cmd.action[1] < -0.3 and cmd.action[2] == 0.0
        assert cmd.active
        os.write(writer, _frame((EV_KEY, BTN_0, 1), (EV_KEY, BTN_0, 0), (EV_KEY, BTN_1, 1)))
        cmd = sm.poll()
        assert cmd.action[3] == -1.0 and cmd.intervening
        os.write(writer, _frame((EV_ABS, 1, 0), (EV_ABS, 0, 0), (EV_ABS, 2, 0)))
        assert not sm.poll().active


def test_combined_device_takes_buttons_from_the_keyboard(fifo):
    path, writer = fifo
    master, slave = os.openpty()
    estop = _estop()
    kb = KeyboardTeleop(tty_path=os.ttyname(slave))
    with CombinedDevice(SpaceMouseTeleop(path), kb, estop=estop) as dev:
        os.write(writer, _frame((EV_REL, REL_Y, -350)))
        os.write(master, b"y ")
        import select

        select.select([kb._fd], [], [], 1.0)
        cmd = dev.poll()
        assert cmd.action[0] == pytest.approx(1.0) and cmd.buttons == {"success", "estop"}
        assert estop.latched and "spacemouse+keyboard" in estop.reason
    os.close(master)
    os.close(slave)


def test_evdev_missing_device_says_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such input device"):
        GamepadTeleop(str(tmp_path / "nope")).connect()


def test_leader_arm_on_the_servo_emulator():
    import se_robot.hardware.servo_emulator
    emu_mod = se_robot.hardware.servo_emulator
    from se_robot.arm import load_arm
    from se_robot.hardware.calibration import default_calibration
    from se_robot.hardware.registers import get_model
    from se_robot.teleop.leader import LeaderArmTeleop

    arm = load_arm("so101")
    cal = default_calibration(arm)
    home_ticks = cal.rad_to_ticks(arm.home, arm.joint_names)
    emu = emu_mod.ServoEmulator("feetech", get_model(arm.bus.model), arm.servo_ids,
                                initial_ticks=dict(zip(arm.servo_ids, (int(t) for t in home_ticks))))
    with emu:
        with LeaderArmTeleop(arm, emu.port, cal) as leader:
            assert all(emu.register(sid, "Torque_Enable") == 0 for sid in arm.servo_ids)
            cmd = leader.poll(follower_q=arm.home)
            np.testing.assert_allclose(cmd.joint_targets, arm.home, atol=2e-3)
            np.testing.assert_allclose(cmd.action, 0.0, atol=0.02)
            # the operator moves the leader's shoulder_pan by +0.3 rad and its elbow by -0.1 rad
            moved = arm.home.copy()
            moved[0] += 0.3
            moved[2] -= 0.1
            for sid, ticks in zip(arm.servo_ids, cal.rad_to_ticks(moved, arm.joint_names)):
                emu.physics.move_to(sid, float(ticks))
            cmd = leader.poll(follower_q=arm.home)
            np.testing.assert_allclose(cmd.joint_targets, moved, atol=2e-3)
            assert cmd.active
            assert cmd.action[0] == pytest.approx(1.0)  # 0.3 rad is past one max step: clipped
            assert cmd.action[2] == pytest.approx(-0.1 / arm.safety.max_joint_step_rad, abs=0.02)
        # torque stays off after disconnect: a leader must never stiffen in the operator's hand
        assert all(emu.register(sid, "Torque_Enable") == 0 for sid in arm.servo_ids)
