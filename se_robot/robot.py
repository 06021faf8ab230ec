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
from se_robot.safety import SafeCommand
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
