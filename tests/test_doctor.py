"""``se-robot doctor`` against the byte-level emulator: servos found by ping over a pty, a camera
read over MJPEG on loopback, and a non-zero exit with a fix line for what cannot work."""

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
        assert f"id {servo_id} sts3215 (model 777)" in servos
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
    assert "id 1 xl430 (model 1060)" in found
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


def test_parse_ids():
    assert parse_ids("1-3,7") == [1, 2, 3, 7]
    assert parse_ids("5") == [5]
    with pytest.raises(SystemExit, match="--ids"):
        parse_ids("one")
