"""The hardware commands end to end: calibrate, emulate and the bus benchmark against the emulator."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from se_robot.arm import load_arm
from se_robot.cli import main
from se_robot.hardware.calibration import load_calibration
from se_robot.hardware.emulator import VirtualArm, emulator_calibration_path
from se_robot.hardware.registers import STS3215
from se_robot.hardware.servo_bus import open_bus

pytestmark = pytest.mark.timeout(120)

ARM = load_arm("so101")


def test_calibrate_from_limit_registers(tmp_path):
    out = tmp_path / "cal.yaml"
    with VirtualArm(ARM) as virtual:
        rc = main(["calibrate", "--port", virtual.port, "--non-interactive", "--from-limit-registers",
                   "--out", str(out)])
        assert rc == 0
        cal = load_calibration(out, ARM)
        # the emulator's servos were commissioned with its factory calibration: it comes back
        assert cal == virtual.calibration
        assert all(virtual.emulator.register(s, "Torque_Enable") == 0 for s in ARM.servo_ids)


def test_calibrate_samples_from_bus_while_joints_are_moved_by_hand(tmp_path):
    out = tmp_path / "cal.yaml"
    with VirtualArm(ARM) as virtual:
        home = {s: virtual.emulator.register(s, "Present_Position") for s in ARM.servo_ids}
        done = threading.Event()

        def hand():
            # Start moving once the command has taken its first sample (6 torque-off writes, then
            # sync reads): that first sample is the home pose.
            while virtual.emulator.instructions_seen < 8 and not done.is_set():
                time.sleep(0.002)
            for k in range(200):
                if done.is_set():
                    return
                for s in ARM.servo_ids:
                    virtual.physics.move_to(s, home[s] + (300 if k % 2 else -200))
                time.sleep(0.01)

        mover = threading.Thread(target=hand)
        mover.start()
        try:
            rc = main(["calibrate", "--port", virtual.port, "--non-interactive", "--samples-from-bus",
                       "--duration", "0.6", "--hz", "100", "--out", str(out)])
        finally:
            done.set()
            mover.join()
        assert rc == 0
        cal = load_calibration(out, ARM)
        for j in ARM.joints:
            c = cal.joints[j.name]
            assert (c.min_ticks, c.max_ticks) == (home[j.servo_id] - 200, home[j.servo_id] + 300)
            assert c.homing_offset_ticks == virtual.calibration.joints[j.name].homing_offset_ticks


def test_calibrate_refuses_a_joint_that_never_moved(tmp_path, capsys):
    with VirtualArm(ARM) as virtual:
        rc = main(["calibrate", "--port", virtual.port, "--non-interactive", "--samples-from-bus",
                   "--duration", "0.05", "--out", str(tmp_path / "c.yaml")])
    assert rc == 1 and "did not move" in capsys.readouterr().err
    assert main(["calibrate", "--port", "/dev/null", "--non-interactive"]) == 2


def test_bus_benchmark_prints_a_figure(capsys):
    from benchmarks.__main__ import main as benchmark

    assert benchmark(["bus", "--ticks", "20"]) == 0
    assert "median" in capsys.readouterr().out


def test_emulate_serves_a_pty_and_a_stable_link(tmp_path):
    link = tmp_path / "arm"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "se_robot.cli", "emulate", "--link", str(link), "--seconds", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("pty: "), line + proc.stderr.read()
        lines = [proc.stdout.readline() for _ in range(3)]  # link, protocol, calibration
        assert lines[2].startswith(f"calibration: {emulator_calibration_path(ARM)} "), lines
        while not link.is_symlink():
            time.sleep(0.01)
        bus = open_bus(str(link), "feetech", STS3215)
        try:
            assert [bus.ping(s) for s in ARM.servo_ids] == [777] * ARM.n_joints
        finally:
            bus.transport.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert not link.is_symlink()  # SIGTERM still cleans up


def test_calibrate_interactive(tmp_path, monkeypatch, capsys):
    out = tmp_path / "cal.yaml"
    with VirtualArm(ARM) as virtual:
        home = {s: virtual.emulator.register(s, "Present_Position") for s in ARM.servo_ids}
        prompts = []

        def operator(prompt: str) -> str:
            prompts.append(prompt)
            if len(prompts) == 2:  # "move every joint": do so while the command samples
                for k in range(6):
                    for s in ARM.servo_ids:
                        virtual.physics.move_to(s, home[s] + (100 if k % 2 else -100))
                    seen = virtual.emulator.instructions_seen
                    while virtual.emulator.instructions_seen < seen + 2:  # sampled at least once
                        time.sleep(0.002)
            return ""

        monkeypatch.setattr("builtins.input", operator)
        assert main(["calibrate", "--port", virtual.port, "--out", str(out), "--invert", "wrist_roll"]) == 0
    assert "home pose" in prompts[0]
    cal = load_calibration(out, ARM)
    assert cal.joints["wrist_roll"].direction == -1
    assert cal.joints["shoulder_pan"].min_ticks == home[1] - 100
    assert cal.joints["shoulder_pan"].max_ticks == home[1] + 100
