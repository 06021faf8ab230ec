"""The acceptance test of issue 17: the whole session a user runs on an SO-101-class arm, unattended,
against the byte-level emulator with its scripted operator.

1. ``se-robot calibrate --non-interactive --from-limit-registers`` on the follower's and the
   leader's emulated buses (a scripted hand holds the limp twin at home meanwhile);
2. ``record_teleop`` (what ``se-robot record`` runs) of lift demonstrations through the leader arm:
   a second emulated bus whose joints a scripted hand moves to where the scripted expert wants the
   follower, read by ``LeaderArmTeleop``; the follower is the twin behind a pty, its camera over
   MJPEG, the cube put back between episodes by the emulator's scripted operator; one fumbled
   grasp gives the classifier a failure;
3. ``se-robot reward train`` on them;
4. ``se-robot train --backend hardware`` in a process of its own, from camera + proprioception with
   the classifier reward, the scene restored over the emulator's scene service, single dropped and
   corrupted packets injected throughout; ``kill -9`` after its first checkpoint, then
   ``--resume --more-steps``, during which an overloaded servo latches a fault: the run pauses with
   a checkpoint and the operator (on the run's terminal, a pty) clears the cause and presses Enter;
   4b. an actor_node on the emulated arm (its bus, camera and scene service, the classifier reward,
   glitches injected) and a learner_node (split) in another process, over DDS;
5. ``se-robot evaluate --backend hardware --port ...`` on the emulated arm.

The emulated arms live in this process (``VirtualArm``, what ``se-robot emulate`` runs), so the
test can reach the emulator's knobs (``inject``, ``set_fault``) and audit its goal log; every
client (calibrate, the recorder, train, evaluate) talks to them over their ptys, camera URL and
scene service as it would to ``se-robot emulate`` in another process.

Pass criteria, checked where they arise: every stage completes; no episode or checkpoint is lost
(dataset files counted and checked, every checkpoint verified against its manifest, the killed
run's and the fault pause's checkpoints still there); zero goal writes outside the joint limits or
the per-tick step cap (the follower's goal log, audited after each stage and for the whole
session); zero stored episodes that start already successful (recorded datasets; online, every
episode's start is a restore by the operator, counted, and a start judged successful is refused
before it is returned); demos relabelled by the classifier, on the online rewards' 0/1 scale. Each stage is a test of its own, in file order, handing its products to the next
through ``SESSION``; one whose input is missing fails naming the stage that did not produce it.

Sizes are the smallest that still exercise each stage (``SE_ROBOT_ACCEPT_DEMOS`` lowers the 10
demonstrations), so the file runs in minutes on 2 loaded cores; waits are generous and scale with
what they wait for; nothing asserts on timing.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
import se_robot.envs.experts  # noqa: E402 - required: CI must fail, not skip, without it
from se_robot.arm import load_arm  # noqa: E402
from se_robot.cli import main as cli_main  # noqa: E402
from se_robot.hardware.calibration import calibration_file, load_calibration  # noqa: E402
from se_robot.hardware.emulator import VirtualArm  # noqa: E402
from se_robot.teleop.base import TeleopDevice  # noqa: E402
from tests.support.bus_faults import FaultInjector  # noqa: E402

pytestmark = pytest.mark.timeout(900)

ARM = load_arm("so101")
LEADER_ID = "so101_leader"
#: Demonstrations recorded (the issue asks for 10; each is a full lift on the real-time emulator).
N_DEMOS = int(os.environ.get("SE_ROBOT_ACCEPT_DEMOS", "10"))
#: Demonstrations in which the operator fumbles the grasp: the classifier needs failures too.
FUMBLED = {1}
IMAGE_SIZE = 32
OVERLOAD = 0x20   # a Feetech servo's overload status bit

#: What each stage hands the next (stages run in file order, as pytest does).
SESSION: dict[str, Any] = {}


def _need(key: str, stage: str) -> Any:
    if key not in SESSION:
        pytest.fail(f"stage {stage!r} did not produce {key!r}: it failed earlier in this file")
    return SESSION[key]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("arm_session")


# -- the audits ------------------------------------------------------------------------------------

def audit_goal_log(vm: VirtualArm, label: str, start: int = 0) -> list[str]:
    """Every goal the emulated servos received since ``start``, per servo in arrival order: inside the
    arm's joint limits, and no jump from the previous goal larger than the per-tick step cap
    (``safety.max_joint_step_rad``; half a tick of rounding allowed). Returns the violations."""
    cal = vm.calibration
    cap = ARM.safety.max_joint_step_rad + 0.5 * cal.rad_per_tick + 1e-9
    log = vm.emulator.goal_log[start:]
    violations = []
    for name, sid, lo, hi in zip(ARM.joint_names, ARM.servo_ids, ARM.lower, ARM.upper):
        ticks = np.array([g.ticks for g in log if g.servo_id == sid], dtype=np.float64)
        if ticks.size == 0:
            continue
        q = cal.ticks_to_rad(ticks, [name] * ticks.size)
        outside = np.flatnonzero((q < lo - 1e-9) | (q > hi + 1e-9))
        if outside.size:
            violations.append(f"{label}: {name}: {outside.size} goals outside [{lo:.3f}, {hi:.3f}] rad, "
                              f"e.g. {q[outside[0]]:.4f}")
        jumps = np.abs(np.diff(q))
        big = np.flatnonzero(jumps > cap)
        if big.size:
            violations.append(f"{label}: {name}: {big.size} goals jumped more than the step cap "
                              f"{ARM.safety.max_joint_step_rad} rad from the previous goal, max {jumps.max():.4f}")
    return violations


def fake_success_starts(episodes: list[dict[str, np.ndarray]], label: str) -> list[str]:
    """Episodes that end terminal on their first step: lift ends on success, and no arm lifts a cube
    5 cm in one capped control tick, so such an episode started already successful (a start the
    scene restore must have rejected, never stored)."""
    return [f"{label}: episode {i} ends terminal at its first step (it started successful)"
            for i, ep in enumerate(episodes) if len(ep["terminated"]) and bool(ep["terminated"][0])]


@pytest.fixture(scope="module")
def rigs():
    """The follower (the twin behind a pty, its camera and its scene service: what ``se-robot
    emulate --task lift --camera-port 0 --scene-port 0`` serves) and the leader (plain servos a
    hand moves), alive for the whole session; the goal logs are audited once more at the end."""
    follower = VirtualArm(ARM, physics="twin", camera_port=0, camera_size=(320, 240), task="lift", scene_port=0)
    leader = VirtualArm(ARM)
    with follower, leader:
        SESSION["follower"], SESSION["leader"] = follower, leader
        yield follower, leader
        violations = audit_goal_log(follower, "whole session")
    assert violations == []


# -- stage 1: calibrate ----------------------------------------------------------------------------

def test_0_the_audits_catch_what_they_look_for():
    """The pass criteria are only as good as their audits: an out-of-limit goal, a jump past the
    step cap and an episode terminal at its first step are each reported."""
    import types

    from se_robot.hardware.emulator import emulator_calibration_path
    from se_robot.hardware.servo_emulator import GoalRecord

    cal = load_calibration(emulator_calibration_path(ARM), ARM)
    home = cal.rad_to_ticks(ARM.home, ARM.joint_names)
    log = [GoalRecord(0.0, sid, int(t)) for sid, t in zip(ARM.servo_ids, home)]
    fake = types.SimpleNamespace(calibration=cal, emulator=types.SimpleNamespace(goal_log=log))
    assert audit_goal_log(fake, "home") == []
    q = ARM.home.copy()
    q[0] += 0.9 * ARM.safety.max_joint_step_rad
    log += [GoalRecord(0.1, sid, int(t)) for sid, t in zip(ARM.servo_ids, cal.rad_to_ticks(q, ARM.joint_names))]
    assert audit_goal_log(fake, "small step") == []
    q[1] += 1.5 * ARM.safety.max_joint_step_rad
    q[2] = ARM.upper[2] + 0.05
    log += [GoalRecord(0.2, sid, int(t)) for sid, t in zip(ARM.servo_ids, cal.rad_to_ticks(q, ARM.joint_names))]
    found = audit_goal_log(fake, "bad")
    assert any("shoulder_lift" in v and "step cap" in v for v in found), found
    assert any("elbow_flex" in v and "outside" in v for v in found), found
    ok, bad = {"terminated": np.array([False, True])}, {"terminated": np.array([True])}
    assert fake_success_starts([ok], "x") == [] and len(fake_success_starts([ok, bad], "x")) == 1


@contextlib.contextmanager
def hand_holds_home(vm: VirtualArm):
    """The person calibrating holds the limp twin arm in its home pose (``--from-limit-registers``
    takes the present pose as home; left alone, the twin's shoulder sags ~0.3 rad under gravity)."""
    home_ticks = dict(zip(ARM.servo_ids, vm.calibration.rad_to_ticks(ARM.home, ARM.joint_names)))
    done = threading.Event()

    def hold():
        while not done.is_set():
            vm.physics.reset(home_ticks)
            done.wait(0.002)

    hand = threading.Thread(target=hold, name="hand-at-home", daemon=True)
    hand.start()
    try:
        yield
    finally:
        done.set()
        hand.join()


def test_1_calibrate_the_follower_and_the_leader(rigs):
    """``se-robot calibrate`` on each emulated bus, as a user does once per arm; the drivers of the
    later stages look the calibrations up by arm id in the data directory (SE_ROBOT_DATA_DIR)."""
    follower, leader = rigs
    with hand_holds_home(follower):
        assert cli_main(["calibrate", "--port", follower.port, "--non-interactive", "--from-limit-registers"]) == 0
    assert cli_main(["calibrate", "--port", leader.port, "--non-interactive", "--from-limit-registers",
                     "--leader"]) == 0
    for arm_id, vm in ((ARM.name, follower), (LEADER_ID, leader)):
        cal = load_calibration(calibration_file(arm_id), ARM)
        for name in ARM.joint_names:   # the servos' limit registers hold their factory range
            got, want = cal.joints[name], vm.calibration.joints[name]
            assert (got.min_ticks, got.max_ticks) == (want.min_ticks, want.max_ticks), (arm_id, name)
            # home = the pose the hand held: the factory zero, within the twin's settling
            assert abs(got.homing_offset_ticks - want.homing_offset_ticks) <= 8, (arm_id, name)
    SESSION["calibrated"] = True


# -- stage 2: record demonstrations through the leader arm ------------------------------------------

class ScriptedHandOnLeader(TeleopDevice):
    """The person at the leader arm, scripted: before the leader is read each tick, it moves the
    leader's joints (torque off, "by hand") to where the scripted expert wants the follower next.
    Everything
    the follower does goes through the leader's bus, its calibration and ``LeaderArmTeleop``."""

    name = "leader"
    action_mode = "joint_delta"

    def __init__(self, env, leader_vm: VirtualArm, leader_device, fumble: set[int] = frozenset()):
        super().__init__()
        self.env, self.leader_vm, self.leader = env, leader_vm, leader_device
        self.expert = se_robot.envs.experts.expert_for(env)
        self.fumble = fumble   # episodes in which the hand never closes the gripper (failures to learn from)
        self.episode = -1
        self._last_steps = -1

    @property
    def last_joint_targets(self):
        return self.leader.last_joint_targets

    def connect(self) -> "ScriptedHandOnLeader":
        self.leader.connect()
        return self

    def disconnect(self) -> None:
        self.leader.disconnect()

    def _move_leader(self) -> None:
        env = self.env.unwrapped
        steps = env.counters["steps"]
        if steps == 0:
            self.expert.reset()
            self.episode += int(self._last_steps != 0)
        self._last_steps = steps
        action = np.asarray(self.expert(), dtype=np.float64)
        q = env.commanded_joints + action * env.cfg.joint_step_rad
        if self.episode in self.fumble:
            q[ARM.gripper_index] = ARM.gripper.open_position
        ticks = self.leader_vm.calibration.rad_to_ticks(q, ARM.joint_names)
        for sid, t in zip(ARM.servo_ids, ticks):
            self.leader_vm.physics.move_to(sid, float(t))

    def _read(self, follower_q):
        if follower_q is None:   # between episodes: the hand rests
            return np.zeros(self.env.action_space.shape, np.float32), False, set()
        self._move_leader()
        return self.leader._read(follower_q)


def test_2_record_lift_demonstrations_through_the_leader_arm(rigs, workdir):
    from se_robot.data.episodes import iter_episodes
    from se_robot.data.recording import dataset_meta_for
    from se_robot.data.writer import EpisodeWriter
    from se_robot.envs import make_env
    from se_robot.teleop.leader import LeaderArmTeleop
    from se_robot.teleop.session import record_teleop

    _need("calibrated", "calibrate")
    follower, leader = rigs
    operator = follower.scene_operator()
    start = len(follower.emulator.goal_log)
    env = make_env("lift", backend="hardware", frame_stack=0, port=follower.port, arm_id=ARM.name,
                   scene_camera="twin_scene", camera_source=follower.camera_url, obs_mode="both",
                   image_size=IMAGE_SIZE, action_mode="joint_delta", operator=operator,
                   timeout_s=0.5)   # generous bus deadline: the machine is loaded
    out = workdir / "demos"
    logs: list[str] = []
    try:
        hand = ScriptedHandOnLeader(env, leader, LeaderArmTeleop(
            ARM, leader.port, action_scale_rad=env.unwrapped.cfg.joint_step_rad), fumble=FUMBLED)

        writer = EpisodeWriter(out, dataset_meta_for(env, "lift", backend="hardware"))
        with hand:
            # the scripted operator judges each episode by what it sees, i.e. the env's own success
            result = record_teleop(env, hand, writer, episodes=N_DEMOS, log=logs.append, seed=0, auto_label=True)
    finally:
        env.close()
    assert result.written == N_DEMOS and result.ended_by == "done", logs
    files = sorted(out.glob("episode_*.npz"))
    assert len(files) == N_DEMOS, [f.name for f in files]          # no episode lost
    assert cli_main(["dataset", "check", str(out)]) == 0
    eps = list(iter_episodes(out))
    assert all(e.metadata["teleop"] == "leader" for e in eps)
    assert operator.requests >= N_DEMOS                              # the cube was put back each time
    assert fake_success_starts([e.arrays for e in eps], "demos") == []
    assert audit_goal_log(follower, "record", start) == []
    successes = [e.success for e in eps]
    print(f"recorded {len(eps)} demos through the leader arm, lengths {[e.length for e in eps]}, "
          f"successes {successes}")
    assert not any(successes[i] for i in FUMBLED) and sum(successes) >= 1
    SESSION["demos"] = out
    SESSION["demo_count"] = len(eps)


# -- stage 3: the success classifier ----------------------------------------------------------------

def test_3_train_the_success_classifier(workdir):
    demos = _need("demos", "record")
    out = workdir / "success.pt"
    assert cli_main(["reward", "train", "--data", str(demos), "--out", str(out), "--epochs", "3",
                     "--input-size", str(IMAGE_SIZE), "--holdout", "0.3", "--positive-frames", "2",
                     "--threads", "1"]) == 0
    assert out.is_file() and out.with_suffix(".json").is_file()
    # recording files were read, never changed or dropped
    assert len(sorted(demos.glob("episode_*.npz"))) == SESSION["demo_count"]
    SESSION["reward_model"] = out


# -- stage 4: online training on the emulated arm, faults, kill -9, --resume -----------------------

TRAIN_STEPS = 36          # agent steps of the first run (it is killed after its first checkpoint)
RESUMED_STEPS = 36        # total steps the resumed run reaches
EPISODE_STEPS = 10        # a short time limit, so the few dozen steps span several operator resets
CHECKPOINT_EVERY = 8


class TrainProcess:
    """``se-robot train`` in a process of its own, with a pseudo-terminal as its stdin (an operator
    who presses Enter when the run pauses on a fault and says so) and its output collected."""

    def __init__(self, args: list[str], log_path: Path, on_pause=None):
        import subprocess
        import sys

        self.master, slave = os.openpty()
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "se_robot.cli", "train", *args], stdin=slave,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        os.close(slave)
        self.lines: list[str] = []
        self.on_pause = on_pause   # the operator fixes the cause before pressing Enter
        self.enters = 0
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            self.log.write(line)
            self.log.flush()
            if "press Enter" in line:   # the run paused on a fault and asks the operator to continue
                if self.on_pause is not None:
                    self.on_pause()
                self.enters += 1
                os.write(self.master, b"\n")

    def wait(self, timeout_s: float) -> int:
        rc = self.proc.wait(timeout=timeout_s)
        self.reader.join(timeout=30)
        return rc

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=60)
        os.close(self.master)
        self.log.close()

    @property
    def text(self) -> str:
        return "".join(self.lines)


def train_args(follower: VirtualArm, run: Path, steps: int) -> list[str]:
    """What a user types against ``se-robot emulate``: the arm's pty, its camera URL, its scene
    operator URL; tiny nets and batches so a few dozen steps train on a loaded CPU."""
    return ["--task", "lift", "--algo", "drqv2", "--backend", "hardware", "--obs-mode", "both",
            "--image-size", str(IMAGE_SIZE), "--steps", str(steps), "--reward-model", str(SESSION["reward_model"]),
            # the classifier of stage 3 is tiny and weak (see its held-out rates): a high confidence
            # threshold keeps its false positives from refusing every start as already successful
            "--reward-threshold", "0.9",
            "--demos", str(SESSION["demos"]), "--out", str(run), "--no-progress", "--seed", "3",
            "--set", f"env.port={follower.port}", "--set", f"env.operator={follower.scene_url}",
            "--set", "env.scene_camera=twin_scene", "--set", f"env.camera_source={follower.camera_url}",
            "--set", "env.action_mode=joint_delta", "--set", f"env.max_episode_steps={EPISODE_STEPS}",
            "--set", "env.timeout_s=0.5",
            "--set", "action_repeat=1", "--set", "frame_stack=2", "--set", "learning_starts=6",
            "--set", f"checkpoint_every={CHECKPOINT_EVERY}", "--set", "keep_checkpoints=100",
            "--set", "eval_every=100000", "--set", "eval_episodes=1", "--set", "eval_video=false",
            "--set", "log_every=8", "--set", "tensorboard=false", "--set", "threads=1", "--set", "device=cpu",
            "--set", "agent.batch_size=16", "--set", "agent.hidden_dim=64", "--set", "agent.feature_dim=16"]


def checkpoint_audit(run: Path) -> tuple[list[int], list[str]]:
    """Every checkpoint of ``run`` verified against its manifest; the steps, and demos whose rewards
    are not on the classifier's 0/1 scale.

    Online episodes that would start already successful are refused before they are returned (the
    scene operator restores the cube, ArmEnv and the learned-reward wrapper reject a start judged
    successful); here every episode's restore is counted instead (test 4). Their replay's terminal
    flags are the weak classifier's judgement, so a first-step terminal there is a classifier false
    positive, not a start that was already successful."""
    from se_robot import checkpoint
    from se_robot.agents.replay import ReplayBuffer

    steps, bad = [], []
    for ckpt in checkpoint.list_checkpoints(run):
        checkpoint.verify(ckpt)   # raises naming the damaged file
        steps.append(int(ckpt.name.split("_")[1]))
        if (ckpt / "demos").is_dir():   # demos relabelled by the classifier: on the online reward's scale
            demo = ReplayBuffer.load(ckpt / "demos")
            rewards = demo._reward[:len(demo)][demo._has_next[:len(demo)].astype(bool)]
            if not np.isin(rewards, (0.0, 1.0)).all():
                bad.append(f"{ckpt.name}: demo rewards {sorted(set(rewards.tolist()))[:5]} are not the classifier's 0/1")
    return steps, bad


def test_4_train_online_on_the_arm_with_faults_a_kill_and_resume(rigs, workdir):
    import signal

    from se_robot import checkpoint

    _need("reward_model", "reward classifier")
    follower, _ = rigs
    start = len(follower.emulator.goal_log)
    restores_before = follower.scene_service.requests
    run = workdir / "run"
    first = TrainProcess(train_args(follower, run, TRAIN_STEPS), workdir / "train1.log")
    try:
        with FaultInjector(follower) as faults:
            deadline_s = 600.0   # a generous bound for a few dozen real-time ticks on a loaded machine
            t0 = time.monotonic()
            while not checkpoint.list_checkpoints(run):
                assert first.proc.poll() is None, f"train exited {first.proc.returncode}:\n{first.text}"
                assert time.monotonic() - t0 < deadline_s, f"no checkpoint after {deadline_s} s:\n{first.text}"
                time.sleep(0.2)
            first.proc.send_signal(signal.SIGKILL)
            first.wait(60)
        killed_at = [int(c.name.split("_")[1]) for c in checkpoint.list_checkpoints(run)]
    finally:
        first.close()
    assert killed_at, first.text
    injected = dict(faults.injected)
    fault_servo = ARM.servo_ids[2]
    second = TrainProcess(["--resume", str(run), "--more-steps", str(RESUMED_STEPS - killed_at[-1]), "--no-progress"],
                          workdir / "train2.log", on_pause=lambda: follower.emulator.set_fault(fault_servo, 0))
    try:
        with FaultInjector(follower) as faults:
            # an overloaded elbow once the resumed run is moving the arm: a latched fault, which pauses
            # the run (checkpoint, hold) until the operator clears the cause and presses Enter
            seen = len(follower.emulator.goal_log)
            t0 = time.monotonic()
            while len(follower.emulator.goal_log) < seen + 20 * ARM.n_joints and second.proc.poll() is None:
                assert time.monotonic() - t0 < 600.0, f"the resumed run never moved the arm:\n{second.text}"
                time.sleep(0.1)
            follower.emulator.set_fault(fault_servo, OVERLOAD)
            rc = second.wait(900)
    finally:
        follower.emulator.set_fault(fault_servo, 0)
        second.close()
    assert rc == 0, second.text
    injected = {k: v + faults.injected[k] for k, v in injected.items()}
    restores = follower.scene_service.requests - restores_before
    print(f"train: killed after checkpoints {killed_at}, resumed to {RESUMED_STEPS}; glitches injected {injected}; "
          f"scene restores by the operator {restores}")
    assert injected["drop"] >= 1 and injected["corrupt"] >= 1   # the runs went through bus glitches
    assert second.enters >= 1, f"the servo fault did not pause the run:\n{second.text}"
    paused_at = int(second.text.split("PAUSED at step ")[1].split(":")[0])
    assert "operator continued" in second.text, second.text
    # every episode (initial evaluation, training episodes of both runs, final evaluation) started
    # from a scene the operator restored over the emulator's scene service
    assert restores >= RESUMED_STEPS // EPISODE_STEPS + 2
    assert f"resumed at step {killed_at[-1]}" in second.text, second.text
    steps, bad_demos = checkpoint_audit(run)
    assert set(killed_at) <= set(steps), (killed_at, steps)     # nothing the killed run saved was lost
    assert paused_at in steps, (paused_at, steps)               # the pause checkpointed at once
    assert steps[-1] == RESUMED_STEPS, steps
    assert bad_demos == []
    assert audit_goal_log(follower, "train", start) == []
    SESSION["run"] = run


# -- stage 4b: the actor and the learner in two processes over ROS 2 ---------------------------------

def test_4b_actor_on_the_arm_and_learner_in_separate_processes(rigs, workdir):
    """The split HIL-SERL layout: an actor_node next to the arm and a learner_node (split) elsewhere,
    over DDS. The actor drives the emulated arm's serial bus and camera directly (``env_backend:
    hardware``, the settings ``se-robot train --backend hardware`` takes, as train_overrides), with
    the classifier reward and the scene operator over the emulator's scene service, while bus glitches
    are injected; an overloaded servo, then a scene the operator declines to restore, pause the actor
    until the operator calls ``actor/continue``;
    the learner learns from its episodes with the recorded demos mixed in, and sends weights back
    that the actor acts with."""
    import json
    import tempfile

    import rclpy  # noqa: F401 - required: CI must fail, not skip, without it
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from se_robot import checkpoint
    from se_robot.nodes.runtime import DIAGNOSTICS_QOS
    from tests.support import ros_harness as harness

    follower, _ = rigs
    start, restores_before = len(follower.emulator.goal_log), follower.scene_service.requests
    domain = harness.pick_domain_id(11)
    run = workdir / "split_run"
    logs = {n: os.path.join(tempfile.gettempdir(), f"se_robot_accept_{n}_{os.getpid()}.log")
            for n in ("learner", "actor")}
    env = {"task": "lift", "obs_mode": "both", "image_size": IMAGE_SIZE, "action_mode": "joint_delta",
           "max_episode_steps": EPISODE_STEPS, "algo": "drqv2", "chunk_bytes": 65536}
    overrides = " ".join([   # the classifier threshold as in stage 4 (see train_args)
        f"reward_model={SESSION['reward_model']}", "reward_threshold=0.9", f"demos={_need('demos', 'record')}", "action_repeat=1",
        "frame_stack=2", "threads=1", "device=cpu", "agent.batch_size=16", "agent.hidden_dim=64",
        "agent.feature_dim=16", f"env.port={follower.port}", f"env.operator={follower.scene_url}",
        "env.scene_camera=twin_scene", f"env.camera_source={follower.camera_url}", "env.timeout_s=0.5"])
    episodes = 5
    learner = harness.start_node("learner_node", domain, {
        **env, "mode": "split", "learning_starts": 6, "weights_period_steps": 5, "total_steps": 10**6,
        "checkpoint_period_steps": EPISODE_STEPS, "checkpoint_dir": str(run), "train_overrides": overrides},
        log_path=logs["learner"])
    actor = None
    last: dict = {}
    logs_text: dict = {}
    try:
        with harness.ros_session(domain) as ros, FaultInjector(follower) as faults:
            for topic in ("learner/metrics", "actor/metrics"):
                ros.node.create_subscription(String, topic, lambda m, t=topic: last.setdefault(t, {}).update(
                    json.loads(m.data)), DIAGNOSTICS_QOS)
            # the learner first (its demos loaded, its first weights out), so the actor's episodes overlap
            # its learning: later episodes act with weights trained on the earlier ones
            assert ros.spin_until(lambda: last.get("learner/metrics", {}).get("learner/weights_version", 0) >= 1
                                  or learner.poll() is not None, 300.0), open(logs["learner"]).read()[-3000:]
            actor = harness.start_node("actor_node", domain, {
                **env, "env_backend": "hardware", "seed": 5, "batch_transitions": 4, "episodes": episodes,
                "train_overrides": overrides}, log_path=logs["actor"])

            def done():
                lm, am = last.get("learner/metrics", {}), last.get("actor/metrics", {})
                sent = am.get("actor/steps", 0) - am.get("actor/dropped_steps", 0)   # all but the faulted episode's
                return (am.get("actor/finished") == 1 and lm.get("learner/transitions", -1) == sent
                        and lm.get("learner/updates", 0) > 0 and len(checkpoint.list_checkpoints(run)) >= 1)

            def alive() -> bool:
                return actor.poll() is None and learner.poll() is None

            # an overloaded elbow once the actor is moving the arm: the actor pauses (the arm holds, the
            # open episode is dropped) until the operator clears the cause and calls actor/continue
            seen = len(follower.emulator.goal_log)
            assert ros.spin_until(lambda: len(follower.emulator.goal_log) >= seen + 20 * ARM.n_joints or not alive(),
                                  600.0) and alive(), {n: open(path).read()[-3000:] for n, path in logs.items()}
            follower.emulator.set_fault(ARM.servo_ids[2], OVERLOAD)
            paused = ros.spin_until(lambda: last.get("actor/metrics", {}).get("actor/paused") == 1 or not alive(),
                                    600.0)
            follower.emulator.set_fault(ARM.servo_ids[2], 0)
            assert paused and alive(), {n: open(path).read()[-3000:] for n, path in logs.items()}
            continue_client = ros.node.create_client(Trigger, "actor/continue")
            answer = ros.call(continue_client, Trigger.Request(), 60.0)
            assert answer.success, answer.message
            # then the scene operator cannot put the cube back once: the actor pauses again (never an
            # episode from an unrestored scene) and goes on when told
            follower.scene_service.declines = 1
            paused = ros.spin_until(lambda: last.get("actor/metrics", {}).get("actor/pauses", 0) >= 2
                                    and last["actor/metrics"].get("actor/paused") == 1 or not alive(), 600.0)
            assert paused and alive(), {n: open(path).read()[-3000:] for n, path in logs.items()}
            answer = ros.call(continue_client, Trigger.Request(), 60.0)
            assert answer.success, answer.message
            # generous: real-time episodes on the emulated arm, two node processes, a loaded machine
            ros.spin_until(lambda: done() or not alive(), 900.0)
            logs_text = {n: open(path).read()[-3000:] for n, path in logs.items()}
            assert done(), (last, logs_text)
            assert learner.poll() is None, f"the learner process died:\n{logs_text['learner']}"
    finally:
        code_actor = harness.stop_node(actor) if actor is not None else None
        code = harness.stop_node(learner)
    lm, am = last["learner/metrics"], last["actor/metrics"]
    assert code == 0 and code_actor == 0 and "learner/error" not in lm and "actor/error" not in am, logs_text
    rejected = {k: v for k, v in lm.items() if k.startswith(("learner/rejected", "learner/dropped"))}
    # an honest actor: nothing refused; dropped, only the episode the fault cut short (never half-stored)
    with open(logs["actor"]) as f:
        paused_lines = [line for line in f if "PAUSED: " in line]
    assert am["actor/pauses"] == 2 and len(paused_lines) == 2, (paused_lines, logs_text["actor"])
    assert "PAUSED: SafetyFault" in paused_lines[0] and "PAUSED: SceneResetError" in paused_lines[1], paused_lines
    assert follower.scene_service.declines == 0
    # (none when the fault came before the episode's first batch went out)
    assert {k: v for k, v in rejected.items() if v} in ({}, {"learner/dropped_episodes/restarted": 1}), rejected
    assert am["actor/weights_version"] >= 2         # it acted with weights the learner trained
    assert am["actor/episodes"] == episodes       # every episode the actor ran reached replay, whole
    assert follower.scene_service.requests - restores_before >= episodes   # every episode from a restored scene
    assert faults.injected["drop"] >= 1 and faults.injected["corrupt"] >= 1
    steps, bad_demos = checkpoint_audit(run)
    assert steps and bad_demos == [], (steps, bad_demos)
    assert audit_goal_log(follower, "split actor", start) == []
    print(f"split: {lm['learner/transitions']} transitions from the actor on the emulated arm, "
          f"{lm['learner/updates']} updates, weights v{am['actor/weights_version']} acting, checkpoints {steps}, "
          f"glitches injected {dict(faults.injected)}")


# -- stage 5: evaluate -----------------------------------------------------------------------------

def test_5_evaluate_the_policy_on_the_arm(rigs, workdir):
    import json

    run = _need("run", "train online")
    follower, _ = rigs
    start = len(follower.emulator.goal_log)
    out = workdir / "eval"
    # on the emulated arm, named as a user names it; the scene operator comes from the run's config
    assert cli_main(["evaluate", "--checkpoint", str(run), "--episodes", "2", "--out", str(out),
                     "--backend", "hardware", "--port", follower.port, "--scene-camera", "twin_scene",
                     "--camera-source", follower.camera_url]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["step"] == RESUMED_STEPS and 0.0 <= result["eval/success"] <= 1.0, result
    assert audit_goal_log(follower, "evaluate", start) == []
