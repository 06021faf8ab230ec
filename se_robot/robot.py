"""The one interface every arm backend implements: the MuJoCo twin, the serial-bus arm, the arm
behind ROS 2 topics.

``se_robot.envs.ArmEnv`` is written against this protocol only, so observation assembly, reward,
termination, pacing and reset exist once, whatever moves the joints. A backend owns what only it
can know: how to read joints and cameras, where the safety filter sits (always at the lowest layer
that writes to the actuators, so ``send`` returns the command that was actually applied), what its
clock is, and whether it can see the objects of the task (the twin can; a real arm needs a detector).

Time: every stamp a backend hands out is in its own clock, read with ``now()`` (``time.monotonic``
for a local arm, the physics time for a twin stepped by ``advance``, wall-clock for ROS topics).
Callers only compare a backend's stamps with its own ``now()``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

import numpy as np

from se_robot.arm import ArmDescription
from se_robot.estop import EStop
from se_robot.safety import KinematicsLike, SafeCommand, SafetyFilter, soft_limits, workspace_violations
from se_robot.tasks import ResetSample


class HomingError(RuntimeError):
    """The arm could not be brought home; the message names the joints, or the rule that blocked it."""


class StaleReading(RuntimeError):
    """No reading fresh enough arrived in time (a topic went quiet, a camera stopped). The env ends
    the episode (truncated, with this message as the reason) instead of acting on old data."""


class RobotNotConnected(RuntimeError):
    """A read or a command before ``connect()`` (or after ``close()``)."""


@dataclass(frozen=True)
class RobotState:
    """Joint readings sampled together; ``stamp_s`` is in the robot's clock (``Robot.now``)."""

    positions: np.ndarray   # rad, joint order of ``arm.joint_names``
    velocities: np.ndarray  # rad/s
    efforts: np.ndarray     # N*m, approximate on servos (load or current registers)
    stamp_s: float


@dataclass(frozen=True)
class Frame:
    """One camera image (RGB uint8, H x W x 3) and when it was captured, in the robot's clock.

    ``stale`` is True when no frame newer than the one asked for arrived in time and an older
    one is returned instead.
    """

    image: np.ndarray
    stamp_s: float
    stale: bool = False


@dataclass(frozen=True)
class ObjectState:
    """Where the task's objects are (m, base frame), for backends that know it without a camera."""

    cube_pos: np.ndarray
    target_pos: np.ndarray


@runtime_checkable
class Robot(Protocol):
    """An arm and its cameras; see the module docstring.

    Attributes every implementation sets: ``arm`` (its description), ``estop`` (the latch the
    safety filter consults: latching it stops the arm at the lowest layer), ``realtime`` (False
    only when the world moves by ``advance``), ``camera_names`` (what ``capture`` accepts, e.g.
    ``("scene", "wrist")``) and ``has_object_state`` (``object_state`` returns positions).
    """

    arm: ArmDescription
    estop: EStop
    realtime: bool
    camera_names: tuple[str, ...]
    has_object_state: bool

    def connect(self) -> None:
        """Open the bus / topics / cameras and check the arm is the one described; idempotent."""

    def close(self) -> None:
        """Leave the arm in its configured disconnect state and release every resource."""

    @property
    def is_connected(self) -> bool: ...

    def now(self) -> float:
        """The clock this robot stamps readings with (seconds)."""

    def read(self) -> RobotState:
        """A fresh joint reading (never a cached one older than this call)."""

    def send(self, q_rad: np.ndarray) -> SafeCommand:
        """Joint targets through the safety filter to the actuators; returns what was applied."""

    def hold(self, reason: str) -> SafeCommand:
        """Keep the arm where it is commanded to be now (the last safe goal), counted as ``reason``."""

    def trigger_estop(self, reason: str) -> None:
        """Latch the e-stop and stop the arm; ``estop.reset()`` (by a person) is the only way on."""

    def advance(self, dt_s: float) -> None:
        """Let ``dt_s`` of the world pass: a simulated robot steps its physics, a real one returns."""

    def prefetch(self) -> None:
        """Do now, just before a control tick, whatever work the next ``read``/``capture`` can do
        ahead (decoding messages already received), so less of it falls between the tick and the
        observation; nothing where reading has no such work."""

    def capture(self, camera: str, size: int, newer_than_s: float, timeout_s: float) -> Frame:
        """A frame of ``camera`` captured after ``newer_than_s`` (or the newest, flagged stale).

        ``size`` is the square side the caller will use: a renderer may produce it directly; a
        real camera returns its native frame and the caller crops and resizes.
        """

    def object_state(self) -> ObjectState | None:
        """Privileged object positions (twin, sim node), or None where only a camera can tell."""

    def reset_scene(self, rng: np.random.Generator) -> ResetSample | None:
        """Put the scene in a new start state drawn from the task (simulated robots: objects
        resampled, arm at home), or None where a person or a script has to do it."""

    def home(self, tolerance_rad: float, timeout_s: float) -> None:
        """Drive to ``arm.home`` through the safety filter; raises :class:`HomingError`."""

    def diagnostics(self) -> dict[str, float]:
        """Flat counters with namespaced keys (``safety/held``, ``bus/retries``, ...)."""


class ControlClock:
    """Ticks at ``t0 + k * period`` in real time; a missed tick is an overrun and restarts the
    schedule from now instead of bursting to catch up. The one pacer of every real-time backend.

    Why the two-stage wait: ``time.sleep`` wakes late by the kernel's timer slack and the
    scheduler's wake-up latency (tens of microseconds to a millisecond and more on a busy
    machine), and a late wake-up is jitter on every command. So it sleeps until ``spin_s``
    before the tick and reads the monotonic clock in a loop for the rest: the tick is hit to the
    clock's resolution whenever the thread holds a CPU then, for ``spin_s`` of CPU per tick.
    ``spin_s=0`` is a plain sleep (loops where a tick's exact time matters less than the CPU).
    The schedule is absolute (``next_tick += period``), so a late wake-up never accumulates.
    ``clock`` and ``sleep`` are injectable so tests can drive it with a fake clock."""

    def __init__(self, period_s: float, spin_s: float = 0.001, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.period_s = period_s
        self.spin_s = spin_s
        self._clock = clock
        self._sleep = sleep
        self.next_tick = clock() + period_s

    def restart(self) -> None:
        self.next_tick = self._clock() + self.period_s

    def wait(self, before_tick: Callable[[], None] | None = None) -> float:
        """Wait until the next tick; returns how late we already were (0 when on time).
        ``before_tick`` runs once the sleep is over, in the ``spin_s`` before the tick (work that
        is better done just before it, e.g. ``Robot.prefetch``); it is skipped when already late."""
        now = self._clock()
        late_s = now - self.next_tick
        if late_s > 0:
            self.next_tick = now + self.period_s
            return late_s
        if self.next_tick - now > self.spin_s:
            self._sleep(self.next_tick - now - self.spin_s)
        if before_tick is not None:
            before_tick()
        while self._clock() < self.next_tick:
            pass
        self.next_tick += self.period_s
        return 0.0


def request_realtime(priority: int) -> str | None:
    """Run the calling thread under ``SCHED_FIFO`` at ``priority`` (1-99); None, or why not.

    Why: at normal priority a control loop shares the CPU with whatever else runs (a learner, a
    browser), and on a busy machine its ticks wake tens of milliseconds late; a FIFO thread runs as
    soon as its sleep ends (``docs/benchmarks.md``, "ROS control loop"). Only a thread that sleeps
    most of each tick should ask for it (a FIFO thread that computes starves the rest). Linux only;
    it needs root, ``CAP_SYS_NICE`` or an ``rtprio`` limit, and otherwise leaves the thread as it was.
    """
    import os

    if priority <= 0:
        return None
    if not hasattr(os, "sched_setscheduler"):
        return "real-time scheduling (SCHED_FIFO) is not available on this system"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(min(int(priority), 99)))
    except (PermissionError, OSError) as e:
        return (f"could not get SCHED_FIFO priority {priority} ({e}); allow it with an rtprio limit "
                "(/etc/security/limits.conf: '<user> - rtprio 99', then log in again) or CAP_SYS_NICE, "
                "or set rt_priority to 0")
    return None


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
    """

    #: joints preferred, on ties, when moving one joint towards home: the arm folds up first
    FOLD_FIRST = ("wrist_flex", "elbow_flex", "shoulder_lift", "shoulder_pan", "wrist_roll")

    def __init__(self, arm: ArmDescription, kinematics: KinematicsLike, tolerance_rad: float, where: str = "", *,
                 period_s: float = 0.1, margin_m: float = 0.01, violation_weight: float = 10.0,
                 stall_s: float = 0.5, retry_s: float = 3.0, held_s: float = 2.0):
        s = arm.safety
        self.arm = arm
        self.kinematics = kinematics
        self.tolerance_rad = tolerance_rad
        self.where = where
        self.margin_m = margin_m
        self.weight = violation_weight
        self.stall_ticks = max(3, int(np.ceil(stall_s / period_s)))
        self.retry_ticks = max(1, int(np.ceil(retry_s / period_s)))
        self.held_limit = max(arm.n_joints + 2, int(np.ceil(held_s / period_s)))
        self.rules = SafetyFilter(arm, kinematics)  # predicts what the robot's filter lets through
        self.cap = s.max_joint_step_rad
        self.lower, self.upper = soft_limits(arm)
        self.floor_min_z = s.floor_z + s.floor_clearance_m
        self.box_min = np.asarray(s.workspace_min, dtype=np.float64)
        self.box_max = np.asarray(s.workspace_max, dtype=np.float64)
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
        the filter measures them (all zero when clear)."""
        k = self.kinematics
        return workspace_violations(k.fk(q), k.link_points(q), self.box_min, self.box_max, self.floor_min_z)

    def violation(self, q: np.ndarray) -> float:
        """The total of ``violations`` (m)."""
        return float(self.violations(q).sum())

    def clearance(self, q: np.ndarray) -> float:
        """Height of the lowest link point above ``floor_z + floor_clearance_m`` (m, negative under)."""
        return float(np.asarray(self.kinematics.link_points(q))[:, 2].min() - self.floor_min_z)

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

    def _moves(self, q: np.ndarray, v0: float) -> list[tuple[tuple, np.ndarray]]:
        """(label, goal) of every move considered from ``q``."""
        home = self.arm.home
        out: list[tuple[tuple, np.ndarray]] = [(("home",), self._home_move(q))]
        for j in self.fold_order:
            if abs(q[j] - home[j]) > self.tolerance_rad / 2:
                one = q.copy()
                one[j] = np.clip(home[j], q[j] - self.cap, q[j] + self.cap)
                out.append((("towards", j), one))
        f = self.violation if v0 > 0.0 else (lambda x: -self.clearance(x))
        grad = np.zeros(len(q))
        for j in range(len(q)):
            e = np.zeros(len(q))
            e[j] = 1e-3
            grad[j] = (f(q + e) - f(q - e)) / 2e-3
        if np.abs(grad).max() > 1e-9:
            out.append((("descent",), self._step(q, -grad)))
        for j in range(len(q)):
            for sign in (1, -1):
                e = np.zeros(len(q))
                e[j] = sign
                out.append((("joint", j, sign), self._step(q, e)))
        return out

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
        return bool((w <= w0 + 1e-9).all() or (w.sum() < w0.sum() - 1e-9 and w.max() <= w0.max() + 1e-9))

    def _admissible(self, p: np.ndarray, q: np.ndarray, v0: float, c0: float) -> bool:
        """A safe move from ``q`` to ``p`` that reduces the violation or, without raising it,
        gets closer to home (or, once clear, higher)."""
        if not self._safe(p, self.violations(q), c0):
            return False
        closer = np.abs(p - self.arm.home).sum() < np.abs(q - self.arm.home).sum() - 1e-3
        if v0 > 0.0:
            return closer or self.violation(p) < v0 - 1e-6
        return closer or self.clearance(p) > c0 + 1e-4

    # -- the plan ----------------------------------------------------------------------------
    def target(self, q: np.ndarray) -> np.ndarray | None:
        """The goal for this tick, from the measured pose ``q``; None when no move is safe (the
        caller holds the last goal: re-sending the measured pose would let the arm sag)."""
        q = np.asarray(q, dtype=np.float64)
        self.tick += 1
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
        # Straight home ranks first whenever it violates nothing: no move of at most one cap per
        # joint ends closer to home, so none has a lower potential, and on a tie the stable sort
        # keeps it first. Try it alone then, before building and ranking the rest (the usual case
        # away from the floor; the goals are the same as from the full ranking).
        home = self._home_move(q)
        if self.set_aside.get(("home",), 0) <= self.tick and self.violation(home) == 0.0:
            cmd = self.rules.filter(home, q)
            if not cmd.held and self._admissible(cmd.positions, q, v0, c0):
                self.move = ("home",)
                return home
        moves = [(label, goal) for label, goal in self._moves(q, v0) if self.set_aside.get(label, 0) <= self.tick]
        moves.sort(key=lambda m: self.potential(m[1]))  # stable: straight home, then the fold order, on ties
        for label, goal in moves:
            cmd = self.rules.filter(goal, q)
            if not cmd.held and self._admissible(cmd.positions, q, v0, c0):
                self.move = label
                return goal
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
