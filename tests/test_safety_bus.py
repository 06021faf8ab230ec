"""The safety layer seen from the bus: hostile command streams through ``SerialArm`` into the servo
emulator over its pty, checked against the emulator's log of every goal position it received.

What reached the "motors" is the only thing that counts, so every check decodes the logged goal
ticks back to radians with the same calibration and asks: inside the joint limits, within the
per-tick caps of the state the filter saw, FK inside the workspace box and every link above the
floor. Goal ticks are integers, so limits and steps are checked to half a tick and Cartesian
bounds to ``FK_TOL_M`` (half a tick on every joint moves the gripper well under that).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from se_robot.arm import load_arm
from se_robot.hardware.emulator import VirtualArm
from se_robot.hardware.serial_arm import SerialArm
from se_robot.kinematics import Kinematics
from se_robot.safety import FaultKind, SafetyFault, soft_limits, workspace_violations

pytestmark = pytest.mark.timeout(240)

ARM = load_arm("so101")
N = ARM.n_joints
S = ARM.safety
LOWER, UPPER = soft_limits(ARM)
KIN = Kinematics(ARM)
FK_TOL_M = 2e-3
OVERLOAD = 0x20  # Feetech status error bit


TOTALS = {"actions": 0, "env_actions": 0, "goal_vectors": 0, "violations": 0, "estop_writes": 0,
          "max_box_excursion_m": 0.0, "max_floor_excursion_m": 0.0, "max_step_rad": 0.0}


class BusAudit:
    """Pairs each send with the goals it put on the wire and counts rule violations."""

    def __init__(self, varm: VirtualArm):
        self.varm = varm
        self.cal = varm.calibration
        self.half_tick = 0.5 * self.cal.rad_per_tick + 1e-9
        self.seen = len(varm.emulator.goal_log)
        self.actions = 0
        self.goal_vectors = 0
        self.violations: list[str] = []

    def new_goals(self) -> list[np.ndarray]:
        """Goal vectors (rad) logged since the last call; call after a request/response
        transaction (a read), which guarantees the emulator has processed earlier writes."""
        log = self.varm.emulator.goal_log[self.seen:]
        self.seen += len(log)
        ids = ARM.servo_ids
        vectors = []
        for i in range(0, len(log), N):
            chunk = log[i:i + N]
            if [g.servo_id for g in chunk] != ids:
                self.violations.append(f"partial or reordered goal write {[g.servo_id for g in chunk]}")
                continue
            vectors.append(self.cal.ticks_to_rad(np.array([g.ticks for g in chunk]), ARM.joint_names))
        self.goal_vectors += len(vectors)
        return vectors

    def check(self, goal: np.ndarray, state: np.ndarray, label: str) -> None:
        v = self.violations
        if (goal < ARM.lower).any() or (goal > ARM.upper).any():
            v.append(f"{label}: goal {goal} outside the joint limits")
        lo, hi = np.minimum(LOWER, state), np.maximum(UPPER, state)
        if (goal < lo - self.half_tick).any() or (goal > hi + self.half_tick).any():
            v.append(f"{label}: goal {goal} outside the soft limits")
        if (np.abs(goal - state) > S.max_joint_step_rad + self.half_tick).any():
            v.append(f"{label}: joint step {np.abs(goal - state).max():.4f} rad from {state}")
        ee, ee0 = KIN.fk(goal), KIN.fk(state)
        if np.linalg.norm(ee - ee0) > S.max_ee_step_m + FK_TOL_M:
            v.append(f"{label}: gripper step {np.linalg.norm(ee - ee0):.4f} m")
        viol = workspace_violations(ee, KIN.link_points(goal), np.array(S.workspace_min),
                                    np.array(S.workspace_max), S.floor_z + S.floor_clearance_m)
        TOTALS["max_box_excursion_m"] = max(TOTALS["max_box_excursion_m"], float(viol[:6].max()))
        TOTALS["max_floor_excursion_m"] = max(TOTALS["max_floor_excursion_m"], float(viol[6:].max()))
        TOTALS["max_step_rad"] = max(TOTALS["max_step_rad"], float(np.abs(goal - state).max()))
        if viol[:6].max() > FK_TOL_M:
            v.append(f"{label}: gripper {ee} outside the workspace box by {viol[:6].max():.4f} m")
        if viol[6:].max() > FK_TOL_M:
            v.append(f"{label}: a link {viol[6:].max():.4f} m below the floor clearance")


@pytest.fixture(scope="module")
def rig():
    with VirtualArm(ARM, physics="first_order") as varm:
        arm = SerialArm(ARM, varm.port, varm.calibration)
        arm.connect()
        arm.torque_on()
        try:
            yield varm, arm
        finally:
            arm.disconnect()


def _target(kind: str, state: np.ndarray, data) -> object:
    """One hostile command relative to the measured state."""
    if kind == "near":
        return state + np.array(data.draw(st.lists(st.floats(-0.3, 0.3), min_size=N, max_size=N)))
    if kind == "absolute":
        return np.array(data.draw(st.lists(st.floats(-4.0, 4.0), min_size=N, max_size=N)))
    if kind == "huge":
        return np.array(data.draw(st.lists(st.sampled_from([1e9, -1e9, 1e3, -1e3, 7.0]), min_size=N, max_size=N)))
    if kind == "flip":
        return -state
    if kind == "non_finite":
        t = state.copy()
        t[data.draw(st.integers(0, N - 1))] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        return t
    if kind == "shape":
        return np.zeros(data.draw(st.sampled_from([0, N - 1, N + 1])))
    return data.draw(st.sampled_from([["x"] * N, [None] * N, np.ones(N, dtype=bool)]))


KINDS = ("near", "near", "near", "absolute", "huge", "flip", "non_finite", "shape", "dtype")
# "push": the same far target for many ticks while the arm moves, to reach the workspace edges.
EVENTS = KINDS * 3 + ("push", "push", "push", "latch", "reset", "reset", "fault")

REASON_COUNTS: dict[str, int] = {}


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.large_base_example, HealthCheck.data_too_large])
@given(data=st.data())
def test_hostile_streams_never_put_an_unsafe_goal_on_the_bus(rig, data):
    varm, arm = rig
    varm.emulator.set_fault(ARM.servo_ids[0], 0)
    arm.estop.reset()
    audit = BusAudit(varm)
    state = arm.read_state().positions
    audit.new_goals()
    pending: tuple[np.ndarray, str] | None = None  # (state the filter saw, label) of the last send
    n_events = data.draw(st.integers(1, 60))
    for i in range(n_events):
        event = data.draw(st.sampled_from(EVENTS))
        if event == "latch":
            arm.estop.latch("test: e-stop pressed")
            continue
        if event == "reset":
            arm.estop.reset()
            continue
        if event == "fault":
            sid = data.draw(st.sampled_from(ARM.servo_ids))
            varm.emulator.set_fault(sid, OVERLOAD)
            with pytest.raises(SafetyFault) as err:
                arm.read_state()
            assert err.value.kind is FaultKind.SERVO_STATUS and arm.estop.latched
            varm.emulator.set_fault(sid, 0)
            continue
        if event == "push":
            far = np.array(data.draw(st.lists(st.floats(-3.0, 3.0), min_size=N, max_size=N)))
            plan = [far] * data.draw(st.integers(5, 40))
        else:
            plan = [_target(event, state, data)]
        for target in plan:
            latched = arm.estop.latched
            cmd = arm.send_joint_targets(target)
            audit.actions += 1
            for r in cmd.reasons:
                REASON_COUNTS[r] = REASON_COUNTS.get(r, 0) + 1
            state_seen = state
            if event == "push":
                time.sleep(0.004)  # let the servos move towards the goal
            state = arm.read_state().positions  # also makes the emulator catch up with the write
            goals = audit.new_goals()
            if latched:
                assert cmd.held and "estop" in cmd.reasons
                if goals:
                    audit.violations.append(f"{len(goals)} goal write(s) reached the bus with the e-stop latched")
                    TOTALS["estop_writes"] += len(goals)
                continue
            if len(goals) != 1:
                audit.violations.append(f"{event}: expected one goal write, saw {len(goals)}")
                continue
            audit.check(goals[0], state_seen, f"{event} #{i}")
            if cmd.held:
                assert np.abs(goals[0] - state_seen).max() <= audit.half_tick
    for key in ("actions", "goal_vectors"):
        TOTALS[key] += getattr(audit, key)
    TOTALS["violations"] += len(audit.violations)
    assert not audit.violations, audit.violations[:5]


def test_estop_blocks_the_bus_until_reset(rig):
    varm, arm = rig
    arm.estop.reset()
    audit = BusAudit(varm)
    state = arm.read_state().positions
    arm.estop.latch("test")
    for _ in range(20):
        arm.send_joint_targets(state + 0.1)
        arm.read_state()
    assert audit.new_goals() == []
    arm.estop.reset()
    arm.send_joint_targets(state + 0.01)
    arm.read_state()
    assert len(audit.new_goals()) == 1


def test_a_servo_fault_latches_the_estop_and_stops_goal_writes(rig):
    varm, arm = rig
    arm.estop.reset()
    audit = BusAudit(varm)
    state = arm.read_state().positions
    varm.emulator.set_fault(ARM.servo_ids[2], OVERLOAD)
    with pytest.raises(SafetyFault) as err:
        arm.read_state()
    assert err.value.kind is FaultKind.SERVO_STATUS and err.value.servo_id == ARM.servo_ids[2]
    assert arm.estop.latched
    varm.emulator.set_fault(ARM.servo_ids[2], 0)
    cmd = arm.send_joint_targets(state + 0.05)
    arm.read_state()
    assert cmd.held and audit.new_goals() == []
    arm.estop.reset()


def measure_watchdog_reaction(varm: VirtualArm, arm: SerialArm, n_commands: int = 20,
                              period_s: float = 0.01) -> tuple[float, float]:
    """(seconds from the last command to the watchdog's hold write at the bus, largest joint motion
    in the 0.2 s after that write). Sends a slow sweep first so the arm is moving when it stops."""
    audit = BusAudit(varm)
    state = arm.read_state().positions
    direction = np.zeros(N)
    direction[0] = 0.1 if state[0] < 0 else -0.1
    arm.start_watchdog()
    try:
        for _ in range(n_commands):
            state = arm.read_state().positions
            arm.send_joint_targets(state + direction)
            time.sleep(period_s)
        t_last = time.monotonic()
        emu = varm.emulator
        start = len(emu.goal_log)
        deadline = t_last + 10 * S.watchdog_timeout_s + 2.0  # liveness bound, not a timing check
        while len(emu.goal_log) < start + N and time.monotonic() < deadline:
            time.sleep(0.002)
        records = emu.goal_log[start:start + N]
        assert len(records) == N, "the watchdog never held the arm"
        reaction_s = records[0].time_s - t_last
        q0 = varm.joint_positions_rad()
        time.sleep(0.2)
        drift = float(np.abs(varm.joint_positions_rad() - q0).max())
        audit.seen = len(emu.goal_log)
        return reaction_s, drift
    finally:
        arm.stop_watchdog()


def test_watchdog_holds_the_arm_when_commands_stop(rig):
    varm, arm = rig
    arm.estop.reset()
    trips = arm.counters["watchdog_trips"]
    reaction_s, drift_rad = measure_watchdog_reaction(varm, arm)
    print(f"\nwatchdog: hold reached the bus {reaction_s * 1e3:.0f} ms after the last command "
          f"(timeout {S.watchdog_timeout_s * 1e3:.0f} ms); joint drift after it {drift_rad:.5f} rad")
    assert arm.counters["watchdog_trips"] == trips + 1
    assert drift_rad <= varm.calibration.rad_per_tick  # the arm holds still once the hold is written


# ---------------------------------------------------------------------------- through the Gymnasium env

hostile_action_value = st.one_of(st.floats(-1.0, 1.0), st.sampled_from([np.nan, np.inf, -np.inf, 1e9, -1e9]),
                                 st.floats(-1e9, 1e9, allow_nan=False))


@pytest.fixture(scope="module", params=[("ee_delta", "first_order"), ("joint_delta", "first_order"),
                                        ("ee_delta", "twin")], ids=lambda p: "-".join(p))
def env_rig(request):
    """HardwareArmEnv on a VirtualArm whose servos are a first-order model or the MuJoCo twin."""
    from se_robot.envs.hardware_env import HardwareArmEnv

    action_mode, physics = request.param
    with VirtualArm(ARM, physics=physics) as varm:
        env = HardwareArmEnv(task="reach", arm=ARM, port=varm.port, calibration=varm.calibration, scene_camera=None,
                             control_hz=200.0, obs_mode="state", action_mode=action_mode)
        try:
            env.reset(seed=0)
            yield varm, env
        finally:
            env.close()


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.large_base_example, HealthCheck.data_too_large])
@given(data=st.data())
def test_hostile_env_actions_never_put_an_unsafe_goal_on_the_bus(env_rig, data):
    varm, env = env_rig
    n = env.action_space.shape[0]
    actions = data.draw(st.lists(st.lists(hostile_action_value, min_size=n, max_size=n), min_size=20, max_size=80))
    audit = BusAudit(varm)
    for k, action in enumerate(actions):
        # The state the filter will measure the caps from: the env's last sync read (private, read-only).
        state_seen = env.robot._last_state.positions
        env.step(np.array(action))
        goals = audit.new_goals()  # the step's own sync read synchronised the emulator
        audit.actions += 1
        if len(goals) != 1:
            audit.violations.append(f"env step {k}: expected one goal write, saw {len(goals)}")
            continue
        audit.check(goals[0], state_seen, f"env step {k} action {action}")
    TOTALS["env_actions"] += audit.actions
    TOTALS["goal_vectors"] += audit.goal_vectors
    TOTALS["violations"] += len(audit.violations)
    assert not audit.violations, audit.violations[:5]


def test_zz_report_fuzz_totals():
    """Prints what the fuzz test above sent (run with -s to see it); collected last."""
    print(f"\nsafety bus fuzz: {TOTALS['actions']} SerialArm commands + {TOTALS['env_actions']} env actions, "
          f"{TOTALS['goal_vectors']} goal writes audited, "
          f"{TOTALS['violations']} violations, {TOTALS['estop_writes']} writes under e-stop; "
          f"filter reasons {dict(sorted(REASON_COUNTS.items()))}; largest joint step at the bus "
          f"{TOTALS['max_step_rad']:.4f} rad, largest excursion (goal-tick rounding) outside the box "
          f"{TOTALS['max_box_excursion_m'] * 1e3:.2f} mm, below the floor clearance "
          f"{TOTALS['max_floor_excursion_m'] * 1e3:.2f} mm")
    assert TOTALS["violations"] == 0 and TOTALS["estop_writes"] == 0
