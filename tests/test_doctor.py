"""``se-robot doctor`` against the byte-level emulator: servos found by ping over a pty (named with
--port, or found by scanning every port in both protocols), a camera read over MJPEG on loopback,
and a non-zero exit with a fix line for what cannot work."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from se_robot.arm import load_arm
from se_robot.cli import main
from se_robot.commands.doctor import parse_ids
from se_robot.hardware.calibration import calibrate_command, calibration_file, save_calibration
from se_robot.hardware.emulator import VirtualArm

pytestmark = pytest.mark.timeout(180)

ARM = load_arm("so101")


def lines_with(text: str, *words: str) -> list[str]:
    return [line for line in text.splitlines() if all(w in line for w in words)]


def fail_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("FAIL")]


def store_calibration(calibration, arm_id: str) -> Path:
    """What ``se-robot calibrate --arm-id`` leaves behind, in the session's private data dir."""
    return save_calibration(calibration, calibration_file(arm_id))


def test_doctor_finds_the_emulated_servos_and_camera(capsys):
    with VirtualArm(ARM, physics="twin", camera_port=0, camera_size=(320, 240)) as virtual:
        url = virtual.camera_url
        stored = store_calibration(virtual.calibration, "doctor_so101")
        code = main(["doctor", "--port", virtual.port, "--arm-id", "doctor_so101", "--camera", url, "--timing",
                     "--ticks", "20", "--seconds", "0.5"])
    out = capsys.readouterr().out
    assert code == 0, out
    (servos,) = lines_with(out, "ok", "feetech servos on", virtual.port)
    for servo_id in ARM.servo_ids:   # every id with its model: the STS3215's model number is 777
        assert f"id {servo_id} sts3215 (model 777, firmware 3.9)" in servos
    assert not lines_with(out, "dynamixel servos")   # a Feetech bus does not answer Dynamixel pings
    assert lines_with(out, "ok", "control tick on", "Hz possible")
    assert lines_with(out, "ok", f"camera {url}: 320x240", "fps delivered")
    assert lines_with(out, "ok", "frame age p50")
    assert lines_with(out, "ok", "calibration of arm id 'doctor_so101'", str(stored))
    assert lines_with(out, "ok", "every servo of so101 is inside its calibrated range")
    assert not lines_with(out, "FAIL")


def test_a_missing_calibration_fails_with_the_calibrate_command(capsys):
    with VirtualArm(ARM) as virtual:
        assert main(["doctor", "--port", virtual.port, "--arm-id", "never_calibrated"]) == 1
        out = capsys.readouterr().out
        assert lines_with(out, "ok", "feetech servos on")   # the servos are fine: only the calibration is missing
        (fail,) = fail_lines(out)
        assert "no calibration for arm id 'never_calibrated'" in fail and "never_calibrated.yaml" in fail
        lines = out.splitlines()
        fix = lines[lines.index(fail) + 1].strip()
        assert fix == f"fix: {calibrate_command(ARM, 'never_calibrated', virtual.port)}"
        # the emulator's own calibration, given as a file, passes
        assert main(["doctor", "--port", virtual.port, "--calibration", str(virtual.calibration_path)]) == 0
        assert lines_with(capsys.readouterr().out, "ok", "inside its calibrated range")


def test_a_servo_outside_its_calibrated_range_fails(capsys):
    """A calibration made on another arm (or a remounted horn): the joint and its range are named."""
    with VirtualArm(ARM) as virtual:
        store_calibration(virtual.calibration, "moved_so101")
        wrist = virtual.calibration.joints["wrist_flex"]
        virtual.physics.move_to(wrist.servo_id, wrist.min_ticks - 400)
        assert main(["doctor", "--port", virtual.port, "--arm-id", "moved_so101"]) == 1
    out = capsys.readouterr().out
    (fail,) = fail_lines(out)
    assert f"wrist_flex (servo {wrist.servo_id}) is at {wrist.min_ticks - 400} ticks" in fail
    assert f"{wrist.min_ticks}..{wrist.max_ticks}" in fail and "shoulder_pan" not in fail
    assert lines_with(out, "fix:", "se-robot calibrate", "--arm-id moved_so101")


def test_a_missing_port_fails_with_a_fix(capsys):
    assert main(["doctor", "--port", "/dev/se_robot_no_such_port"]) == 1
    out = capsys.readouterr().out
    assert lines_with(out, "FAIL", "/dev/se_robot_no_such_port does not exist")
    fail_at = out.splitlines().index(lines_with(out, "FAIL", "does not exist")[0])
    assert out.splitlines()[fail_at + 1].strip().startswith("fix: ls /dev/serial/by-id/")
    assert "the robot cannot run" in out


def test_servos_in_the_other_protocol_are_a_configuration_error(capsys):
    with VirtualArm(ARM, protocol="dynamixel") as virtual:
        code = main(["doctor", "--port", virtual.port])
    out = capsys.readouterr().out
    assert code == 1
    (found,) = lines_with(out, "ok", "dynamixel servos on")
    assert "id 1 xl430 (model 1060, firmware 52)" in found
    assert lines_with(out, "FAIL", "answer in dynamixel", "configured for feetech")
    assert "fix: set bus.protocol: dynamixel" in out


def test_servos_that_do_not_answer_and_a_dead_camera_fail(capsys):
    """The bus holds servos 1-4 and two with other ids (15, 16): so101's 5 and 6 do not answer."""
    renumbered = tuple(replace(j, servo_id=j.servo_id + 10) if j.servo_id > 4 else j for j in ARM.joints)
    factory = VirtualArm(ARM).calibration   # the emulator's own calibration, with the same ids moved
    calibration = replace(factory, joints={name: replace(c, servo_id=c.servo_id + 10) if c.servo_id > 4 else c
                                           for name, c in factory.joints.items()})
    with VirtualArm(replace(ARM, joints=renumbered), calibration=calibration) as virtual:
        code = main(["doctor", "--port", virtual.port, "--camera", "/dev/se_robot_no_camera"])
    out = capsys.readouterr().out
    assert code == 1
    assert lines_with(out, "FAIL", "servos 5, 6 of so101 did not answer", "answered: 1, 2, 3, 4")
    assert lines_with(out, "fix:", "daisy-chain")
    assert lines_with(out, "FAIL", "camera /dev/se_robot_no_camera")


def renumbered(arm, offset: int):
    """``arm`` with every servo id moved by ``offset``, and its emulator calibration to match:
    another device on its own bus, whose servos are not the arm's."""
    factory = VirtualArm(arm).calibration
    joints = tuple(replace(j, servo_id=j.servo_id + offset) for j in arm.joints)
    calibration = replace(factory, joints={name: replace(c, servo_id=c.servo_id + offset)
                                           for name, c in factory.joints.items()})
    return replace(arm, joints=joints), calibration


def test_without_a_port_every_port_is_scanned_and_the_arms_port_checked(tmp_path, capsys):
    """Two buses behind links the OS does not list: so101's Feetech servos on one, Dynamixel servos
    with the same ids on the other. Both are listed with ids, models and firmware; the port in the
    arm's protocol is found and checked, calibration included, with no --port given."""
    arm_link, other_link = str(tmp_path / "bus_arm"), str(tmp_path / "bus_other")
    with VirtualArm(ARM, link=arm_link) as virtual, VirtualArm(ARM, protocol="dynamixel", link=other_link):
        store_calibration(virtual.calibration, "scanned_so101")
        code = main(["doctor", "--scan", str(tmp_path / "bus_*"), "--arm-id", "scanned_so101"])
    out = capsys.readouterr().out
    assert code == 0, out
    (ports,) = lines_with(out, "ok", "serial ports:")
    assert arm_link in ports and other_link in ports
    (feetech,) = lines_with(out, "ok", "feetech servos on", arm_link)
    assert all(f"id {i} sts3215 (model 777, firmware 3.9)" in feetech for i in ARM.servo_ids)
    (dynamixel,) = lines_with(out, "ok", "dynamixel servos on", other_link)
    assert all(f"id {i} xl430 (model 1060, firmware 52)" in dynamixel for i in ARM.servo_ids)
    assert not lines_with(out, "dynamixel servos on", arm_link) and not lines_with(out, "feetech servos on", other_link)
    assert lines_with(out, "ok", f"so101's servo ids answer on {arm_link}: checking it")
    assert not lines_with(out, "WARN", "ports")   # Dynamixel servos are not a second so101
    assert lines_with(out, "ok", "calibration of arm id 'scanned_so101'")
    assert lines_with(out, "ok", "every servo of so101 is inside its calibrated range")


def test_a_scan_without_the_arms_servos_fails_and_two_arms_ask_for_a_port(tmp_path, capsys):
    other_arm, other_calibration = renumbered(ARM, 10)
    with VirtualArm(other_arm, calibration=other_calibration, link=str(tmp_path / "bus_other")):
        assert main(["doctor", "--scan", str(tmp_path / "bus_*"), "--scan", str(tmp_path / "typo")]) == 1
    out = capsys.readouterr().out
    assert lines_with(out, "WARN", f"--scan {tmp_path / 'typo'}: no such path")
    (fail,) = fail_lines(out)
    assert "no port has servos of so101 (feetech, ids 1, 2, 3, 4, 5, 6" in fail
    assert out.splitlines()[out.splitlines().index(fail) + 1].strip().startswith("fix: check the arm's power")
    # a leader and a follower: both so101, both ids 1-6; which is which is the user's to say
    with VirtualArm(ARM, link=str(tmp_path / "bus_leader")), VirtualArm(ARM, link=str(tmp_path / "bus_follower")):
        assert main(["doctor", "--scan", str(tmp_path / "bus_[lf]*")]) == 0
    out = capsys.readouterr().out
    assert lines_with(out, "WARN", "servos with so101's ids answer on 2 ports", "leader and a follower")
    assert lines_with(out, "fix: se-robot doctor --port", "--arm-id ID")


def test_without_a_camera_every_video_device_is_listed(capsys):
    from se_robot.hardware.rig_check import list_video_devices

    with VirtualArm(ARM) as virtual:
        store_calibration(virtual.calibration, "camera_list_so101")
        main(["doctor", "--scan", virtual.port, "--arm-id", "camera_list_so101", "--seconds", "0.2"])
    out = capsys.readouterr().out
    devices = list_video_devices()
    if not devices:   # CI: no camera; the fix names the ways to attach or name one
        assert lines_with(out, "WARN", "no cameras: no /dev/video* device")
        assert lines_with(out, "fix:", "v4l2-ctl --list-devices", "--camera http://")
    for path, name in devices:
        assert lines_with(out, "ok", f"camera {path} ({name}")


def test_parse_ids():
    assert parse_ids("1-3,7") == [1, 2, 3, 7]
    assert parse_ids("5") == [5]
    with pytest.raises(SystemExit, match="--ids"):
        parse_ids("one")
