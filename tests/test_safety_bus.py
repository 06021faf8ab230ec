"""The safety layer seen from the bus: hostile command streams through ``SerialArm`` into the servo
emulator over its pty, checked against the emulator's log of every goal position it received.

What reached the "motors" is the only thing that counts, so every check decodes the logged goal
ticks back to radians with the same calibration and asks: inside the joint limits, within the
per-tick joint cap of both the same-tick reading and the previous goal, within the Cartesian cap
of the previous goal, FK inside the workspace box and every link above the floor; a held command
re-sends the previous goal, and each e-stop latch writes exactly one goal: the present position.
Goal ticks are integers, so limits and steps are checked to half a tick and Cartesian bounds to
``FK_TOL_M`` (half a tick on every joint moves the gripper well under that). A held command of a
joint lagging its goal by more than the cap is drawn to within the cap of the reading.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from se_robot.arm import load_arm
from se_robot.estop import FaultKind, SafetyFault
from se_robot.hardware.emulator import VirtualArm
from se_robot.hardware.serial_arm import SerialArm
from se_robot.sim.kinematics import Kinematics
from se_robot.safety import cap_joint_step_between, soft_limits, workspace_violations

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

    def check(self, goal: np.ndarray, state: np.ndarray, label: str, ref: np.ndarray | None = None) -> None:
        """``state``: the same-tick reading the filter saw; ``ref``: the previous goal (None: none)."""
        v = self.violations
        ref = state if ref is None else ref
        if (np.abs(goal - ref) > S.max_joint_step_rad + 1e-9).any():
            v.append(f"{label}: goal jumped {np.abs(goal - ref).max():.4f} rad from the previous goal {ref}")
        if (goal < ARM.lower).any() or (goal > ARM.upper).any():
            v.append(f"{label}: goal {goal} outside the joint limits")
        lo, hi = np.minimum(LOWER, state), np.maximum(UPPER, state)
        if (goal < lo - self.half_tick).any() or (goal > hi + self.half_tick).any():
            v.append(f"{label}: goal {goal} outside the soft limits")
        # SerialArm rounds goal ticks towards the present position: steps hold exactly.
        if (np.abs(goal - state) > S.max_joint_step_rad + 1e-9).any():
            v.append(f"{label}: joint step {np.abs(goal - state).max():.4f} rad from {state}")
        ee, ee0 = KIN.fk(goal), KIN.fk(ref)
        if np.linalg.norm(ee - ee0) > S.max_ee_step_m + FK_TOL_M:
            v.append(f"{label}: gripper step {np.linalg.norm(ee - ee0):.4f} m")
        viol = workspace_violations(ee, KIN.link_points(goal), np.array(S.workspace_min),
                                    np.array(S.workspace_max), S.floor_z + S.floor_clearance_m)
        TOTALS["max_box_excursion_m"] = max(TOTALS["max_box_excursion_m"], float(viol[:6].max()))
        TOTALS["max_floor_excursion_m"] = max(TOTALS["max_floor_excursion_m"], float(viol[6:].max()))
        TOTALS["max_step_rad"] = max(TOTALS["max_step_rad"], float(np.abs(goal - state).max()),
                                     float(np.abs(goal - ref).max()))
        if viol[:6].max() > FK_TOL_M:
            v.append(f"{label}: gripper {ee} outside the workspace box by {viol[:6].max():.4f} m")
        if viol[6:].max() > FK_TOL_M:
            v.append(f"{label}: a link {viol[6:].max():.4f} m below the floor clearance")


def record_currents(arm: SerialArm) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Record the (reading, previous goal) the driver hands its safety filter on every call (what
    the caps are measured from), calling through to the real filter."""
    seen: list[tuple[np.ndarray, np.ndarray | None]] = []
    filt = arm.safety_filter
    real = filt.filter

    def recording(target, current, goal=None):
        seen.append((np.array(current, dtype=np.float64), None if goal is None else np.array(goal, dtype=np.float64)))
        return real(target, current, goal)

    filt.filter = recording
    return seen


@pytest.fixture(scope="module")
def rig():
    with VirtualArm(ARM, physics="first_order") as varm:
        # Generous bus timeouts: the emulator shares a loaded machine with the test.
        arm = SerialArm(ARM, varm.port, varm.calibration, timeout_s=0.25, retries=4)
        arm.currents_seen = record_currents(arm)
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


def settle(varm: VirtualArm, arm: SerialArm, expected_len: int | None = None) -> None:
    """Let the emulator process everything written so far: a read is request/response, but a
    reply delayed past the bus timeout on a loaded machine can answer a later read early, so
    keep reading until the goal log stops growing (or reaches ``expected_len``)."""
    emu = varm.emulator
    for _ in range(50):
        before = len(emu.goal_log)
        arm.read_state()
        if expected_len is not None and len(emu.goal_log) >= expected_len:
            return
        if expected_len is None and len(emu.goal_log) == before:
            return
        time.sleep(0.01)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.large_base_example, HealthCheck.data_too_large])
@given(data=st.data())
def test_hostile_streams_never_put_an_unsafe_goal_on_the_bus(rig, data):
    varm, arm = rig
    for sid in ARM.servo_ids:
        varm.emulator.set_fault(sid, 0)
    arm.estop.reset()
    settle(varm, arm)
    audit = BusAudit(varm)
    state = arm.read_state().positions
    # Each unlatched send must put exactly one goal vector on the wire, in order; each latch one
    # (the stop, at the present position); latched sends none. Pairing in order (not by read)
    # keeps the audit exact even when a reply comes late.
    expected: list[tuple[tuple, str, str]] = []  # ((reading, previous goal) the filter used, label, kind)
    n_events = data.draw(st.integers(1, 60))
    for i in range(n_events):
        event = data.draw(st.sampled_from(EVENTS))
        if event == "latch":
            if not arm.estop.latched:
                arm.estop.latch("test: e-stop pressed")
                expected.append(((arm._last_state.positions, None), f"latch #{i}", "stop"))
            continue
        if event == "reset":
            arm.estop.reset()
            continue
        if event == "fault":
            sid = data.draw(st.sampled_from(ARM.servo_ids))
            varm.emulator.set_fault(sid, OVERLOAD)
            was_latched = arm.estop.latched
            try:
                if was_latched:
                    arm.read_state()  # reads keep working under a latch, fault bits and all
                else:
                    with pytest.raises(SafetyFault):
                        arm.read_state()
                    expected.append(((arm._last_state.positions, None), f"fault #{i}", "stop"))
            finally:
                varm.emulator.set_fault(sid, 0)
            assert arm.estop.latched
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
            if latched:
                assert cmd.held and "estop" in cmd.reasons
            else:
                expected.append((arm.currents_seen[-1], f"{event} #{i}", "held" if cmd.held else "move"))
            if event == "push":
                time.sleep(0.004)  # let the servos move towards the goal
            state = arm.read_state().positions
    settle(varm, arm, audit.seen + N * len(expected))
    settle(varm, arm)
    goals = audit.new_goals()
    if len(goals) != len(expected):
        extra = len(goals) - len(expected)
        audit.violations.append(f"{len(goals)} goal writes for {len(expected)} unlatched sends")
        TOTALS["estop_writes"] += max(extra, 0)
    for goal, ((state_seen, prev_goal), label, kind) in zip(goals, expected):
        if kind == "stop":
            if np.abs(goal - state_seen).max() > audit.half_tick:
                audit.violations.append(f"{label}: the stop {goal} is not the present position {state_seen}")
            continue
        audit.check(goal, state_seen, label, prev_goal)
        if kind == "held" and prev_goal is not None:
            kept = cap_joint_step_between(prev_goal, prev_goal, state_seen, S.max_joint_step_rad)
            if np.abs(goal - kept).max() > audit.half_tick:
                audit.violations.append(f"{label}: a held command moved the goal off the previous goal")
    for key in ("actions", "goal_vectors"):
        TOTALS[key] += getattr(audit, key)
    TOTALS["violations"] += len(audit.violations)
    assert not audit.violations, audit.violations[:5]


def test_estop_blocks_the_bus_until_reset(rig):
    varm, arm = rig
    arm.estop.reset()
    settle(varm, arm)
    audit = BusAudit(varm)
    state = arm.read_state().positions
    arm.estop.latch("test")
    present = arm._last_state.positions  # the stop's reading
    for _ in range(20):
        assert arm.send_joint_targets(state + 0.1).held
        arm.read_state()
    settle(varm, arm)
    stops = audit.new_goals()  # the latch writes one hold at the present position, then nothing
    assert len(stops) == 1 and np.abs(stops[0] - present).max() <= audit.half_tick
    arm.estop.reset()
    arm.send_joint_targets(state + 0.01)
    settle(varm, arm, audit.seen + N)
    assert len(audit.new_goals()) == 1


def test_a_servo_fault_latches_the_estop_and_stops_goal_writes(rig):
    varm, arm = rig
    arm.estop.reset()
    settle(varm, arm)
    audit = BusAudit(varm)
    state = arm.read_state().positions
    varm.emulator.set_fault(ARM.servo_ids[2], OVERLOAD)
    try:
        with pytest.raises(SafetyFault) as err:
            arm.read_state()
    finally:
        varm.emulator.set_fault(ARM.servo_ids[2], 0)
    assert err.value.kind is FaultKind.SERVO_STATUS and err.value.servo_id == ARM.servo_ids[2]
    assert arm.estop.latched and arm.estop.reason.startswith("servo_status")
    cmd = arm.send_joint_targets(state + 0.05)
    settle(varm, arm)
    assert cmd.held and len(audit.new_goals()) == 1  # the one stop write, then nothing
    arm.estop.reset()


def measure_watchdog_reaction(varm: VirtualArm, arm: SerialArm, n_commands: int = 20,
                              period_s: float = 0.01) -> tuple[float, float]:
    """(seconds from the last command to the watchdog's hold write at the bus, largest joint motion
    in 0.2 s once the arm reached the held goal). Sends a slow sweep first so the arm is moving when it stops."""
    emu = varm.emulator
    settle(varm, arm)
    state = arm.read_state().positions
    direction = np.zeros(N)
    direction[0] = 0.1 if state[0] < 0 else -0.1
    arm.start_watchdog()
    try:
        trips = arm.counters["watchdog_trips"]
        start = len(emu.goal_log)
        for _ in range(n_commands):
            state = arm.read_state().positions
            arm.send_joint_targets(state + direction)
            t_last = time.monotonic()
            time.sleep(period_s)
        # Our sends put exactly n_commands goal vectors on the wire (and a watchdog hold, should a
        # loaded machine stall the loop, one more each); the next one is the watchdog's hold.
        deadline = t_last + 10 * S.watchdog_timeout_s + 2.0  # liveness bound, not a timing check
        while time.monotonic() < deadline:
            first_after = start + N * (n_commands + arm.counters["watchdog_trips"] - trips)
            if arm.counters["watchdog_trips"] > trips and len(emu.goal_log) >= first_after:
                break
            time.sleep(0.002)
        assert arm.counters["watchdog_trips"] > trips, "the watchdog never held the arm"
        records = emu.goal_log[first_after - N:first_after]
        reaction_s = records[0].time_s - t_last
        # The hold keeps the last goal (not the reading): the arm finishes that step, then stays.
        last_goal, held = (varm.calibration.ticks_to_rad(np.array([g.ticks for g in r], dtype=np.float64),
                                                         ARM.joint_names) for r in
                           (emu.goal_log[first_after - 2 * N:first_after - N], records))
        np.testing.assert_allclose(held, last_goal)
        end = time.monotonic() + 10.0  # liveness bound for a loaded machine
        while np.abs(varm.joint_positions_rad() - held).max() > 2 * varm.calibration.rad_per_tick:
            assert time.monotonic() < end, "the arm never reached its held goal"
            time.sleep(0.01)
        q0 = varm.joint_positions_rad()
        time.sleep(0.2)
        drift = float(np.abs(varm.joint_positions_rad() - q0).max())
        return reaction_s, drift
    finally:
        arm.stop_watchdog()


def test_watchdog_holds_the_arm_when_commands_stop(rig):
    varm, arm = rig
    arm.estop.reset()
    reaction_s, drift_rad = measure_watchdog_reaction(varm, arm)
    print(f"\nwatchdog: hold reached the bus {reaction_s * 1e3:.0f} ms after the last command "
          f"(timeout {S.watchdog_timeout_s * 1e3:.0f} ms); joint drift after it {drift_rad:.5f} rad")
    assert drift_rad <= varm.calibration.rad_per_tick  # the arm holds still once the hold is written


# ---------------------------------------------------------------------------- through the Gymnasium env

hostile_action_value = st.one_of(st.floats(-1.0, 1.0), st.sampled_from([np.nan, np.inf, -np.inf, 1e9, -1e9]),
                                 st.floats(-1e9, 1e9, allow_nan=False))


@pytest.fixture(scope="module", params=[("ee_delta", "first_order"), ("joint_delta", "first_order"),
                                        ("ee_delta", "twin")], ids=lambda p: "-".join(p))
def env_rig(request):
    """ArmEnv over a SerialRobot on a VirtualArm whose servos are a first-order model or the MuJoCo twin."""
    from se_robot.envs.arm_env import ArmEnv
    from se_robot.hardware.serial_robot import SerialRobot

    action_mode, physics = request.param
    with VirtualArm(ARM, physics=physics) as varm:
        # No watchdog here: a stall of the test process past its timeout would add a (safe) hold
        # write between the audited goals; the watchdog has its own test above.
        robot = SerialRobot(ARM, varm.port, varm.calibration, control_hz=200.0, watchdog=False,
                            timeout_s=0.25, retries=4)
        env = ArmEnv(robot, "reach", control_hz=200.0, obs_mode="state", action_mode=action_mode)
        robot.device.currents_seen = record_currents(robot.device)
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
    arm = env.robot.device  # the SerialArm whose goal writes are audited
    n = env.action_space.shape[0]
    actions = data.draw(st.lists(st.lists(hostile_action_value, min_size=n, max_size=n), min_size=20, max_size=80))
    settle(varm, arm)
    audit = BusAudit(varm)
    expected = []
    for k, action in enumerate(actions):
        env.step(np.array(action))
        audit.actions += 1
        expected.append((arm.currents_seen[-1], f"env step {k} action {action}"))
    settle(varm, arm, audit.seen + N * len(expected))
    goals = audit.new_goals()
    if len(goals) != len(expected):
        audit.violations.append(f"{len(goals)} goal writes for {len(expected)} env steps")
    for goal, ((state_seen, prev_goal), label) in zip(goals, expected):
        audit.check(goal, state_seen, label, prev_goal)
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
