"""Homing: how any backend that homes by sending targets (the twin, the serial arm) drives its
arm to ``arm.home`` through the safety filter, from any pose, also from outside the envelope.

Kept apart from :mod:`se_robot.robot` (the interface every backend implements) because it is one
algorithm that backends call, :func:`drive_home`, with its planner :class:`HomingPlan`.
"""

from __future__ import annotations

import numpy as np

from se_robot.arm import ArmDescription
from se_robot.robot import ControlClock, HomingError, Robot
from se_robot.safety import (KinematicsLike, SafeCommand, SafetyFilter, cap_joint_step, soft_limits,
                             workspace_violations)


class _PoseMemo:
    """The kinematics' fk and link points of the poses one homing tick looks at, each computed once.

    A tick ranks about 20 moves, probes the violation's gradient and runs the filter's rules on the
    best few, and those ask for the same poses again (the measured pose a dozen times). Values are
    the kinematics' own, looked up by the bytes of the pose, so every decision is the one the
    kinematics would give. Duck-types ``KinematicsLike`` so that the plan's private filter reads
    from it too. The arrays it hands out are shared, so they are read-only.
    """

    def __init__(self, kinematics: KinematicsLike, limit: int = 1024):
        self.kinematics = kinematics
        self.limit = limit  # poses kept; a plan clears it every tick, this bounds other callers
        self._ee: dict[bytes, np.ndarray] = {}
        self._points: dict[bytes, np.ndarray] = {}

    def clear(self) -> None:
        self._ee.clear()
        self._points.clear()

    def _kept(self, table: dict[bytes, np.ndarray], key: bytes, value: np.ndarray) -> np.ndarray:
        if len(table) >= self.limit:
            table.clear()
        value.flags.writeable = False
        table[key] = value
        return value

    def prefetch(self, qs: np.ndarray) -> tuple[list[bytes], np.ndarray, np.ndarray] | None:
        """Compute the poses ``qs`` (m, n) at once where the kinematics can (``Kinematics.poses``:
        the same values, one set of array operations for all) and return their keys, fk (m, 3)
        and link points (m, k, 3); None where it cannot (each pose is then computed when asked for)."""
        many = getattr(self.kinematics, "poses", None)
        if many is None:
            return None
        qs = np.asarray(qs, dtype=np.float64)
        if len(self._ee) + len(qs) > self.limit or len(self._points) + len(qs) > self.limit:
            self.clear()
        ee, points = many(qs)
        ee.flags.writeable = points.flags.writeable = False
        keys = [q.tobytes() for q in qs]
        self._ee.update(zip(keys, ee))
        self._points.update(zip(keys, points))
        return keys, ee, points

    def fk(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, dtype=np.float64)
        key = q.tobytes()
        ee = self._ee.get(key)
        if ee is None:
            ee = self._kept(self._ee, key, np.array(self.kinematics.fk(q), dtype=np.float64))
        return ee

    def link_points(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, dtype=np.float64)
        key = q.tobytes()
        points = self._points.get(key)
        if points is None:
            points = self._kept(self._points, key, np.array(self.kinematics.link_points(q)))
        return points


class HomingPlan:
    """Where each homing tick aims, from the measured pose alone (so a held arm never ratchets
    down, and one plan drives the twin and the serial arm through ``Robot``).

    Every tick it ranks a few moves of at most one step cap from the *measured* pose: straight
    home, each joint alone towards home (wrist and elbow first on ties, so the arm folds up off
    the table), each joint alone by plus or minus the cap, and the descent of the violation
    (numerical gradient over the joints via kinematics). The rank is a potential: metres outside
    the envelope (the safety filter's measure: under the floor clearance per link point plus
    outside each workspace face) weighted ``violation_weight`` rad each, plus the L1 distance
    to home. The best-ranked move that a private copy of the filter's rules lets through is aimed
    at, but only if it keeps the lowest link where it is or higher (below the floor clearance)
    or at least ``margin_m`` clear (above it), and reduces the violation or, without raising it,
    gets closer to home. Aiming a full step ahead of where the arm *is* overcomes the sag of an
    arm pressed on the table (gravity, servo compliance); the robot's own filter still checks
    every command.

    A move the arm does not follow (the potential measured at the arm does not fall for
    ``stall_s``: pressed into the table, or a joint at its stop) is set aside for ``retry_s`` and
    the next-ranked one is tried. When no move is safe ``target`` returns None and the caller
    holds the last goal. ``record`` raises :class:`HomingError` when for ``held_s`` nothing moved
    (naming the filter's rules when it held the commands); ``blocked`` says what kept the arm from
    home (the lowest link's depth, the gripper's distance outside the workspace), for the errors.

    Cost (the plan runs every homing tick): each pose's fk, link points and violations are
    computed once a tick (:class:`_PoseMemo`, which the private filter reads too), the moves and
    the gradient's probes in one batch (``Kinematics.poses``), and a goal is put to the private
    filter only where the memo's values do not already decide what the filter sends
    (``_foresee``). The goals are those of the plan that computed everything afresh and ran the
    filter on every goal tried, bit for bit: ``tests/test_homing_same_goals.py`` keeps that plan
    as its oracle and checks ``_foresee`` against the filter.
    """

    #: joints preferred, on ties, when moving one joint towards home: the arm folds up first
    FOLD_FIRST = ("wrist_flex", "elbow_flex", "shoulder_lift", "shoulder_pan", "wrist_roll")

    def __init__(self, arm: ArmDescription, kinematics: KinematicsLike, tolerance_rad: float, where: str = "", *,
                 period_s: float = 0.1, margin_m: float = 0.01, violation_weight: float = 10.0,
                 stall_s: float = 0.5, retry_s: float = 3.0, held_s: float = 2.0):
        s = arm.safety
        self.arm = arm
        self.kinematics = kinematics
        self.poses = _PoseMemo(kinematics)
        self._violations: dict[bytes, np.ndarray] = {}
        self.tolerance_rad = tolerance_rad
        self.where = where
        self.margin_m = margin_m
        self.weight = violation_weight
        self.stall_ticks = max(3, int(np.ceil(stall_s / period_s)))
        self.retry_ticks = max(1, int(np.ceil(retry_s / period_s)))
        self.held_limit = max(arm.n_joints + 2, int(np.ceil(held_s / period_s)))
        self.rules = SafetyFilter(arm, self.poses)  # predicts what the robot's filter lets through
        self.cap = s.max_joint_step_rad
        self.lower, self.upper = soft_limits(arm)
        self.floor_min_z = s.floor_z + s.floor_clearance_m
        self.box_min = np.asarray(s.workspace_min, dtype=np.float64)
        self.box_max = np.asarray(s.workspace_max, dtype=np.float64)
        self.arm_mask = np.zeros(arm.n_joints, dtype=bool)  # the joints the filter scales for the Cartesian step
        self.arm_mask[arm.arm_indices] = True
        rank = {name: i for i, name in enumerate(self.FOLD_FIRST)}
        self.fold_order = sorted(range(arm.n_joints), key=lambda j: rank.get(arm.joint_names[j], len(rank)))
        self.tick = 0
        self.best = np.inf          # lowest potential measured since the last move was set aside
        self.since_best = 0
        self.move: tuple = ()       # the move aimed at last tick
        self.set_aside: dict[tuple, int] = {}  # move -> tick until which it is not tried
        self.held_in_row = 0
        self.last_reasons: tuple[str, ...] = ()

    # -- what the filter measures ------------------------------------------------------------
    def violations(self, q: np.ndarray) -> np.ndarray:
        """Metres outside each workspace face and under the floor clearance per link point, as
        the filter measures them (all zero when clear; read-only, computed once per pose and tick)."""
        q = np.asarray(q, dtype=np.float64)
        key = q.tobytes()
        w = self._violations.get(key)
        if w is None:
            p = self.poses
            w = workspace_violations(p.fk(q), p.link_points(q), self.box_min, self.box_max, self.floor_min_z)
            if len(self._violations) >= p.limit:
                self._violations.clear()
            w.flags.writeable = False
            self._violations[key] = w
        return w

    def _measure(self, qs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """fk (m, 3), ``violations`` (m, 6 + k) and ``clearance`` (m,) of the poses ``qs`` (m, n),
        all at once where the kinematics computes poses in a batch (``_PoseMemo.prefetch``; the
        operations of ``workspace_violations`` and ``clearance`` row by row, so the same values),
        and kept for ``violations`` to look up."""
        got = self.poses.prefetch(qs)
        if got is None:
            return (np.stack([self.poses.fk(q) for q in qs]), np.stack([self.violations(q) for q in qs]),
                    np.array([self.clearance(q) for q in qs]))
        keys, ee, points = got
        w = np.concatenate((np.maximum(self.box_min - ee, 0.0), np.maximum(ee - self.box_max, 0.0),
                            np.maximum(self.floor_min_z - points[:, :, 2], 0.0)), axis=1)
        w.flags.writeable = False
        if len(self._violations) + len(qs) > self.poses.limit:
            self._violations.clear()
        self._violations.update(zip(keys, w))
        return ee, w, points[:, :, 2].min(axis=1) - self.floor_min_z

    def violation(self, q: np.ndarray) -> float:
        """The total of ``violations`` (m)."""
        return float(self.violations(q).sum())

    def clearance(self, q: np.ndarray) -> float:
        """Height of the lowest link point above ``floor_z + floor_clearance_m`` (m, negative under)."""
        return float(self.poses.link_points(q)[:, 2].min() - self.floor_min_z)

    def potential(self, q: np.ndarray) -> float:
        """What homing descends (rad): the violation weighted, plus the L1 distance to home."""
        return self.weight * self.violation(q) + float(np.abs(q - self.arm.home).sum())

    # -- the moves ---------------------------------------------------------------------------
    def _step(self, q: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """``q`` plus ``direction`` scaled so its largest joint moves one cap, kept in the soft
        limits (widened to include ``q``, as the filter's joint rule is)."""
        d = direction * (self.cap / max(float(np.abs(direction).max()), 1e-12))
        return np.minimum(np.maximum(q + d, np.minimum(self.lower, q)), np.maximum(self.upper, q))

    def _home_move(self, q: np.ndarray) -> np.ndarray:
        """Every joint one cap (or the rest of its way) towards home."""
        return np.clip(self.arm.home, q - self.cap, q + self.cap)

    def _moves(self, q: np.ndarray, v0: float) -> tuple[list[tuple], np.ndarray, np.ndarray]:
        """Every move considered from ``q``: labels, goals (m, n) and potentials (m,), in the order
        the ranking keeps on ties: straight home, each joint towards home in the fold order, the
        descent, each joint by plus then minus the cap. The goals and the gradient's probes are
        measured in one batch; each is computed with the operations ``_step``, ``_home_move`` and
        ``potential`` do for one pose, so the values are theirs."""
        home, n = self.arm.home, len(q)
        straight = self._home_move(q)
        far = [j for j in self.fold_order if abs(q[j] - home[j]) > self.tolerance_rad / 2]
        towards = np.repeat(q[None], len(far), axis=0)
        towards[np.arange(len(far)), far] = straight[far]
        signs = np.zeros((2 * n, n))
        signs[np.arange(2 * n), np.repeat(np.arange(n), 2)] = np.tile([1.0, -1.0], n)
        joints = np.minimum(np.maximum(q + signs * self.cap, np.minimum(self.lower, q)), np.maximum(self.upper, q))
        probe = np.eye(n) * 1e-3
        _, w, clearance = self._measure(np.concatenate((straight[None], towards, joints, q + probe, q - probe)))
        f = w[-2 * n:].sum(axis=1) if v0 > 0.0 else -clearance[-2 * n:]
        grad = (f[:n] - f[n:]) / 2e-3  # central differences of the violation (or of the depth, once clear)
        split = 1 + len(far)
        labels = [("home",)] + [("towards", j) for j in far]
        goals, violations = [straight[None], towards], [w[:split]]
        if np.abs(grad).max() > 1e-9:
            descent = self._step(q, -grad)[None]
            labels.append(("descent",))
            goals.append(descent)
            violations.append(self._measure(descent)[1])
        labels += [("joint", j, sign) for j in range(n) for sign in (1, -1)]
        goals.append(joints)
        violations.append(w[split:split + 2 * n])
        goals_m, w_m = np.concatenate(goals), np.concatenate(violations)
        return labels, goals_m, self.weight * w_m.sum(axis=1) + np.abs(goals_m - home).sum(axis=1)

    def _safe(self, p: np.ndarray, w0: np.ndarray, c0: float) -> bool:
        """Whether a move from a pose with violations ``w0`` and clearance ``c0`` to ``p`` passes
        the filter's envelope rule (no violation worse, or less in all without the worst one
        deeper) and never lowers the lowest link below the floor clearance (nor, once clear, to
        within ``margin_m`` of it)."""
        w, c = self.violations(p), self.clearance(p)
        if not w0.any():
            return not w.any() and c >= min(c0, self.margin_m) - 1e-6
        if c < min(c0, 0.0) - 1e-6:
            return False
        return self._no_worse(w, w0)

    @staticmethod
    def _no_worse(w: np.ndarray, w0: np.ndarray) -> bool:
        """The filter's envelope rule for a reference outside: no violation worse, or less in all
        without the worst one deeper."""
        return bool((w <= w0 + 1e-9).all() or (w.sum() < w0.sum() - 1e-9 and w.max() <= w0.max() + 1e-9))

    def _envelope(self, ee: np.ndarray, w: np.ndarray, q: np.ndarray, w0: np.ndarray) -> tuple[np.ndarray, ...]:
        """For poses with fk ``ee`` (m, 3) and violations ``w`` (m, 6 + k), where the filter's rules
        for a move from ``q`` (violations ``w0``) certainly decide them: (step short, step too long,
        envelope kept, envelope broken). Each entry of the violations is the filter's own value, so
        "worse" is its verdict; the sums (the total violation, the squared Cartesian step) are
        summed in another order than the filter's, so a verdict on them counts only ``margin``
        beyond the filter's tolerance; a pose within it is neither."""
        tol, margin = 1e-9, 1e-7  # the filter's _TOL; far above any rounding of sums of metres
        step = ee - self.poses.fk(q)
        step2, limit2 = (step * step).sum(axis=1), self.rules.max_ee_step_m ** 2 * (1 + 1e-9)
        worse = (w > w0 + tol).any(axis=1)
        total, total0, deepest = w.sum(axis=1), float(w0.sum()), w.max(axis=1) <= w0.max() + tol
        recovers = (total0 > tol + margin) & (total < total0 - tol - margin) & deepest
        may_recover = w0.any() & (total0 > tol - margin) & (total < total0 - tol + margin) & deepest
        return step2 <= limit2 - margin ** 2, step2 > limit2 + margin ** 2, ~worse | recovers, worse & ~may_recover

    def _foresee(self, goal: np.ndarray, q: np.ndarray, w0: np.ndarray) -> tuple[bool, np.ndarray | None]:
        """What the private filter sends for ``goal`` from ``q`` where ``_envelope`` decides it
        without running the filter, following ``SafetyFilter.filter`` and ``_project``: (True, the
        capped goal) when the whole step passes; (True, the filter's first guess) when only the
        Cartesian step is too long and the guess (the arm joints scaled to 0.98 of the allowed
        step) passes; (True, None) when it holds: the whole step breaks the envelope rule, and so
        does, or is too long, every pose its bisection looks at while each fails (1/2, 1/4, ... of
        the step). Else (False, None): the filter decides, reading the poses measured here from
        the memo. It mirrors the filter's steps, so a change there must be made here too;
        ``tests/test_homing_same_goals.py`` compares the two on every move from 80 poses."""
        lo, hi = np.minimum(self.lower, q), np.maximum(self.upper, q)
        cand = cap_joint_step(np.minimum(np.maximum(goal, lo), hi), q, self.cap)  # as the filter caps
        ee_cand = self.poses.fk(cand)
        short, too_long, kept, broken = self._envelope(ee_cand[None], self.violations(cand)[None], q, w0)
        if kept[0] and short[0]:
            return True, cand
        if kept[0] and too_long[0]:
            dist = float(np.linalg.norm(ee_cand - self.poses.fk(q)))
            guess = 0.98 * self.rules.max_ee_step_m / dist
            if guess < 1.0:
                start, step = np.where(self.arm_mask, q, cand), np.where(self.arm_mask, cand - q, 0.0)
                scaled = np.minimum(np.maximum(start + guess * step, lo), hi)[None]
                ee, w, _ = self._measure(scaled)
                short, _, kept, _ = self._envelope(ee, w, q, w0)
                if kept[0] and short[0]:
                    return True, scaled[0]
            return False, None
        if not broken[0]:
            return False, None
        fractions = 0.5 ** np.arange(1, self.rules.bisect_iters + 1)
        bisected = np.minimum(np.maximum(q + fractions[:, None] * (cand - q), lo), hi)
        ee, w, _ = self._measure(bisected)
        _, too_long, _, broken = self._envelope(ee, w, q, w0)
        return bool((too_long | broken).all()), None

    def _admissible(self, p: np.ndarray, q: np.ndarray, v0: float, c0: float) -> bool:
        """A safe move from ``q`` to ``p`` that reduces the violation or, without raising it,
        gets closer to home (or, once clear, higher)."""
        if not self._safe(p, self.violations(q), c0):
            return False
        closer = np.abs(p - self.arm.home).sum() < np.abs(q - self.arm.home).sum() - 1e-3
        if v0 > 0.0:
            return closer or self.violation(p) < v0 - 1e-6
        return closer or self.clearance(p) > c0 + 1e-4

    def _passes(self, goal: np.ndarray, q: np.ndarray, v0: float, c0: float, seen: dict[bytes, bool]) -> bool:
        """Whether the private filter lets ``goal`` through from ``q`` and what it lets through is
        admissible; ``seen`` keeps the answer per goal, as two moves may aim at the same pose."""
        key = goal.tobytes()
        ok = seen.get(key)
        if ok is None:
            known, sent = self._foresee(goal, q, self.violations(q))
            if not known:
                cmd = self.rules.filter(goal, q)
                sent = None if cmd.held else cmd.positions
            ok = seen[key] = sent is not None and self._admissible(sent, q, v0, c0)
        return ok

    # -- the plan ----------------------------------------------------------------------------
    def target(self, q: np.ndarray) -> np.ndarray | None:
        """The goal for this tick, from the measured pose ``q``; None when no move is safe (the
        caller holds the last goal: re-sending the measured pose would let the arm sag)."""
        q = np.asarray(q, dtype=np.float64)
        self.tick += 1
        self.poses.clear()
        self._violations.clear()
        home = self._home_move(q)
        self._measure(np.stack((q, home)))
        phi = self.potential(q)
        if phi < self.best - 1e-3:
            self.best, self.since_best = phi, 0
        else:
            self.since_best += 1
            if self.since_best >= self.stall_ticks:  # the arm does not follow: try another way
                if self.move:
                    self.set_aside[self.move] = self.tick + self.retry_ticks
                self.best, self.since_best = phi, 0
        v0, c0 = self.violation(q), self.clearance(q)
        seen: dict[bytes, bool] = {}
        # Straight home ranks first whenever it violates nothing: no move of at most one cap per
        # joint ends closer to home, so none has a lower potential, and on a tie the stable sort
        # keeps it first. Try it alone then, before building and ranking the rest (the usual case
        # away from the floor; the goals are the same as from the full ranking).
        if self.set_aside.get(("home",), 0) <= self.tick and self.violation(home) == 0.0 \
                and self._passes(home, q, v0, c0, seen):
            self.move = ("home",)
            return home
        labels, goals, potentials = self._moves(q, v0)
        for i in np.argsort(potentials, kind="stable"):  # stable: straight home, then the fold order, on ties
            if self.set_aside.get(labels[i], 0) <= self.tick and self._passes(goals[i], q, v0, c0, seen):
                self.move = labels[i]
                return goals[i].copy()
        self.move = ()
        return None

    def record(self, cmd: SafeCommand, q: np.ndarray) -> None:
        self.last_reasons = cmd.reasons
        if not cmd.held and self.move:
            self.held_in_row = 0
            return
        self.held_in_row += 1
        if self.held_in_row >= self.held_limit:
            rules = ", ".join(r for r in cmd.reasons if r not in ("joint_step", "joint_limit", "homing"))
            why = f"the safety filter held every homing move (rules: {rules})" if rules else \
                "no move towards home keeps clear of the floor and inside the workspace"
            raise HomingError(f"reset: {why} of the arm{self.where} at {np.round(q, 3).tolist()}"
                              f"{self.blocked(q)}; it cannot climb out on its own: switch torque off, move it "
                              f"clear of the floor and workspace edges by hand, and home again")

    def blocked(self, q: np.ndarray) -> str:
        """What keeps the arm at ``q`` from home, in words (empty when nothing is known)."""
        v, c = self.violation(q), self.clearance(q)
        if c < 0.0:
            return f" (its lowest link {-c * 100:.1f} cm under the floor clearance)"
        if v > 0.0:
            return f" (the gripper {v * 100:.1f} cm outside the workspace box)"
        return ""


def drive_home(robot: Robot, kinematics: KinematicsLike, tolerance_rad: float, timeout_s: float, period_s: float,
               where: str = "") -> None:
    """Command ``arm.home`` every control period until every joint is within ``tolerance_rad``.

    Written once for every backend that homes by sending targets (the twin, the serial arm): the
    safety filter inside ``robot.send`` limits each step, so homing moves no faster than a policy
    may, and a pose outside the envelope is left by moves that reduce the violation
    (:class:`HomingPlan`). Pacing is the robot's: a real arm waits on a :class:`ControlClock`, a
    simulated one lets ``period_s`` of physics pass. Raises :class:`HomingError` naming every joint
    still off home (and the rules that last held it) when ``timeout_s`` of the robot's clock runs
    out, and at once when the e-stop holds the arm (homing cannot succeed until a person resets
    it) or when the filter holds every way out (or no move is safe) for a while; meanwhile the
    arm holds its last goal.
    """
    home = robot.arm.home
    plan = HomingPlan(robot.arm, kinematics, tolerance_rad, where, period_s=period_s)
    clock = ControlClock(period_s) if robot.realtime else None
    deadline = robot.now() + timeout_s
    while True:
        q = robot.read().positions
        err = np.abs(q - home)
        if np.all(err <= tolerance_rad):
            return
        if robot.now() > deadline:
            far = [f"{name} at {q[i]:+.3f} rad (home {home[i]:+.3f}, off by {err[i]:.3f})"
                   for i, name in enumerate(robot.arm.joint_names) if err[i] > tolerance_rad]
            rules = f"; the safety filter last acted for: {', '.join(plan.last_reasons)}" if plan.last_reasons else ""
            raise HomingError(f"reset: arm{where} did not reach home within {timeout_s:.1f} s "
                              f"(tolerance {tolerance_rad} rad): " + "; ".join(far) + plan.blocked(q) + rules)
        goal = plan.target(q)
        cmd = robot.hold("homing") if goal is None else robot.send(goal)
        if cmd.held and "estop" in cmd.reasons:
            raise HomingError(f"reset: e-stop latched ({robot.estop.reason}); reset it before homing")
        plan.record(cmd, q)
        if clock is not None:
            clock.wait()
        else:
            robot.advance(period_s)
