"""A calibration file written by LeRobot for an SO-101 imports into se_robot's per-arm-id calibration."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from se_robot.arm import load_arm
from se_robot.cli import main
from se_robot.config import ConfigError
from se_robot.hardware.calibration import load_calibration
from se_robot.hardware.emulator import VirtualArm
from se_robot.hardware.lerobot_calibration import calibration_from_lerobot, read_lerobot_calibration
from se_robot.hardware.serial_arm import SerialArm
from tests.support.lerobot_runner import run_lerobot

pytestmark = pytest.mark.timeout(120)

ARM = load_arm("so101")

#: what ``lerobot-calibrate --robot.type=so101_follower`` writes (LeRobot 0.4), numbers from a real arm's shape
LEROBOT_FILE = {
    "shoulder_pan": {"id": 1, "drive_mode": 0, "homing_offset": -1470, "range_min": 758, "range_max": 3292},
    "shoulder_lift": {"id": 2, "drive_mode": 0, "homing_offset": 157, "range_min": 812, "range_max": 3223},
    "elbow_flex": {"id": 3, "drive_mode": 0, "homing_offset": 1062, "range_min": 852, "range_max": 3071},
    "wrist_flex": {"id": 4, "drive_mode": 1, "homing_offset": -1399, "range_min": 880, "range_max": 3237},
    "wrist_roll": {"id": 5, "drive_mode": 0, "homing_offset": 1817, "range_min": 0, "range_max": 4095},
    "gripper": {"id": 6, "drive_mode": 0, "homing_offset": 1133, "range_min": 2019, "range_max": 3490},
}


def expected_rad(name: str, ticks: np.ndarray, m: dict, reading: dict[str, np.ndarray]) -> np.ndarray:
    """The angle a LeRobot reading of ``ticks`` stands for: its -100..100 (or the gripper's 0..100 %)
    reading scaled back to ticks, which carries drive_mode; the zero as se_robot rounds it."""
    span = m["range_max"] - m["range_min"]
    if name == "gripper":
        return reading["pct"] / 100 * span * 2 * math.pi / 4096
    return reading["m100"] / 100 * span / 2 * 2 * math.pi / 4096


def lerobot_readings(ticks: np.ndarray, m: dict) -> dict[str, np.ndarray]:
    """LeRobot's MotorNormMode formulas (motors_bus.py ``_normalize``), for the test without LeRobot."""
    lo, hi, sign = m["range_min"], m["range_max"], -1 if m["drive_mode"] else 1
    pct = (ticks - lo) / (hi - lo) * 100
    return {"m100": sign * ((ticks - lo) / (hi - lo) * 200 - 100), "pct": 100 - pct if m["drive_mode"] else pct,
            "degrees": (ticks - (lo + hi) / 2) * 360 / 4095}


HALF_TICK_RAD = 0.5 * 2 * math.pi / 4096


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("SE_ROBOT_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def write(tmp_path, content) -> str:
    path = tmp_path / "my_arm.json"
    path.write_text(json.dumps(content, indent=4))
    return str(path)


def check_against(cal, readings_of) -> None:
    """se_robot's angles agree with LeRobot's readings of the same ticks, for every motor of the file."""
    for name, m in LEROBOT_FILE.items():
        ticks = np.rint(np.linspace(m["range_min"], m["range_max"], 7))
        reading = readings_of(name, ticks)
        rad = cal.ticks_to_rad(ticks, [name] * len(ticks))
        assert rad == pytest.approx(expected_rad(name, ticks, m, reading), abs=HALF_TICK_RAD + 1e-9), name
        if name != "gripper" and not m["drive_mode"]:   # LeRobot's degrees mode ignores drive_mode
            assert rad == pytest.approx(np.radians(reading["degrees"]), abs=HALF_TICK_RAD + 1e-3), name


def test_mapping_reads_the_angles_lerobot_reads(tmp_path):
    cal = calibration_from_lerobot(ARM, read_lerobot_calibration(write(tmp_path, LEROBOT_FILE)))
    for name, m in LEROBOT_FILE.items():
        j = cal.joints[name]
        assert (j.servo_id, j.min_ticks, j.max_ticks) == (m["id"], m["range_min"], m["range_max"])
        assert j.direction == (-1 if m["drive_mode"] else 1)
    check_against(cal, lambda name, ticks: lerobot_readings(ticks, LEROBOT_FILE[name]))
    # the gripper: 0 rad at LeRobot's 0 % (range_min, the closed jaw)
    assert cal.ticks_to_rad(np.array([LEROBOT_FILE["gripper"]["range_min"]]), ["gripper"])[0] == 0.0
    # a goal outside LeRobot's recorded range is clamped to it
    assert cal.rad_to_ticks(np.array([10.0]), ["shoulder_pan"])[0] == LEROBOT_FILE["shoulder_pan"]["range_max"]


NORMALIZE = r"""
import json, sys
from lerobot.motors import Motor, MotorCalibration, MotorNormMode
from lerobot.motors.feetech import FeetechMotorsBus

calibration = {n: MotorCalibration(**m) for n, m in json.loads(sys.argv[1]).items()}
ticks = json.loads(sys.argv[2])
out = {n: {} for n in calibration}
for label, mode in (("m100", MotorNormMode.RANGE_M100_100), ("degrees", MotorNormMode.DEGREES)):
    motors = {n: Motor(c.id, "sts3215", MotorNormMode.RANGE_0_100 if n == "gripper" else mode)
              for n, c in calibration.items()}
    bus = FeetechMotorsBus("/dev/null", motors, calibration)   # never connected: normalising only
    for n, c in calibration.items():
        key = "pct" if n == "gripper" else label
        out[n][key] = [bus._normalize({c.id: t})[c.id] for t in ticks[n]]
print(json.dumps(out))
"""


def test_mapping_agrees_with_lerobots_own_normalisation(tmp_path):
    """The same check against LeRobot's own code (its FeetechMotorsBus), run in the LeRobot venv."""
    cal = calibration_from_lerobot(ARM, read_lerobot_calibration(write(tmp_path, LEROBOT_FILE)))
    grid = {n: np.rint(np.linspace(m["range_min"], m["range_max"], 7)).astype(int).tolist()
            for n, m in LEROBOT_FILE.items()}
    got = run_lerobot(NORMALIZE, json.dumps(LEROBOT_FILE), json.dumps(grid))
    check_against(cal, lambda name, ticks: {k: np.array(v) for k, v in got[name].items()})


@pytest.mark.parametrize("change, match", [
    (lambda f: f.pop("gripper"), "lacks \\['gripper'\\]"),
    (lambda f: f.update(base=f.pop("shoulder_pan")), "unknown motors \\['base'\\]"),
    (lambda f: f["elbow_flex"].update(id=7), "elbow_flex.id: servo id 7"),
    (lambda f: f["elbow_flex"].update(range_min=4000), "elbow_flex.range_min"),
    (lambda f: f["wrist_roll"].update(drive_mode=2), "wrist_roll.drive_mode"),
    (lambda f: f["wrist_roll"].pop("homing_offset"), "wrist_roll.homing_offset: missing"),
    (lambda f: f["wrist_roll"].update(range_max=40.5), "wrist_roll.range_max: expected an integer"),
])
def test_a_file_that_does_not_fit_is_refused_naming_the_motor(tmp_path, change, match):
    content = json.loads(json.dumps(LEROBOT_FILE))
    change(content)
    with pytest.raises(ConfigError, match=match):
        calibration_from_lerobot(ARM, read_lerobot_calibration(write(tmp_path, content)))


def test_not_json_is_refused(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("homing_offset: 3")
    with pytest.raises(ConfigError, match="invalid JSON"):
        read_lerobot_calibration(path)


def test_calibrate_from_lerobot_writes_the_arm_id_and_checks_the_servos(data, tmp_path, capsys):
    with VirtualArm(ARM) as virtual:
        # a LeRobot file over the emulator's factory ranges (the body joints' middles are its zero)
        factory = virtual.calibration.joints
        content = {n: {"id": j.servo_id, "drive_mode": 0, "homing_offset": 0, "range_min": j.min_ticks,
                       "range_max": j.max_ticks} for n, j in factory.items()}
        content["shoulder_pan"]["homing_offset"] = -1470
        path = write(tmp_path, content)
        # the servos do not hold the offset LeRobot would have written: refused, nothing written
        assert main(["calibrate", "--from-lerobot", path, "--arm-id", "my_so101", "--port", virtual.port]) == 1
        assert "shoulder_pan (servo 1) holds Homing_Offset 0, the file says -1470" in capsys.readouterr().err
        assert not (data / "calibration" / "my_so101.yaml").exists()
        virtual.emulator.set_register(1, "Homing_Offset", -1470)
        assert main(["calibrate", "--from-lerobot", path, "--arm-id", "my_so101", "--port", virtual.port]) == 0
        written = data / "calibration" / "my_so101.yaml"
        assert f"wrote {written}" in capsys.readouterr().out
        cal = load_calibration(written, ARM)
        # the arm driven with the imported calibration reads its home pose (the gripper's zero moved
        # from the factory's 2048 ticks to LeRobot's 0 %, range_min)
        gripper_shift = (2048 - factory["gripper"].min_ticks) * 2 * math.pi / 4096
        with SerialArm(ARM, virtual.port, arm_id="my_so101") as robot:
            assert robot.calibration == cal
            expected = ARM.home + np.where(np.array(ARM.joint_names) == "gripper", gripper_shift, 0.0)
            assert np.allclose(robot.read_state().positions, expected, atol=2e-3)
    # without --port no servo is read; the file alone converts
    assert main(["calibrate", "--from-lerobot", write(tmp_path, LEROBOT_FILE), "--arm-id", "other"]) == 0
    assert (data / "calibration" / "other.yaml").exists()
    assert main(["calibrate", "--arm-id", "other", "--non-interactive", "--from-limit-registers"]) == 2
    assert "--port is required" in capsys.readouterr().err
