"""Training on the byte-level emulated arm survives faults: bus glitches are retried, a latched
fault pauses the run (checkpoint first, then the operator), an unrecoverable one exits with a
checkpoint that ``--resume`` continues; ``--resume`` asks for more steps; ``evaluate`` on the arm.

Runs are tiny (SAC from state on reach, 10-tick episodes at 20 Hz). The operator is a thread that
watches the trainer the way a person watches the terminal; waits use generous deadlines, nothing
asserts a duration.
"""

from __future__ import annotations

import json
import itertools
import os
import threading
import time
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from se_robot import checkpoint  # noqa: E402
from se_robot.arm import load_arm  # noqa: E402
from se_robot.cli import main  # noqa: E402
from se_robot.hardware.emulator import VirtualArm, emulator_calibration_path  # noqa: E402
from se_robot.logger import Logger  # noqa: E402
from se_robot.train import build_trainer, load_config  # noqa: E402
from se_robot.train_faults import EXIT_CODE, FaultExit  # noqa: E402
from tests.support.bus_faults import FaultInjector  # noqa: E402

pytestmark = pytest.mark.timeout(600)

ARM = load_arm("so101")
CALIBRATION = str(emulator_calibration_path(ARM))   # the emulator's calibration, passed explicitly
OVERLOAD = 0x20   # Feetech status error bit
WAIT_S = 300.0    # generous: the operator thread and the loop share two loaded cores

TINY = {"task": "reach", "algo": "sac", "obs_mode": "state", "frame_stack": 1, "action_repeat": 1,
        "steps": 30, "seed": 2, "learning_starts": 8, "eval_every": 1000, "eval_episodes": 1,
        "eval_video": False, "checkpoint_every": 1000, "checkpoint_every_s": 0.0, "keep_checkpoints": 10,
        "log_every": 10, "tensorboard": False, "progress": False, "device": "cpu", "threads": 1,
        "replay": {"capacity": 400, "n_step": 1, "discount": 0.99},
        "agent": {"batch_size": 8, "hidden_dim": 32, "min_replay": 8},
        "env": {"control_hz": 20.0, "max_episode_steps": 10}}
ARM_ENV = {"timeout_s": 0.2}   # the bus reply timeout: generous, the test machine is loaded


def _arm_config(vm: VirtualArm, **changes):
    env = {**TINY["env"], **ARM_ENV, "port": vm.port, "calibration": CALIBRATION, "scene_camera": None}
    return load_config(overrides={**TINY, "backend": "hardware", "fault_wait_s": WAIT_S, **changes, "env": env})


def _until(predicate, what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


class ScriptedOperator(threading.Thread):
    """Once the run passes ``fault_at_step``, calls ``fault()``; whenever the trainer waits (for that
    fault or any other: a loaded machine makes its own), notes what is on disk, calls ``fix()`` and
    resets the e-stop (the "continue")."""

    def __init__(self, trainer, fault_at_step: int | None = None, fault=lambda: None, fix=lambda: None):
        super().__init__(daemon=True)
        self.trainer, self.fault_at_step, self.fault, self.fix = trainer, fault_at_step, fault, fix
        self.seen: list[dict] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            if self.fault_at_step is not None and self.trainer.step >= self.fault_at_step:
                self.fault()
                self.fault_at_step = None
            if not self.trainer.waiting_for_operator.wait(0.02):
                continue
            robot = self.trainer.env.unwrapped.robot
            self.seen.append({"step": self.trainer.step, "reason": robot.estop.reason,
                              "checkpoints": [p.name for p in checkpoint.list_checkpoints(self.trainer.run_dir)]})
            self.fix()
            robot.estop.reset()
            while self.trainer.waiting_for_operator.is_set() and not self.done.is_set():
                time.sleep(0.01)


def _overload(vm: VirtualArm, bits: int):
    return lambda: vm.emulator.set_fault(ARM.servo_ids[2], bits)


def _train(trainer, operator: ScriptedOperator) -> None:
    operator.start()
    try:
        trainer.train()
    finally:
        operator.done.set()
        operator.join(timeout=WAIT_S)
        trainer.logger.close()
        trainer.env.close()


def test_bus_glitches_are_retried_and_the_run_finishes(tmp_path):
    with VirtualArm(ARM) as vm:
        trainer = build_trainer(_arm_config(vm, checkpoint_every_s=1e-3), tmp_path / "run")
        # one damaged reply at a time, spaced by instructions rather than seconds: what a loaded USB
        # bus does, at the same rate per packet however slow the loaded machine makes the bus
        operator = ScriptedOperator(trainer)   # answers only if a glitch ever latched
        robot = trainer.env.unwrapped.robot
        with FaultInjector(vm, spacing=20) as faults:
            _train(trainer, operator)
    assert trainer.step == TINY["steps"]
    assert faults.injected["drop"] >= 1 and faults.injected["corrupt"] >= 1
    assert robot.device._bus_counters.retries > 0, "the glitches happened and were retried on the bus"
    assert trainer.pauses == len(operator.seen)
    # time-based checkpoints: one at every episode end here (checkpoint_every_s tiny), steps far off
    assert len(checkpoint.list_checkpoints(tmp_path / "run")) >= 3


def test_latched_fault_pauses_checkpoints_then_continues_after_the_operator(tmp_path, capsys):
    with VirtualArm(ARM) as vm:
        trainer = build_trainer(_arm_config(vm), tmp_path / "run")
        operator = ScriptedOperator(trainer, 13, fault=_overload(vm, OVERLOAD), fix=_overload(vm, 0))
        _train(trainer, operator)
    assert trainer.step == TINY["steps"], "the run went on after the pause"
    assert trainer.pauses >= 1 and operator.seen
    # (a loaded machine may add a retries_exhausted pause of its own: that one continues the same way)
    assert any("servo_status" in s["reason"] and "overload" in s["reason"] for s in operator.seen)
    for seen in operator.seen:   # each pause's checkpoint was on disk before the operator continued
        assert f"step_{seen['step']:09d}" in seen["checkpoints"]
    err = capsys.readouterr().err
    assert "PAUSED at step" in err and "estop.reset()" in err and "truncated" in err
    events = (tmp_path / "run" / "events.log").read_text()
    assert "servo_status" in events and "operator continued" in events
    rows = Logger.read(tmp_path / "run" / "train.csv")
    assert any(float(r["train/interrupted"]) == 1.0 for r in rows)
    # stored as truncated, never terminal: no transition in the replay is terminal (reach from
    # random actions does not succeed in 30 steps), and the interrupted episode was closed
    replay = trainer.replay
    assert not replay._terminated[:replay.written].any()
    assert replay.episodes >= 4


def test_estop_latched_during_a_step_stores_the_transition_as_truncated(tmp_path):
    trainer = build_trainer(load_config(overrides={**TINY, "steps": 20, "fault_wait_s": WAIT_S}), tmp_path / "run")
    base = trainer.env.unwrapped
    env_step, ticks = base.step, itertools.count(1)

    def step_with_a_key_press(action):
        # the operator's key lands during the 5th tick (in the env, so no thread race decides when)
        if next(ticks) == 5:
            base.robot.estop.latch("teleop e-stop (keyboard)")
        return env_step(action)

    base.step = step_with_a_key_press
    operator = ScriptedOperator(trainer)
    _train(trainer, operator)
    assert trainer.step == 20 and trainer.pauses == 1
    assert operator.seen[0]["reason"] == "teleop e-stop (keyboard)"
    replay = trainer.replay
    ends = [i for i in range(replay.written) if replay._truncated[i] or replay._terminated[i]]
    assert ends and not replay._terminated[:replay.written].any()
    assert ends[0] < 9, "the latched step ended its 10-tick episode early, as truncated"
    assert "e-stop latched: teleop e-stop (keyboard)" in (tmp_path / "run" / "events.log").read_text()


def _lift_on_the_arm(vm: VirtualArm, operator: str, **changes):
    """TINY on lift from state: the cube seen by the emulator's MJPEG camera, put back by ``operator``."""
    env = {**TINY["env"], **ARM_ENV, "port": vm.port, "calibration": CALIBRATION, "scene_camera": "twin_scene",
           "camera_source": vm.camera_url, "operator": operator, "timeout_s": 0.5}
    return load_config(overrides={**TINY, "task": "lift", "steps": 20, "backend": "hardware",
                                  "fault_wait_s": WAIT_S, **changes, "env": env})


def test_a_scene_nobody_restored_pauses_the_run_and_it_continues(tmp_path):
    """An operator who declines (or a scene service that does not answer) pauses the run with the
    arm held, like a fault; the operator's "continue" asks for the scene again and training goes on."""
    with VirtualArm(ARM, physics="twin", camera_port=0, camera_size=(320, 240), task="lift", scene_port=0) as vm:
        trainer = build_trainer(_lift_on_the_arm(vm, vm.scene_url), tmp_path / "run")
        base = trainer.env.unwrapped
        service = base.operator

        class DeclinesOnce:   # the second request of the run: "cannot, the cube fell off the table"
            calls = 0

            def restore(self, task, rng, message):
                DeclinesOnce.calls += 1
                return False if DeclinesOnce.calls == 2 else service.restore(task, rng, message)

        base.operator = DeclinesOnce()
        operator = ScriptedOperator(trainer)
        _train(trainer, operator)
    assert trainer.step == 20, "the run went on after the pause"
    assert DeclinesOnce.calls >= 3, "the scene was asked for again after the operator continued"
    assert trainer.pauses >= 1
    assert any("scene reset failed" in s["reason"] and "did not restore the lift scene" in s["reason"]
               for s in operator.seen), operator.seen
    for seen in operator.seen:   # each pause's checkpoint was on disk before the operator continued
        assert f"step_{seen['step']:09d}" in seen["checkpoints"]
    events = (tmp_path / "run" / "events.log").read_text()
    assert "PAUSED at step" in events and "operator continued" in events


def test_a_scene_operator_that_cannot_be_asked_ends_the_run_at_once_with_a_checkpoint(tmp_path):
    """No terminal to ask on (a service, CI) is a setup error: no pause that nobody could answer."""
    with VirtualArm(ARM, physics="twin", camera_port=0, camera_size=(320, 240), task="lift") as vm:
        trainer = build_trainer(_lift_on_the_arm(vm, "terminal"), tmp_path / "run")
        try:
            with pytest.raises(FaultExit, match="no terminal to ask on") as stop:
                trainer.train()
        finally:
            trainer.logger.close()
            trainer.env.close()
    assert trainer.pauses == 0
    assert stop.value.checkpoint is not None and stop.value.checkpoint.exists()
    assert f"se-robot train --resume {tmp_path / 'run'}" in str(stop.value)


def test_lost_port_replugged_reconnects_after_the_operator_continues(tmp_path):
    link = str(tmp_path / "ttyARM")   # a stable name, like a udev symlink
    arms = [VirtualArm(ARM, link=link).start()]
    trainer = build_trainer(_arm_config(arms[0]), tmp_path / "run")

    unplugged = threading.Event()

    def unplug() -> None:
        arms[0].stop()
        unplugged.set()

    def replug() -> None:
        if unplugged.is_set() and len(arms) == 1:   # the same arm comes back under the same name
            arms.append(VirtualArm(ARM, link=link).start())

    operator = ScriptedOperator(trainer, 13, fault=unplug, fix=replug)
    try:
        _train(trainer, operator)
    finally:
        for arm in arms:
            arm.stop()
    assert trainer.step == TINY["steps"] and len(arms) == 2
    assert any("port_lost" in s["reason"] or "retries_exhausted" in s["reason"] for s in operator.seen)


def test_unrecoverable_fault_exits_with_a_checkpoint_that_resume_continues(tmp_path, capsys):
    run_dir = tmp_path / "run"
    common = ["--calibration", CALIBRATION, "--scene-camera", "none", "--no-progress"]
    config = tmp_path / "arm.yaml"
    config.write_text(json.dumps({**TINY, "fault_wait_s": 1.0}))   # nobody answers: the wait times out
    with VirtualArm(ARM) as vm:
        def pull_the_cable() -> None:   # the port vanishes for good once the first episode is logged
            _until(lambda: (run_dir / "train.csv").exists(), "the first episode")
            vm.emulator.stop()

        threading.Thread(target=pull_the_cable, daemon=True).start()
        code = main(["train", "--config", str(config), "--backend", "hardware", "--port", vm.port,
                     "--out", str(run_dir), *common])
    err = capsys.readouterr().err
    assert code == EXIT_CODE, err
    assert f"se-robot train --resume {run_dir}" in err
    saved = checkpoint.list_checkpoints(run_dir)
    assert saved, "the fault's checkpoint was written"
    stopped_at = checkpoint.load(saved[-1])["trainer"]["step"]
    assert 0 < stopped_at < TINY["steps"]
    with VirtualArm(ARM) as vm:   # the arm is back, on another port
        assert main(["train", "--resume", str(run_dir), "--port", vm.port, *common]) == 0
    out = capsys.readouterr().out
    assert f"resumed at step {stopped_at}" in out and f"done at step {TINY['steps']}" in out
    assert checkpoint.load(checkpoint.resolve(run_dir))["trainer"]["step"] == TINY["steps"]


def test_resume_asks_for_more_steps_and_a_sim_run_continues_on_the_arm(tmp_path, capsys):
    run_dir = tmp_path / "run"
    config = tmp_path / "sim.yaml"
    config.write_text(json.dumps({**TINY, "steps": 20}))
    assert main(["train", "--config", str(config), "--out", str(run_dir), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "nothing left to train" in err and "--more-steps" in err
    assert main(["train", "--resume", str(run_dir), "--steps", "20"]) == 2
    assert main(["train", "--resume", str(run_dir), "--more-steps", "5", "--steps", "40"]) == 2
    capsys.readouterr()
    with VirtualArm(ARM) as vm:
        assert main(["train", "--resume", str(run_dir), "--more-steps", "12", "--backend", "hardware",
                     "--port", vm.port, "--calibration", CALIBRATION, "--scene-camera", "none",
                     "--no-progress"]) == 0
        out = capsys.readouterr().out
        assert "resumed at step 20, training to step 32" in out and "done at step 32 (12 steps this run" in out
        code = main(["evaluate", "--checkpoint", str(run_dir), "--episodes", "1", "--backend", "hardware",
                     "--port", vm.port, "--calibration", CALIBRATION, "--scene-camera", "none",
                     "--out", str(tmp_path / "eval")])
    assert code == 0
    result = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert result["step"] == 32 and 0.0 <= result["eval/success"] <= 1.0
    # the run, now continued on the arm, evaluates in sim again: its port and camera are left behind
    assert main(["evaluate", "--checkpoint", str(run_dir), "--episodes", "1", "--backend", "sim",
                 "--out", str(tmp_path / "eval_sim")]) == 0
    # hardware options without the hardware backend are refused, naming the option
    assert main(["evaluate", "--checkpoint", str(run_dir), "--backend", "sim", "--port", "/dev/ttyX"]) == 2
    assert "--port" in capsys.readouterr().err


def test_operator_wait_reads_enter_and_q_from_a_terminal():
    from se_robot.estop import EStop
    from se_robot.train_faults import CONTINUED, GAVE_UP, TIMED_OUT, OperatorWait

    for typed, outcome in ((b"\n", CONTINUED), (b"q\n", GAVE_UP)):
        read_fd, write_fd = os.pipe()
        estop = EStop()
        estop.latch("test")
        with os.fdopen(read_fd) as terminal:
            os.write(write_fd, typed)
            assert OperatorWait(estop, WAIT_S, terminal).wait() == outcome
        os.close(write_fd)
        assert estop.latched == (outcome == GAVE_UP)
    estop = EStop()
    estop.latch("test")
    assert OperatorWait(estop, 0.05).wait() == TIMED_OUT


def test_an_operator_stops_the_run_and_continues_it_from_the_teleop_device(tmp_path):
    """`se-robot train --teleop keyboard`: Space latches the e-stop mid-run (the run pauses: hold,
    checkpoint), then 'p' (scene restored) on the same device continues it; no terminal involved."""
    master, slave = os.openpty()
    cfg = load_config(overrides={**TINY, "steps": 40, "fault_wait_s": WAIT_S, "teleop": "keyboard",
                                 "teleop_device": os.ttyname(slave)})
    trainer = build_trainer(cfg, tmp_path / "run")
    done = threading.Event()

    def operator() -> None:
        _until(lambda: trainer.step >= 15 or done.is_set(), "the run to move")
        os.write(master, b" ")     # E-STOP from the device in hand
        _until(lambda: trainer.waiting_for_operator.is_set() or done.is_set(), "the pause")
        while trainer.waiting_for_operator.is_set() and not done.is_set():
            os.write(master, b"p")   # until the pause has read it (a press before the pause does not count)
            time.sleep(0.2)

    thread = threading.Thread(target=operator, daemon=True)
    thread.start()
    try:
        result = trainer.train()
    finally:
        done.set()
        thread.join(timeout=WAIT_S)
        trainer.logger.close()
        trainer.env.close()
        trainer.eval_env.close()
        os.close(master)
        os.close(slave)
    events = (tmp_path / "run" / "events.log").read_text()
    assert trainer.pauses == 1 and trainer.step == 40, events
    assert "PAUSED at step" in events and "e-stop latched: teleop e-stop" in events, events
    assert "press 'scene restored' or 'success' on" in events and "operator continued" in events, events
    paused_at = int(events.split("PAUSED at step ")[1].split(":")[0])
    assert paused_at in [int(p.name.split("_")[1]) for p in checkpoint.list_checkpoints(tmp_path / "run")]
    assert not trainer.env.unwrapped.robot.estop.latched and result
