"""The safety layer: every joint command passes through here before it reaches a servo or the twin.

Why it is shaped this way: the rules are pure functions of (target, current, arm description), so
they can be property-tested with hostile inputs, and they are applied by `SafetyFilter` inside the
lowest layer that talks to the arm (``SerialArm.send_joint_targets``, the MuJoCo twin), so no
caller - policy, teleop, ROS node - can bypass them. numpy only, plus the `Kinematics` object
passed in (duck-typed: ``fk(q) -> (3,)`` and ``link_points(q) -> (k, 3)``).

Decisions (documented here because callers rely on them):

* Targets are clipped into the soft position limits (ros2_control limits shrunk by
  ``soft_margin_rad``). If the *current* position is already outside (after a manual move or a
  calibration shift) a joint may move back towards the limits but not further out: its interval
  is widened to include the current position.
* Per tick, no joint target moves more than ``max_joint_step_rad`` from the current position and,
  when the driver passes the last commanded ``goal``, from that goal too (`cap_joint_step_between`):
  consecutive goals never jump more than the cap and no goal lands further than the cap from a
  reading of the same tick. A goal that lags the reading by more than twice the cap (a blocked
  joint) steps towards the reading.
* The gripper site may move at most ``max_ee_step_m`` per tick (Cartesian, by FK), must stay in the
  workspace box, and every link point must stay ``floor_clearance_m`` above ``floor_z``. A command
  that breaks one of these is *projected*, not dropped: we bisect along the joint-space segment
  from the current configuration to the candidate and keep the largest verified fraction. The
  fraction 0 (the current configuration) always passes, so the answer is never worse than holding;
  if nothing better is found the command is held. If the reference configuration itself is outside
  the workspace or under the floor, a move passes if it makes no violation worse (each box face,
  each link point under the floor) or if it reduces the total violation without deepening the
  worst one: homing must always be able to climb out of a bad pose, even when one link dips a
  little while the pose as a whole recovers.
* Malformed targets (wrong length, non-numeric dtype, NaN/inf) are never sent: the command is
  held, counted and reported in ``reasons``. A latched `EStop` holds every command (the e-stop,
  the faults and the watchdog live in `se_robot.estop`).
* A malformed *current* state cannot be held (we would send garbage), so the filter latches its
  e-stop and raises `SafetyFault(FaultKind.BAD_STATE)`; the driver must stop.
* "Hold" means: keep the reference configuration as the target (``positions`` equals ``goal``
  when one is given, else ``current``). Position servos hold the goal against gravity; re-sending
  the measured position instead would let the arm sag a little further every tick. Only a joint
  that lags its goal by more than the step cap (blocked, or slower than its goals) has its held
  goal drawn to within the cap of the reading, as a moving command would.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from se_robot.arm import ArmDescription
from se_robot.estop import EStop, FaultKind, SafetyFault

__all__ = [
    "SafeCommand", "SafetyFilter", "KinematicsLike",
    "soft_limits", "clip_to_limits", "cap_joint_step", "cap_joint_step_between", "workspace_violations",
    "gripper_effort_limit_nm", "effort_limit_fraction", "validate_target", "REASONS",
]

# Every reason a command may be changed; stats count each under "reason/<name>".
REASONS = ("bad_shape", "bad_dtype", "non_finite", "estop", "joint_limit", "joint_step", "ee_step",
           "workspace", "floor", "current_unsafe", "watchdog", "bad_state")

_TOL = 1e-9  # numerical slack when comparing a violation with the current one (m)


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    """``np.array_equal`` of two arrays of one shape (NaN unequal), without its wrapper's cost."""
    return not np.count_nonzero(a != b)


# ``x.any()`` and ``x.all()`` of boolean arrays by counting: the methods go through numpy's
# reduction wrappers, which cost three times the count on arrays this small (every command).
def _any(x: np.ndarray) -> bool:
    return np.count_nonzero(x) != 0


def _all(x: np.ndarray) -> bool:
    return np.count_nonzero(x) == x.size


class KinematicsLike(Protocol):
    def fk(self, q: np.ndarray) -> np.ndarray: ...

    def link_points(self, q: np.ndarray) -> np.ndarray: ...


# --------------------------------------------------------------------------------------------
# Pure limit functions
# --------------------------------------------------------------------------------------------

def soft_limits(arm: ArmDescription) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) targets may reach: position limits shrunk by soft_margin_rad (+-inf if none)."""
    margin = arm.safety.soft_margin_rad
    lower, upper = np.full(arm.n_joints, -np.inf), np.full(arm.n_joints, np.inf)
    for i, name in enumerate(arm.joint_names):
        lim = arm.joint_limits[name]
        if lim.has_position_limits:
            lo, hi = lim.min_position + margin, lim.max_position - margin
            if lo > hi:  # margin wider than the range: pin to the middle
                lo = hi = 0.5 * (lim.min_position + lim.max_position)
            lower[i], upper[i] = lo, hi
    return lower, upper


def clip_to_limits(target: np.ndarray, current: np.ndarray, lower: np.ndarray,
                   upper: np.ndarray) -> np.ndarray:
    """Clip into [lower, upper], widened per joint to include ``current`` (never make it worse)."""
    return np.minimum(np.maximum(target, np.minimum(lower, current)), np.maximum(upper, current))


def cap_joint_step(target: np.ndarray, current: np.ndarray, max_step_rad: float | np.ndarray) -> np.ndarray:
    """Move each joint at most ``max_step_rad`` from ``current`` towards ``target``."""
    # np.clip's own value, without its wrapper's cost (this runs on every command)
    return current + np.minimum(np.maximum(target - current, -max_step_rad), max_step_rad)


def cap_joint_step_between(target: np.ndarray, goal: np.ndarray, reading: np.ndarray,
                           max_step_rad: float | np.ndarray) -> np.ndarray:
    """Move each joint towards ``target`` staying within ``max_step_rad`` of both the last
    commanded ``goal`` and the same-tick ``reading``. Where the two windows do not overlap (the
    joint lags its goal by more than twice the cap), step the goal towards the reading instead:
    that relieves a blocked joint and is still a bounded jump from the last goal."""
    lo = np.maximum(goal, reading) - max_step_rad
    hi = np.minimum(goal, reading) + max_step_rad
    overlap = lo <= hi
    inside = np.minimum(np.maximum(target, np.where(overlap, lo, -np.inf)), np.where(overlap, hi, np.inf))
    return np.where(overlap, inside, cap_joint_step(reading, goal, max_step_rad))


def workspace_violations(ee_pos_m: np.ndarray, link_points_m: np.ndarray, box_min_m: np.ndarray,
                         box_max_m: np.ndarray, floor_min_z_m: float) -> np.ndarray:
    """Non-negative distances outside each box face (6) and below the floor for each link point.

    All zeros means safe. Keeping one entry per face/point lets "don't make it worse" be checked
    entry by entry when the current configuration is already outside.
    """
    below = np.maximum(box_min_m - ee_pos_m, 0.0)
    above = np.maximum(ee_pos_m - box_max_m, 0.0)
    under = np.maximum(floor_min_z_m - np.asarray(link_points_m)[:, 2], 0.0)
    return np.concatenate((below, above, under))


def gripper_effort_limit_nm(arm: ArmDescription) -> float:
    """The torque (N*m) the gripper servo may press with: gripper.max_effort, also capped by the
    gripper joint's ros2_control effort limit when that is enabled. The driver writes it to the
    servo's torque/current-limit register (see `effort_limit_fraction`)."""
    if arm.gripper is None:
        raise ValueError(f"arm {arm.name!r} has no gripper section")
    cap = arm.gripper.max_effort
    lim = arm.joint_limits[arm.gripper.joint]
    if lim.has_effort_limits:
        cap = min(cap, lim.max_effort)
    return float(cap)


def effort_limit_fraction(effort_nm: float, rated_effort_nm: float) -> float:
    """``effort_nm`` as a fraction of the servo's rated (stall) torque, in [0, 1]: the unit of
    torque-limit registers (Feetech 0..1000, Dynamixel current limit)."""
    if not rated_effort_nm > 0:
        raise ValueError(f"rated_effort_nm must be > 0, got {rated_effort_nm}")
    if not np.isfinite(effort_nm):
        raise ValueError(f"effort_nm must be finite, got {effort_nm}")
    return float(min(max(effort_nm / rated_effort_nm, 0.0), 1.0))


def validate_target(target: Any, n_joints: int) -> tuple[np.ndarray | None, str | None]:
    """(float64 vector, None) for a usable command, else (None, reason) with reason one of
    bad_shape / bad_dtype / non_finite."""
    try:
        arr = np.asarray(target)
    except (ValueError, TypeError):  # ragged nesting, unconvertible objects
        return None, "bad_shape"
    if arr.dtype.kind not in "fiu":  # bool, complex, object, strings, datetimes are not commands
        return None, "bad_dtype"
    if arr.shape != (n_joints,):
        return None, "bad_shape"
    arr = arr.astype(np.float64)  # also copies, so callers can't mutate what we checked
    if not _all(np.isfinite(arr)):
        return None, "non_finite"
    return arr, None


# --------------------------------------------------------------------------------------------
# The filter applied at every control tick
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SafeCommand:
    positions: np.ndarray          # joint targets actually to send (rad, joint order)
    clipped: bool                  # changed by a limit, but still moving
    held: bool                     # positions == current: nothing moves
    reasons: tuple[str, ...] = ()  # which rules acted (see REASONS)


class _Baseline:
    """The current configuration's FK and violations, its floor check computed only if needed."""

    __slots__ = ("q", "ee", "box", "box_tol", "_floor")

    def __init__(self, q: np.ndarray, ee: np.ndarray, box: np.ndarray):
        self.q, self.ee, self.box = q, ee, box
        self.box_tol = box + _TOL  # a candidate's face violation beyond this is worse
        self._floor: np.ndarray | None = None

    def floor(self, f: "SafetyFilter") -> np.ndarray:
        if self._floor is None:
            self._floor = f._floor_violation(self.q)
        return self._floor

    @property
    def unsafe(self) -> bool:
        """Known to be outside (the floor part counts only once it was computed)."""
        return _any(self.box) or (self._floor is not None and _any(self._floor))


class SafetyFilter:
    """Applies every rule above to one command per tick; see the module docstring for the policy.

    ``current`` is the configuration the caps are measured from (the measured state on hardware).
    Cost: fk of the current configuration, fk + link_points of the candidate when the command is
    fine (link_points of the current one only when the candidate has a link under the floor);
    when it has to be projected, one fk per bisection step plus link_points only for steps that
    fk alone does not reject (link_points is by far the expensive call). ``current_unsafe`` is
    reported when the current configuration is seen to be outside, i.e. whenever it matters.
    One thread at a time may filter (as its kinematics allows); ``stats`` may be read from any.
    """

    def __init__(self, arm: ArmDescription, kinematics: KinematicsLike, estop: EStop | None = None, *,
                 bisect_iters: int = 8, state_excursion_rad: float = 0.5):
        s = arm.safety
        self.arm = arm
        self.kinematics = kinematics
        self.estop = estop if estop is not None else EStop()
        self.n = arm.n_joints
        self.lower, self.upper = soft_limits(arm)
        self.max_joint_step_rad = s.max_joint_step_rad
        self.max_ee_step_m = s.max_ee_step_m
        self.box_min = np.asarray(s.workspace_min, dtype=np.float64)
        self.box_max = np.asarray(s.workspace_max, dtype=np.float64)
        self.floor_min_z = s.floor_z + s.floor_clearance_m
        self._box_work = np.zeros(6)  # [box_min - ee | ee - box_max] before the floor at 0
        self.bisect_iters = int(bisect_iters)
        # A measured position further than this outside the hard limits means a broken reading.
        self._state_lo = arm.lower - state_excursion_rad
        self._state_hi = arm.upper + state_excursion_rad
        arm_mask = np.zeros(self.n, dtype=bool)
        arm_mask[arm.arm_indices] = True
        self._arm_mask = arm_mask
        self._lock = threading.Lock()
        self._stats: Counter[str] = Counter()

    # -- bookkeeping ---------------------------------------------------------------------------
    @property
    def stats(self) -> dict[str, int]:
        """commands, clipped, held, non_finite and reason/<name> counts since construction."""
        with self._lock:
            out = {"commands": 0, "clipped": 0, "held": 0, "non_finite": 0}
            out.update(self._stats)
            return out

    def _record(self, cmd: SafeCommand) -> SafeCommand:
        with self._lock:
            st = self._stats
            st["commands"] += 1
            st["clipped"] += cmd.clipped
            st["held"] += cmd.held
            st["non_finite"] += "non_finite" in cmd.reasons
            for r in cmd.reasons:
                st["reason/" + r] += 1
        return cmd

    def hold(self, current: np.ndarray, reason: str) -> SafeCommand:
        """A counted hold for reasons decided outside the filter (e.g. the watchdog)."""
        cur = self._check_current(current)
        return self._record(SafeCommand(cur.copy(), False, True, (reason,)))

    def _check_current(self, current: Any) -> np.ndarray:
        cur, why = validate_target(current, self.n)
        if cur is None or not (_all(cur >= self._state_lo) and _all(cur <= self._state_hi)):
            why = why or "outside the hard limits by more than the allowed excursion"
            with self._lock:
                self._stats["reason/bad_state"] += 1
            fault = SafetyFault(FaultKind.BAD_STATE, f"current joint state unusable ({why}): {current!r}")
            self.estop.latch(fault)
            raise fault
        return cur

    # -- workspace -------------------------------------------------------------------------------
    def _box_violation(self, ee: np.ndarray) -> np.ndarray:
        out = self._box_work
        np.subtract(self.box_min, ee, out=out[:3])
        np.subtract(ee, self.box_max, out=out[3:])
        return np.maximum(out, 0.0)

    def _floor_violation(self, q: np.ndarray) -> np.ndarray:
        return np.maximum(self.floor_min_z - np.asarray(self.kinematics.link_points(q))[:, 2], 0.0)

    def _acceptable(self, q: np.ndarray, base: _Baseline, lazy: bool = True) -> tuple[bool, bool, bool, bool]:
        """(ok, ee_step_ok, box_ok, floor_ok) of q against the reference configuration ``base``.

        link_points costs far more than fk, so with ``lazy`` it is skipped once fk alone rejects q
        (floor_ok is then reported True, unknown). The reference's own floor check is needed only
        when q has a link under the floor or leaves the box (a zero violation is never worse).
        """
        ee = np.asarray(self.kinematics.fk(q), dtype=np.float64)
        d = ee - base.ee
        ee_ok = float(d @ d) <= self.max_ee_step_m ** 2 * (1 + 1e-9)
        box = self._box_violation(ee)
        box_ok = not _any(box > base.box_tol)
        if lazy and not ee_ok:
            return False, ee_ok, box_ok, True
        if lazy and not box_ok and not _any(base.box) and not _any(base.floor(self)):
            return False, ee_ok, box_ok, True  # a safe reference: nothing to recover from
        under = self._floor_violation(q)
        floor_ok = not _any(under) or not _any(under > base.floor(self) + _TOL)
        if not (box_ok and floor_ok) and self._recovers(box, under, base):
            box_ok = floor_ok = True
        return ee_ok and box_ok and floor_ok, ee_ok, box_ok, floor_ok

    def _recovers(self, box: np.ndarray, under: np.ndarray, base: _Baseline) -> bool:
        """True when the reference is outside and q reduces the total violation (m, box faces plus
        link points under the floor) without deepening the worst single one."""
        base_box, base_floor = base.box, base.floor(self)
        total0 = float(base_box.sum() + base_floor.sum())
        if total0 <= _TOL:
            return False
        worst0 = max(float(base_box.max()), float(base_floor.max(initial=0.0)))
        worst = max(float(box.max()), float(under.max(initial=0.0)))
        return float(box.sum() + under.sum()) < total0 - _TOL and worst <= worst0 + _TOL

    # -- the filter ----------------------------------------------------------------------------
    def filter(self, target: Any, current: Any, goal: Any = None) -> SafeCommand:
        """The command to send this tick for ``target``, given the arm at ``current`` (a reading
        of this tick) and the last commanded ``goal`` (None: the reading is the reference).

        Steps, the Cartesian step and the "no worse" workspace rules are measured from the
        reference (the goal when given), and steps also from the reading; a held command keeps
        the reference.
        """
        cur = self._check_current(current)
        ref = cur if goal is None else self._check_current(goal)
        tgt, bad = validate_target(target, self.n)
        if self.estop.latched:
            why = ("estop",) if bad is None else ("estop", bad)
            return self._record(SafeCommand(ref.copy(), False, True, why))
        hold_at = ref if goal is None else cap_joint_step_between(ref, ref, cur, self.max_joint_step_rad)
        if bad is not None:
            return self._record(SafeCommand(hold_at, False, True, (bad,)))

        reasons: list[str] = []
        if goal is None:  # the reference is the reading
            lo, hi = np.minimum(self.lower, cur), np.maximum(self.upper, cur)
        else:
            lo = np.minimum(self.lower, np.minimum(cur, ref))
            hi = np.maximum(self.upper, np.maximum(cur, ref))
        q = np.minimum(np.maximum(tgt, lo), hi)
        if not _equal(q, tgt):
            reasons.append("joint_limit")
        if goal is None:
            capped = cap_joint_step(q, cur, self.max_joint_step_rad)
        else:
            capped = cap_joint_step_between(q, ref, cur, self.max_joint_step_rad)
        if not _equal(capped, q):
            reasons.append("joint_step")
        q = capped

        ee0 = np.asarray(self.kinematics.fk(ref), dtype=np.float64)
        base = _Baseline(ref, ee0, self._box_violation(ee0))
        ok, ee_ok, box_ok, floor_ok = self._acceptable(q, base, lazy=False)
        if not ok:
            if not ee_ok:
                reasons.append("ee_step")
            if not box_ok:
                reasons.append("workspace")
            if not floor_ok:
                reasons.append("floor")
            q = self._project(ref, q, base, box_ok and floor_ok, lo, hi)
        if base.unsafe:
            reasons.append("current_unsafe")
        changed = len(reasons) > reasons.count("current_unsafe")
        if changed and _equal(q, ref):
            return self._record(SafeCommand(hold_at, False, True, tuple(reasons)))
        return self._record(SafeCommand(q, changed, False, tuple(reasons)))

    def _project(self, cur: np.ndarray, cand: np.ndarray, base: _Baseline, only_arm: bool,
                 lo_lim: np.ndarray, hi_lim: np.ndarray) -> np.ndarray:
        """Largest verified fraction of the step cur -> cand (bisection; fraction 0 always passes).

        When only the Cartesian step is too long, only the arm joints are scaled (the jaw keeps its
        step); when the workspace or floor is at stake every joint is scaled.
        """
        step = cand - cur
        start = np.where(self._arm_mask, cur, cand) if only_arm else cur
        if only_arm:
            step = np.where(self._arm_mask, step, 0.0)

        def at(frac: float) -> np.ndarray:
            return np.minimum(np.maximum(start + frac * step, lo_lim), hi_lim)

        good, bad = 0.0, 1.0
        if only_arm:
            # A first guess from the Cartesian overshoot usually lands within a few percent of the
            # largest step, saving the bisection.
            ee1 = np.asarray(self.kinematics.fk(cand), dtype=np.float64)
            d = ee1 - base.ee
            dist = math.sqrt(d.dot(d))  # np.linalg.norm's value (it computes this), without its wrapper
            guess = 0.98 * self.max_ee_step_m / dist if dist > 0 else 0.0
            if 0.0 < guess < 1.0:
                if self._acceptable(at(guess), base)[0]:
                    return at(guess)
                bad = guess
        for _ in range(self.bisect_iters):
            mid = 0.5 * (good + bad)
            if self._acceptable(at(mid), base)[0]:
                good = mid
            else:
                bad = mid
        if good > 0.0:
            return at(good)
        # Fraction 0: with only_arm the jaw still moves, which must be verified on its own.
        if only_arm and self._acceptable(at(0.0), base)[0]:
            return at(0.0)
        return cur.copy()
