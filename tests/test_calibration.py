"""Calibration per arm id: stored in the user's data directory, required by the driver, checked
against the servos at connect, never written into the package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from se_robot.arm import load_arm
from se_robot.cli import main
from se_robot.config import config_path
from se_robot.hardware.calibration import (CalibrationError, calibration_file, data_dir, inside_package,
                                           load_calibration, save_calibration)
from se_robot.hardware.emulator import VirtualArm
from se_robot.hardware.serial_arm import SerialArm

pytestmark = pytest.mark.timeout(120)

ARM = load_arm("so101")


@pytest.fixture
def data(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SE_ROBOT_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def _package_files() -> dict[str, float]:
    roots = [config_path(), Path(__file__).resolve().parents[1] / "se_robot"]
    return {str(p): p.stat().st_mtime for r in roots for p in r.rglob("*") if p.is_file()}


def test_data_dir_follows_xdg_unless_overridden(tmp_path, monkeypatch):
    monkeypatch.delenv("SE_ROBOT_DATA_DIR", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_dir() == tmp_path / "home" / ".local" / "share" / "se_robot"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert calibration_file("my_so101") == tmp_path / "xdg" / "se_robot" / "calibration" / "my_so101.yaml"
    monkeypatch.setenv("SE_ROBOT_DATA_DIR", str(tmp_path / "override"))
    assert data_dir() == tmp_path / "override"
    for bad in ("../so101", "a/b", "", ".hidden"):
        with pytest.raises(ValueError, match="arm id"):
            calibration_file(bad)


def test_no_calibration_is_refused_naming_the_calibrate_command(data):
    with pytest.raises(CalibrationError) as err:
        SerialArm(ARM, "/dev/ttyACM0")
    assert "se-robot calibrate --port /dev/ttyACM0 --arm so101 --arm-id so101" in str(err.value)
    assert str(data / "calibration" / "so101.yaml") in str(err.value)
    with pytest.raises(CalibrationError, match="--arm-id my_so101"):
        SerialArm(ARM, "/dev/ttyACM0", arm_id="my_so101")


def test_calibrate_writes_to_the_data_dir_where_the_driver_finds_it(data, capsys):
    before = _package_files()
    with VirtualArm(ARM) as virtual:
        assert main(["calibrate", "--port", virtual.port, "--arm-id", "my_so101", "--non-interactive",
                     "--from-limit-registers"]) == 0
        written = data / "calibration" / "my_so101.yaml"
        assert f"wrote {written}" in capsys.readouterr().out
        # the emulator's servos were commissioned with its factory calibration: it comes back
        assert load_calibration(written, ARM) == virtual.calibration
        with SerialArm(ARM, virtual.port, arm_id="my_so101") as robot:
            assert np.allclose(robot.read_state().positions, ARM.home, atol=2e-3)
        with pytest.raises(CalibrationError, match="--arm-id so101"):
            SerialArm(ARM, virtual.port)  # another arm id has no calibration
        # an explicit path still works, without any arm id
        with SerialArm(ARM, virtual.port, str(virtual.calibration_path)) as robot:
            assert robot.calibration == virtual.calibration
    assert _package_files() == before


def test_calibrate_refuses_an_out_inside_the_package(data, capsys):
    for out in (config_path("arms", "so101_calibration.yaml"),
                Path(__file__).resolve().parents[1] / "se_robot" / "hardware" / "cal.yaml"):
        assert inside_package(out)
        assert main(["calibrate", "--port", "/dev/null", "--out", str(out), "--non-interactive",
                     "--from-limit-registers"]) == 2
        assert "inside the installed se_robot package" in capsys.readouterr().err
        assert not out.exists()
    assert not inside_package(data / "cal.yaml")
    assert main(["calibrate", "--port", "/dev/null", "--arm-id", "../x", "--non-interactive",
                 "--from-limit-registers"]) == 2
    assert "arm id" in capsys.readouterr().err


def test_connect_refuses_a_servo_outside_its_calibrated_range():
    with VirtualArm(ARM) as virtual:
        elbow = virtual.calibration.joints["elbow_flex"]
        virtual.physics.move_to(elbow.servo_id, elbow.max_ticks + 300)
        robot = SerialArm(ARM, virtual.port, virtual.calibration, arm_id="my_so101", timeout_s=0.02)
        with pytest.raises(CalibrationError) as err:
            robot.connect()
        message = str(err.value)
        assert f"elbow_flex (servo 3) is at {elbow.max_ticks + 300} ticks" in message
        assert f"{elbow.min_ticks}..{elbow.max_ticks}" in message
        assert "shoulder_pan" not in message
        assert f"se-robot calibrate --port {virtual.port} --arm so101 --arm-id my_so101" in message
        assert not robot.is_connected
        virtual.physics.move_to(elbow.servo_id, elbow.max_ticks + 2)  # resting at the end stop: fine
        with robot:
            assert robot.is_connected


def test_the_emulator_ships_its_own_fixture():
    fixture = config_path("arms", "so101_emulator_calibration.yaml")
    virtual = VirtualArm(ARM)
    assert virtual.calibration_path == fixture
    assert virtual.calibration == load_calibration(fixture, ARM)
    assert not config_path("arms", "so101_calibration.yaml").exists()
    assert "emulator" in fixture.read_text().splitlines()[0]


def test_the_leader_never_picks_up_the_followers_calibration(data, capsys):
    from se_robot.hardware.calibration import default_arm_id, default_leader_arm_id
    from se_robot.teleop.devices import make_teleop
    from se_robot.teleop.leader import LeaderArmTeleop

    assert default_leader_arm_id(ARM) == "so101_leader" != default_arm_id(ARM)
    with VirtualArm(ARM) as virtual:
        save_calibration(virtual.calibration, calibration_file("so101"))   # the follower's only
        with pytest.raises(CalibrationError) as err:
            LeaderArmTeleop(ARM, virtual.port)
        assert f"se-robot calibrate --port {virtual.port} --arm so101 --arm-id so101_leader" in str(err.value)
        # the command the error names (spelled --leader here) makes the leader usable
        assert main(["calibrate", "--port", virtual.port, "--leader", "--non-interactive",
                     "--from-limit-registers"]) == 0
        assert "arm id: so101_leader (se-robot record --teleop leader finds it)" in capsys.readouterr().out
        assert (data / "calibration" / "so101_leader.yaml").is_file()
        with LeaderArmTeleop(ARM, virtual.port) as leader:
            assert leader.arm_id == "so101_leader"
            np.testing.assert_allclose(leader.leader_positions(), ARM.home, atol=2e-3)
        # another id, set through the factory record uses
        with pytest.raises(CalibrationError, match="--arm-id bench_leader"):
            make_teleop("leader", device=virtual.port, leader_arm_id="bench_leader", keyboard_buttons=False)


def test_record_names_the_leader_calibration_to_make(data, tmp_path, capsys):
    """A missing leader calibration ends `se-robot record` before anything moves, with the command."""
    save_calibration(VirtualArm(ARM).calibration, calibration_file("so101"))
    args = ["record", "--task", "reach", "--obs-mode", "state", "--teleop", "leader",
            "--device", "/dev/se_robot_leader", "--out", str(tmp_path / "ds"), "--episodes", "1"]
    assert main(args) == 2
    assert "se-robot calibrate --port /dev/se_robot_leader --arm so101 --arm-id so101_leader" in capsys.readouterr().err
    assert main(args + ["--leader-arm-id", "left_leader"]) == 2
    assert "--arm-id left_leader" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()   # refused before the dataset was created


def test_arm_id_reaches_serial_arm_through_make_env_and_record(data):
    from se_robot.cli import build_parser
    from se_robot.commands.record import make_record_env
    from se_robot.envs import make_env

    with VirtualArm(ARM) as virtual:
        save_calibration(virtual.calibration, calibration_file("bench_so101"))
        with pytest.raises(CalibrationError, match="--arm-id so101"):
            make_env("reach", backend="hardware", port=virtual.port, scene_camera=None, obs_mode="state")
        env = make_env("reach", backend="hardware", port=virtual.port, arm_id="bench_so101", scene_camera=None,
                       obs_mode="state", frame_stack=0)
        try:
            robot = env.unwrapped.robot
            assert robot.device.arm_id == "bench_so101" and robot.calibration == virtual.calibration
            obs, _ = env.reset(seed=0)   # connects (the stored calibration fits the servos) and homes
            assert env.observation_space.contains(obs)
            np.testing.assert_allclose(robot.read().positions, ARM.home, atol=0.05)
        finally:
            env.close()
    args = build_parser().parse_args(["record", "--backend", "hardware", "--port", "/dev/se_robot_follower",
                                      "--arm-id", "bench_so101", "--obs-mode", "state", "--task", "reach",
                                      "--out", str(data / "ds")])
    env = make_record_env(args, "ee_delta")   # built, never connected
    assert env.unwrapped.robot.device.arm_id == "bench_so101"
    env.close()


def test_train_and_evaluate_carry_arm_id_in_the_env_options(data, tmp_path):
    from se_robot.cli import build_parser
    from se_robot.commands.train import resolve_config
    from se_robot.config import ConfigError

    parse = build_parser().parse_args
    cfg, _, _ = resolve_config(parse(["train", "--backend", "hardware", "--arm-id", "bench_so101", "--set",
                                      "env.port=/dev/ttyACM0", "--out", str(tmp_path / "run")]))
    assert cfg.env == {"arm_id": "bench_so101", "port": "/dev/ttyACM0"}
    with pytest.raises(ConfigError, match="only the hardware backend"):
        resolve_config(parse(["train", "--arm-id", "bench_so101", "--out", str(tmp_path / "run")]))
    assert parse(["evaluate", "--checkpoint", "x", "--arm-id", "bench_so101"]).arm_id == "bench_so101"
