"""Unit and property tests of the safety layer against a small analytic stand-in for the kinematics.

The stand-in reproduces the SO-101 chain of sim/so101.xml (same link offsets and joint axes), so
the rules are exercised on a realistic geometry and the unit tests can count FK calls; the property
tests run against both the stand-in and the real MuJoCo `Kinematics`.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from se_robot.arm import load_arm
from se_robot.estop import EStop, FaultKind, SafetyFault, Watchdog
from se_robot.sim.kinematics import Kinematics
from se_robot.safety import (REASONS, SafetyFilter, cap_joint_step, clip_to_limits, effort_limit_fraction,
                             gripper_effort_limit_nm, soft_limits, validate_target, workspace_violations)

pytestmark = pytest.mark.timeout(120)

ARM = load_arm("so101")
N = ARM.n_joints
LOWER, UPPER = soft_limits(ARM)
S = ARM.safety


def _rot(axis: str, a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


class StandInKinematics:
    """Analytic FK of the sim/so101.xml chain: pan(z) lift(y) elbow(y) wrist_flex(y) roll(x)."""

    # (offset of the joint from its parent, axis) in the parent's frame
    CHAIN = (((0, 0, 0.05), "z"), ((0, 0, 0.058), "y"), ((0, 0, 0.116), "y"),
             ((0.135, 0, 0), "y"), ((0.032, 0, 0), "x"))
    SITE = np.array([0.06, 0, 0])
    JAW = np.array([0.07, 0, -0.025])  # a point on the jaw that swings with the gripper angle

    def __init__(self) -> None:
        self.calls = 0

    def _frames(self, q: np.ndarray):
        p, r = np.zeros(3), np.eye(3)
        pts = []  # the base is bolted to the table: only moving links count for the floor
        for (off, axis), qi in zip(self.CHAIN, q[:5]):
            p = p + r @ np.asarray(off, dtype=float)
            r = r @ _rot(axis, qi)
            pts.append(p.copy())
        return p, r, pts

    def fk(self, q: np.ndarray) -> np.ndarray:
        self.calls += 1
        p, r, _ = self._frames(q)
        return p + r @ self.SITE

    def link_points(self, q: np.ndarray) -> np.ndarray:
        self.calls += 1
        p, r, pts = self._frames(q)
        pts.append(p + r @ self.SITE)
        pts.append(p + r @ _rot("x", q[5]) @ self.JAW)
        return np.array(pts)


KIN = StandInKinematics()
KINS = {"stand_in": KIN, "mujoco": Kinematics(ARM)}


def make_filter(kin=None, estop=None) -> SafetyFilter:
    return SafetyFilter(ARM, kin or StandInKinematics(), estop)


def violations(kin, q) -> np.ndarray:
    return workspace_violations(kin.fk(q), kin.link_points(q), np.array(S.workspace_min),
                                np.array(S.workspace_max), S.floor_z + S.floor_clearance_m)


def check_invariants(kin, cmd, cur, estop_latched=False) -> None:
    """Everything that must hold for any output of the filter (shared with the property tests)."""
    out = cmd.positions
    assert isinstance(out, np.ndarray) and out.shape == (N,) and out.dtype == np.float64
    assert np.isfinite(out).all()
    if cmd.held or estop_latched:
        assert cmd.held
        np.testing.assert_array_equal(out, cur)
        return
    assert (out >= np.minimum(LOWER, cur) - 1e-12).all() and (out <= np.maximum(UPPER, cur) + 1e-12).all()
    assert (np.abs(out - cur) <= S.max_joint_step_rad + 1e-9).all()
    assert np.linalg.norm(kin.fk(out) - kin.fk(cur)) <= S.max_ee_step_m * (1 + 1e-6)
    v0, v1 = violations(kin, cur), violations(kin, out)
    # From a bad pose a move may trade one small violation for a larger reduction of the total
    # (so homing can always recover), but never deepens the worst one.
    recovers = v1.sum() < v0.sum() - 1e-9 and v1.max() <= v0.max() + 1e-9
    assert (v1 <= v0 + 1e-9).all() or recovers, "a move made a workspace/floor violation worse"
    if not v0.any():
        ee = kin.fk(out)
        assert (ee >= np.array(S.workspace_min) - 1e-9).all() and (ee <= np.array(S.workspace_max) + 1e-9).all()
        assert (kin.link_points(out)[:, 2] >= S.floor_z + S.floor_clearance_m - 1e-9).all()


def test_stand_in_home_is_safe():
    assert not violations(KIN, ARM.home).any()


# ---------------------------------------------------------------------------- pure functions

def test_soft_limits_shrink_by_margin():
    np.testing.assert_allclose(LOWER, ARM.lower + S.soft_margin_rad)
    np.testing.assert_allclose(UPPER, ARM.upper - S.soft_margin_rad)


def test_clip_widens_to_include_a_current_outside_the_limits():
    lo, hi = np.array([-1.0]), np.array([1.0])
    assert clip_to_limits(np.array([5.0]), np.array([0.0]), lo, hi)[0] == 1.0
    # current beyond the upper limit: may stay or come back, not go further
    assert clip_to_limits(np.array([5.0]), np.array([1.5]), lo, hi)[0] == 1.5
    assert clip_to_limits(np.array([0.2]), np.array([1.5]), lo, hi)[0] == 0.2
    assert clip_to_limits(np.array([-5.0]), np.array([1.5]), lo, hi)[0] == -1.0


def test_cap_joint_step():
    out = cap_joint_step(np.array([1.0, -1.0, 0.05]), np.zeros(3), 0.1)
    np.testing.assert_allclose(out, [0.1, -0.1, 0.05])


def test_workspace_violations_measure_each_face_and_point():
    v = workspace_violations(np.array([0.5, 0.0, 0.1]), np.array([[0, 0, 0.1], [0, 0, -0.02]]),
                             np.zeros(3) - 0.3, np.array([0.4, 0.3, 0.4]), 0.005)
    np.testing.assert_allclose(v, [0, 0, 0, 0.1, 0, 0, 0, 0.025])


def test_gripper_effort_limit_takes_the_smaller_cap():
    assert gripper_effort_limit_nm(ARM) == min(ARM.gripper.max_effort, ARM.joint_limits["gripper"].max_effort)
    assert effort_limit_fraction(1.45, 2.9) == pytest.approx(0.5)
    assert effort_limit_fraction(10.0, 2.9) == 1.0 and effort_limit_fraction(-1.0, 2.9) == 0.0
    with pytest.raises(ValueError):
        effort_limit_fraction(float("nan"), 2.9)


@pytest.mark.parametrize("bad, reason", [
    ([0.0] * (N - 1), "bad_shape"), ([0.0] * (N + 1), "bad_shape"), (np.zeros((1, N)), "bad_shape"),
    (0.0, "bad_shape"), ([[0.0], [0.0, 1.0]], "bad_shape"), (["a"] * N, "bad_dtype"),
    (np.zeros(N, dtype=bool), "bad_dtype"), (np.zeros(N, dtype=complex), "bad_dtype"),
    ([None] * N, "bad_dtype"), ([10 ** 400] * N, "bad_dtype"),
    ([0.0] * (N - 1) + [float("nan")], "non_finite"), ([float("inf")] * N, "non_finite"),
    (np.full(N, -np.inf, dtype=np.float32), "non_finite"),
])
def test_malformed_targets_are_held_counted_and_reported(bad, reason):
    assert validate_target(bad, N) == (None, reason)
    f = make_filter()
    cmd = f.filter(bad, ARM.home)
    assert cmd.held and not cmd.clipped and cmd.reasons == (reason,)
    np.testing.assert_array_equal(cmd.positions, ARM.home)
    assert f.stats["held"] == 1 and f.stats["reason/" + reason] == 1
    assert f.stats["non_finite"] == (reason == "non_finite")


def test_integer_and_float32_targets_are_accepted():
    f = make_filter()
    assert not f.filter(ARM.home.astype(np.float32), ARM.home).held
    cmd = f.filter(np.zeros(N, dtype=np.int64), np.zeros(N) + [0, 0, 0.3, 1.2, 0, 0])
    assert cmd.positions.dtype == np.float64


# ---------------------------------------------------------------------------- the filter's rules

def test_a_small_safe_command_passes_unchanged():
    f = make_filter()
    tgt = ARM.home + 0.01
    cmd = f.filter(tgt, ARM.home)
    np.testing.assert_array_equal(cmd.positions, tgt)
    assert not cmd.clipped and not cmd.held and cmd.reasons == ()
    assert f.stats == {"commands": 1, "clipped": 0, "held": 0, "non_finite": 0}


def test_joint_limit_and_step_cap():
    f = make_filter()
    cur = ARM.home.copy()
    cur[4] = UPPER[4] - 0.01  # wrist roll: does not move the gripper site
    tgt = cur.copy()
    tgt[4] = 1e9
    cmd = f.filter(tgt, cur)
    assert cmd.clipped and "joint_limit" in cmd.reasons and cmd.positions[4] == UPPER[4]
    tgt[4] = -1e9
    cmd = f.filter(tgt, cur)
    assert "joint_step" in cmd.reasons
    assert cmd.positions[4] == pytest.approx(cur[4] - S.max_joint_step_rad)


def test_ee_step_scales_the_arm_joints_and_keeps_the_jaw_step():
    kin = StandInKinematics()
    f = make_filter(kin)
    cur = ARM.home.copy()
    tgt = cur + np.array([0.15, 0.15, -0.15, 0.0, 0.0, 0.1])
    assert np.linalg.norm(kin.fk(tgt) - kin.fk(cur)) > S.max_ee_step_m
    cmd = f.filter(tgt, cur)
    assert cmd.clipped and "ee_step" in cmd.reasons
    moved = np.linalg.norm(kin.fk(cmd.positions) - kin.fk(cur))
    assert S.max_ee_step_m * 0.9 < moved <= S.max_ee_step_m * (1 + 1e-6)
    assert cmd.positions[5] == pytest.approx(tgt[5])  # the jaw's own step is kept
    frac = (cmd.positions[:5] - cur[:5]) / (tgt[:5] - cur[:5] + 1e-300)
    np.testing.assert_allclose(frac[[0, 1, 2]], frac[0])  # same direction in joint space


def _walk_until(f, kin, cur, direction, predicate, max_ticks=200):
    """Feed the filter a constant far target and track its output; return the outputs."""
    outs = []
    for _ in range(max_ticks):
        cmd = f.filter(cur + direction, cur)
        check_invariants(kin, cmd, cur)
        outs.append(cmd)
        if predicate(cmd):
            break
        cur = cmd.positions
    return outs


def test_workspace_box_projects_to_the_boundary_then_holds():
    kin = StandInKinematics()
    f = make_filter(kin)
    # Pan far left: the gripper leaves the box through y >= -0.3 or x >= 0.05 eventually.
    direction = np.array([-10.0, -10, 0, 0, 0, 0])
    outs = _walk_until(f, kin, ARM.home.copy(), direction, lambda c: c.held)
    assert outs[-1].held and ("workspace" in outs[-1].reasons or "floor" in outs[-1].reasons)
    last_moving = [c for c in outs if not c.held][-1].positions
    assert violations(kin, last_moving).max() == 0.0
    assert f.stats["held"] >= 1


def test_floor_stops_every_link_above_the_table():
    kin = StandInKinematics()
    f = make_filter(kin)
    direction = np.array([0, 10.0, 0, 10.0, 0, 0])  # lean forward and curl the wrist down
    outs = _walk_until(f, kin, ARM.home.copy(), direction, lambda c: c.held)
    assert any("floor" in c.reasons or "workspace" in c.reasons for c in outs)
    final = outs[-1].positions
    assert kin.link_points(final)[:, 2].min() >= S.floor_z + S.floor_clearance_m - 1e-9


def test_current_outside_allows_only_moves_that_do_not_make_it_worse():
    kin = StandInKinematics()
    f = make_filter(kin)
    cur = ARM.home.copy()
    cur[0] = -1.6  # panned by hand so the gripper is outside the box (y < -0.3 or x < 0.05)
    v0 = violations(kin, cur)
    assert v0.any()
    worse = f.filter(cur + np.array([-0.1, 0, 0, 0, 0, 0]), cur)
    assert worse.held and "current_unsafe" in worse.reasons
    better = f.filter(cur + np.array([0.1, 0, 0, 0, 0, 0]), cur)
    assert not better.held and (violations(kin, better.positions) <= v0 + 1e-12).all()


def test_estop_holds_every_command_until_reset():
    estop = EStop()
    f = make_filter(estop=estop)
    estop.latch("test")
    for tgt in (ARM.home + 0.01, ARM.home, [np.nan] * N):
        cmd = f.filter(tgt, ARM.home)
        assert cmd.held
        np.testing.assert_array_equal(cmd.positions, ARM.home)
    assert f.stats["reason/estop"] == 3 and f.stats["reason/non_finite"] == 1
    assert estop.reset() == "test"
    assert not f.filter(ARM.home + 0.01, ARM.home).held


@pytest.mark.parametrize("cur", [[np.nan] * N, [0.0] * (N - 1), ARM.home + 1e9, "x"])
def test_a_malformed_current_state_latches_and_raises(cur):
    f = make_filter()
    with pytest.raises(SafetyFault) as e:
        f.filter(ARM.home, cur)
    assert e.value.kind is FaultKind.BAD_STATE
    assert f.estop.latched and f.stats["reason/bad_state"] == 1


def test_hold_helper_counts_external_reasons():
    f = make_filter()
    cmd = f.hold(ARM.home, "watchdog")
    assert cmd.held and cmd.reasons == ("watchdog",) and f.stats["reason/watchdog"] == 1


def test_fk_calls_per_tick_are_few():
    kin = StandInKinematics()
    f = make_filter(kin)
    f.filter(ARM.home + 0.01, ARM.home)
    assert kin.calls == 3  # fk of current, fk + link_points of the command
    kin.calls = 0
    f.filter(ARM.home + np.array([0.15, 0.15, -0.15, 0, 0, 0]), ARM.home)
    assert kin.calls <= 4 + 2 * (f.bisect_iters + 2)
    kin.calls = 0
    f.filter(ARM.home + np.array([0.0, 10, 0, 10, 0, 0]), ARM.home)  # heads for the floor: bisects
    assert kin.calls <= 4 + 2 * (f.bisect_iters + 1)


# ---------------------------------------------------------------------------- e-stop, watchdog, faults

def test_estop_latch_is_sticky_and_keeps_the_first_reason():
    e = EStop()
    seen = []
    e.add_listener(seen.append)
    assert not e.latched and e.reason is None
    e.latch(SafetyFault(FaultKind.PORT_LOST, "/dev/ttyACM0 vanished"))
    e.latch("second")
    assert e.latched and e.reason.startswith("port_lost") and e.latch_count == 1
    assert seen == [e.reason]
    assert e.reset().startswith("port_lost") and not e.latched and e.reset() is None


def test_estop_is_thread_safe():
    e = EStop()
    barrier = threading.Barrier(8)

    def worker(i):
        barrier.wait()
        e.latch(f"t{i}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert e.latch_count == 1 and e.reason in {f"t{i}" for i in range(8)}


def test_watchdog_with_an_explicit_clock():
    w = Watchdog(0.25)
    t0 = time.monotonic()
    w.feed(t0)
    assert not w.expired(t0 + 0.2) and w.expired(t0 + 0.3)
    assert w.time_since_feed(t0 + 0.1) == pytest.approx(0.1)
    w.feed(t0 - 5.0)  # a stale timestamp never moves the feed time backwards
    assert not w.expired(t0 + 0.2)
    w.feed()
    assert not w.expired() and w.time_since_feed() >= 0.0
    with pytest.raises(ValueError):
        Watchdog(0.0)


def test_watchdog_starts_fed_and_expires_unfed():
    w = Watchdog(0.01)
    assert w.expired(time.monotonic() + 0.02)


def test_safety_fault_message_names_kind_and_servo():
    err = SafetyFault(FaultKind.SERVO_STATUS, "overload bit set", servo_id=3)
    assert "servo_status" in str(err) and "servo 3" in str(err) and err.servo_id == 3


def test_reasons_vocabulary_is_closed():
    f = make_filter()
    for tgt in (ARM.home * 0 + 1e9, ARM.home - 1e9, [np.nan] * N, ARM.home):
        for r in f.filter(tgt, ARM.home).reasons:
            assert r in REASONS


# ---------------------------------------------------------------------------- properties (stand-in FK)

finite = st.floats(-1e9, 1e9, allow_nan=False)
hostile_scalar = st.one_of(finite, st.sampled_from([np.nan, np.inf, -np.inf, 1e9, -1e9, 0.0]),
                           st.floats(-4, 4))


@st.composite
def safe_current(draw, kin):
    cur = ARM.home + np.array(draw(st.lists(st.floats(-0.7, 0.7), min_size=N, max_size=N)))
    cur = np.clip(cur, LOWER, UPPER)
    assume(not violations(kin, cur).any())
    return cur


@st.composite
def any_current(draw):
    """Inside the hard limits (+0.4 rad, within the allowed excursion), possibly outside the workspace."""
    return np.array(draw(st.lists(st.floats(-0.4, 0.4), min_size=N, max_size=N))) + \
        np.array(draw(st.lists(st.floats(0, 1), min_size=N, max_size=N))) * (ARM.upper - ARM.lower) + ARM.lower


@st.composite
def hostile_target(draw, cur):
    kind = draw(st.sampled_from(["scalars", "near", "flip", "huge", "shape", "dtype"]))
    if kind == "scalars":
        return np.array(draw(st.lists(hostile_scalar, min_size=N, max_size=N)))
    if kind == "near":
        return cur + np.array(draw(st.lists(st.floats(-0.5, 0.5), min_size=N, max_size=N)))
    if kind == "flip":
        return -cur
    if kind == "huge":
        return cur + draw(st.sampled_from([1, -1])) * np.array(draw(st.lists(st.floats(1, 1e9), min_size=N, max_size=N)))
    if kind == "shape":
        return [0.0] * draw(st.sampled_from([0, 1, N - 1, N + 1, 2 * N]))
    return draw(st.sampled_from([["0"] * N, [None] * N, np.zeros(N, dtype=complex), np.ones(N, dtype=bool)]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data())
@pytest.mark.parametrize("kin_name", list(KINS))
def test_property_single_tick_from_a_safe_state(kin_name, data):
    kin = KINS[kin_name]
    cur = data.draw(safe_current(kin))
    tgt = data.draw(hostile_target(cur))
    check_invariants(kin, make_filter(kin).filter(tgt, cur), cur)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize("kin_name", list(KINS))
def test_property_single_tick_from_any_state_never_worse(kin_name, data):
    kin = KINS[kin_name]
    cur = data.draw(any_current())
    tgt = data.draw(hostile_target(cur))
    check_invariants(kin, make_filter(kin).filter(tgt, cur), cur)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.large_base_example])
@given(data=st.data())
@pytest.mark.parametrize("kin_name", list(KINS))
def test_property_bursts_keep_the_arm_safe_and_estop_always_holds(kin_name, data):
    kin = KINS[kin_name]
    f = make_filter(kin)
    cur = data.draw(safe_current(kin))
    ticks = data.draw(st.integers(1, 60))
    latch_at = data.draw(st.integers(0, 60))
    for tick in range(ticks):
        if tick == latch_at:
            f.estop.latch("burst test")
        tgt = data.draw(hostile_target(cur))
        cmd = f.filter(tgt, cur)
        check_invariants(kin, cmd, cur, estop_latched=f.estop.latched)
        cur = cmd.positions  # perfect tracking: the next tick starts where we commanded
        assert not violations(kin, cur).any()
