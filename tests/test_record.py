"""Teleoperated recording on the sim twin and the emulated arm: labels (the operator's and the env's),
re-record, e-stop, scene restores, the CLI with keys typed into a pty."""

from __future__ import annotations

import os
import select
import threading

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(300)
os.environ.setdefault("MUJOCO_GL", "egl")
import se_robot.envs.experts  # noqa: E402 - required: CI must fail, not skip, without it
from se_robot.teleop.base import TeleopDevice  # noqa: E402


@pytest.fixture
def sim_env():
    from se_robot.envs import make_env

    env = make_env("push", frame_stack=0, obs_mode="both", image_size=32)
    yield env
    env.close()


class _Typist:
    """The pacing ``sleep`` of record_teleop: types the next chunk of keys each tick, so the run is
    deterministic without looking at a clock."""

    def __init__(self, master: int, kb, chunks: list[bytes]):
        self.master, self.kb, self.chunks = master, kb, list(chunks)

    def __call__(self, _delay_s: float) -> None:
        if not self.chunks:
            raise AssertionError("script ran out of keys")
        data = self.chunks.pop(0)
        if data:
            os.write(self.master, data)
            select.select([self.kb._fd], [], [], 2.0)


def test_record_teleop_labels_rerecord_and_estop(tmp_path, sim_env):
    from se_robot.data.episodes import iter_episodes
    from se_robot.data.writer import EpisodeWriter
    from se_robot.data.recording import dataset_meta_for
    from se_robot.teleop.keyboard import KeyboardTeleop
    from se_robot.teleop.session import record_teleop

    estop = sim_env.unwrapped.robot.estop
    assert estop is not None and not estop.latched
    master, slave = os.openpty()
    kb = KeyboardTeleop(tty_path=os.ttyname(slave), speed=1.0, estop=estop)
    typist = _Typist(master, kb, [
        b"w", b"w", b"a", b"y",  # episode 0: 1 idle + 3 moves, success
        b"s", b"x",  # re-record: dropped
        b"d", b"n",  # episode 1: failure
        b"r", b" ",  # episode 2: e-stop, kept as failure, session ends
    ])
    writer = EpisodeWriter(tmp_path, dataset_meta_for(sim_env, "push"))
    with kb:
        result = record_teleop(sim_env, kb, writer, episodes=5, sleep=typist, log=lambda s: None, seed=0)
    os.close(master)
    os.close(slave)
    assert (result.written, result.successes, result.rerecorded, result.ended_by) == (3, 1, 1, "estop")
    assert estop.latched and "keyboard" in estop.reason
    eps = list(iter_episodes(tmp_path))
    assert [e.success for e in eps] == [True, False, False]
    assert [e.length for e in eps] == [4, 2, 2]
    np.testing.assert_allclose(eps[0]["action"][:, :3], [[0, 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0]])
    np.testing.assert_allclose(eps[1]["action"][1, :3], [0, -1, 0])
    assert all(e["intervention"].all() for e in eps)
    assert eps[0].metadata["source"] == "teleop:keyboard" and "estop" in eps[2].metadata
    assert eps[0]["pixels"].shape == (5, 32, 32, 3)


def test_record_cli_on_the_sim_with_a_pty_keyboard(tmp_path):
    """The real command: keys typed until it finishes (only liveness, nothing about timing)."""
    from se_robot.data.episodes import iter_episodes
    from tests.support.keyboard_pty import run_cli_typing

    out = tmp_path / "rec"
    assert run_cli_typing(lambda tty: [
        "record", "--task", "push", "--backend", "sim", "--teleop", "keyboard", "--device", tty,
        "--episodes", "1", "--out", str(out), "--image-size", "32", "--control-hz", "50"], [b"w", b"y"]) == 0
    eps = list(iter_episodes(out))
    assert len(eps) == 1 and eps[0].success and eps[0].length >= 1


def test_leader_arm_drives_the_twin_follower(tmp_path):
    """Leader arm on the servo emulator's pty, keyboard for the buttons, follower = the twin."""
    import se_robot.hardware.servo_emulator
    emu_mod = se_robot.hardware.servo_emulator
    from se_robot.arm import load_arm
    from se_robot.data.episodes import iter_episodes
    from se_robot.data.writer import EpisodeWriter
    from se_robot.data.recording import dataset_meta_for
    from se_robot.hardware.calibration import default_calibration
    from se_robot.hardware.registers import get_model
    from se_robot.teleop.base import CombinedDevice
    from se_robot.teleop.keyboard import KeyboardTeleop
    from se_robot.teleop.leader import LeaderArmTeleop
    from se_robot.teleop.session import record_teleop

    arm = load_arm("so101")
    cal = default_calibration(arm)
    home_ticks = cal.rad_to_ticks(arm.home, arm.joint_names)
    emu = emu_mod.ServoEmulator("feetech", get_model(arm.bus.model), arm.servo_ids,
                                initial_ticks=dict(zip(arm.servo_ids, (int(t) for t in home_ticks))))
    from se_robot.envs import make_env

    env = make_env("push", obs_mode="state", action_mode="joint_delta")
    master, slave = os.openpty()
    kb = KeyboardTeleop(tty_path=os.ttyname(slave))
    moved = arm.home.copy()
    moved[0] += 0.25  # the operator swings the leader's shoulder_pan by 0.25 rad

    class Operator:
        ticks = 0

        def __call__(self, _delay_s: float) -> None:
            self.ticks += 1
            if self.ticks == 1:
                for sid, ticks in zip(arm.servo_ids, cal.rad_to_ticks(moved, arm.joint_names)):
                    emu.physics.move_to(sid, float(ticks))
            if self.ticks == 6:
                os.write(master, b"y")
                select.select([kb._fd], [], [], 2.0)

    with emu:
        leader = LeaderArmTeleop(arm, emu.port, cal, action_scale_rad=env.unwrapped.cfg.joint_step_rad)
        device = CombinedDevice(leader, kb, estop=env.unwrapped.robot.estop)
        writer = EpisodeWriter(tmp_path, dataset_meta_for(env, "push"))
        with device:
            result = record_teleop(env, device, writer, 1, sleep=Operator(), log=lambda s: None, seed=0)
        follower = env.unwrapped.commanded_joints
    env.close()
    os.close(master)
    os.close(slave)
    assert result.written == 1 and result.successes == 1
    ep = next(iter_episodes(tmp_path))
    assert ep.metadata["teleop"] == "leader+keyboard" and ep["action"].shape[1] == 6
    assert ep["action"][1, 0] > 0.9  # 0.25 rad away: a full-scale joint_delta step
    assert follower[0] == pytest.approx(moved[0], abs=0.02)  # the follower caught up with the leader


class ExpertDevice(TeleopDevice):
    """A teleop device whose "operator" is the scripted expert: it drives the env while an episode
    runs and, asked for a label when the env ends one, presses the next of ``labels``."""

    name = "expert"

    def __init__(self, env, labels: list[str]):
        super().__init__()
        self.env, self.labels = env, list(labels)
        self.expert = se_robot.envs.experts.expert_for(env)

    def _read(self, follower_q):
        idle = np.zeros(self.env.action_space.shape, np.float32)
        if follower_q is None:   # record_teleop waits for the operator's label
            return idle, False, {self.labels.pop(0)}
        if self.env.unwrapped.counters["steps"] == 0:
            self.expert.reset()
        return self.expert(), True, set()


def test_record_lift_on_the_emulated_arm_with_its_scripted_operator(tmp_path):
    """2 lift episodes on the byte-level emulator; the cube is put back between them by the
    emulator's operator; a label that contradicts the env is warned about and both are stored."""
    from se_robot.arm import load_arm
    from se_robot.data.episodes import iter_episodes
    from se_robot.data.recording import dataset_meta_for
    from se_robot.data.writer import EpisodeWriter
    from se_robot.envs import make_env
    from se_robot.hardware.emulator import VirtualArm
    from se_robot.teleop.session import record_teleop

    with VirtualArm(load_arm("so101"), physics="twin", camera_port=0, camera_size=(320, 240), task="lift") as vm:
        operator = vm.scene_operator()
        env = make_env("lift", backend="hardware", frame_stack=0, port=vm.port, calibration=vm.calibration,
                       scene_camera="twin_scene", camera_source=vm.camera_url, obs_mode="both", image_size=32,
                       operator=operator, timeout_s=0.5)  # generous bus deadline: the suite runs loaded
        logs: list[str] = []
        try:
            device = ExpertDevice(env, ["success", "failure"])
            writer = EpisodeWriter(tmp_path, dataset_meta_for(env, "lift", backend="hardware"))
            with device:
                result = record_teleop(env, device, writer, episodes=2, log=logs.append, seed=0)
        finally:
            env.close()
    assert (result.written, result.successes, result.ended_by) == (2, 1, "done")
    assert operator.requests == 2
    eps = list(iter_episodes(tmp_path))
    assert [e.success for e in eps] == [True, False]            # the operator's labels
    assert [e.metadata["env_success"] for e in eps] == [True, True]
    assert [e.metadata["operator_success"] for e in eps] == [True, False]
    assert [e.metadata["label_conflict"] for e in eps] == [False, True]
    assert sum("warning: the operator marked failure but the env says success" in line for line in logs) == 1
    assert eps[0]["pixels"].shape[1:] == (32, 32, 3) and eps[0].length > 1


def test_record_cli_against_the_emulated_arm_prints_the_live_view(tmp_path, capsys):
    """`se-robot record --backend hardware` on the emulator's pty: 'p' (scene restored), a move, 'y'
    typed on a pty keyboard; the camera's URL is printed, the contradicting label warned about."""
    from se_robot.arm import load_arm
    from se_robot.cli import main as cli_main
    from se_robot.data.episodes import iter_episodes
    from se_robot.hardware.emulator import VirtualArm

    out = tmp_path / "rec"
    with VirtualArm(load_arm("so101"), physics="twin", camera_port=0, camera_size=(320, 240), task="lift") as vm:
        master, slave = os.openpty()
        rc: list[int] = []
        t = threading.Thread(target=lambda: rc.append(cli_main([
            "record", "--task", "lift", "--backend", "hardware", "--port", vm.port,
            "--calibration", str(vm.calibration_path), "--camera-config", "twin_scene",
            "--camera-source", vm.camera_url, "--teleop", "keyboard", "--device", os.ttyname(slave),
            "--episodes", "2", "--out", str(out), "--image-size", "32"])))
        t.start()
        keys = [b"p", b"w", b"y"]
        i = 0
        while t.is_alive():
            os.write(master, keys[i % len(keys)])
            i += 1
            t.join(0.1)
        os.close(master)
        os.close(slave)
        camera_url = vm.camera_url
    assert rc == [0]
    text = capsys.readouterr().out
    assert f"live view: {camera_url}" in text and "press 'scene restored'" in text
    assert "warning: the operator marked success but the env says failure" in text
    eps = list(iter_episodes(out))
    assert len(eps) == 2 and all(e.success and not e.metadata["env_success"] and e.metadata["label_conflict"]
                                 for e in eps)


def test_record_cli_says_why_it_stops_when_the_scene_is_not_restored(tmp_path, capsys):
    """A declined scene ends a recording with one line that says so (exit 1), not a traceback."""
    from se_robot.arm import load_arm
    from se_robot.cli import main as cli_main
    from se_robot.hardware.emulator import VirtualArm

    with VirtualArm(load_arm("so101"), physics="twin", camera_port=0, camera_size=(320, 240), task="lift",
                    scene_port=0) as vm:
        vm.scene_service.declines = 1
        master, slave = os.openpty()
        try:
            code = cli_main(["record", "--task", "lift", "--backend", "hardware", "--port", vm.port,
                             "--calibration", str(vm.calibration_path), "--camera-config", "twin_scene",
                             "--camera-source", vm.camera_url, "--scene-operator", vm.scene_url,
                             "--teleop", "keyboard", "--device", os.ttyname(slave), "--episodes", "1",
                             "--out", str(tmp_path / "rec"), "--image-size", "32"])
        finally:
            os.close(master)
            os.close(slave)
    err = capsys.readouterr().err
    assert code == 1 and "se-robot: stopped: reset: the operator did not restore the lift scene" in err, err
    assert "Traceback" not in err


def test_record_cli_against_se_robot_emulate_in_another_process(tmp_path, capsys):
    """The user's setup: `se-robot emulate` (twin, camera, scene service) in its own process and
    `se-robot record --backend hardware` against its pty, the cube restored over the scene service."""
    import subprocess
    import sys

    from se_robot.arm import load_arm
    from se_robot.cli import main as cli_main
    from se_robot.data.episodes import iter_episodes
    from se_robot.hardware.emulator import emulator_calibration_path

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "se_robot.cli", "emulate", "--task", "lift", "--camera-port", "0",
                             "--scene-port", "0", "--seconds", "600"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out = tmp_path / "rec"
    try:
        printed: dict[str, str] = {}
        while "scene operator" not in printed:
            line = proc.stdout.readline()
            assert line, "emulate exited: " + proc.stderr.read()
            key, _, value = line.partition(": ")
            printed[key] = value.split(" ")[0].strip()
        master, slave = os.openpty()
        rc: list[int] = []
        t = threading.Thread(target=lambda: rc.append(cli_main([
            "record", "--task", "lift", "--backend", "hardware", "--port", printed["pty"],
            "--calibration", str(emulator_calibration_path(load_arm("so101"))), "--camera-config", "twin_scene",
            "--camera-source", printed["camera"], "--scene-operator", printed["scene operator"],
            "--teleop", "keyboard", "--device", os.ttyname(slave), "--episodes", "2", "--out", str(out),
            "--image-size", "32"])))
        t.start()
        i = 0
        while t.is_alive():
            os.write(master, b"wn"[i % 2:i % 2 + 1])
            i += 1
            t.join(0.1)
        os.close(master)
        os.close(slave)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert rc == [0]
    text = capsys.readouterr().out
    assert f"live view: {printed['camera']}" in text and "warning" not in text
    eps = list(iter_episodes(out))
    assert len(eps) == 2 and not any(e.success or e.metadata["label_conflict"] for e in eps)
