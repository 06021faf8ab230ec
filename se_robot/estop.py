"""What stops the arm: the faults a driver raises, the latched e-stop, and the command watchdog.

`SafetyFilter` (in `se_robot.safety`) holds every command while the `EStop` is latched and latches
it itself on a malformed joint state; drivers latch it on a `SafetyFault` (servo error bit, port
lost, retries exhausted); ROS services and teleop keys latch and reset it. The `Watchdog` tells a
controller that commands stopped arriving, so it can hold. Thread-safe, standard library only.
"""

from __future__ import annotations

import enum
import threading
import time
from typing import Callable

__all__ = ["FaultKind", "SafetyFault", "EStop", "Watchdog"]


class FaultKind(enum.Enum):
    SERVO_STATUS = "servo_status"            # a servo reported an error bit (overload, overheat, voltage)
    PORT_LOST = "port_lost"                  # the serial port vanished or stopped answering
    RETRIES_EXHAUSTED = "retries_exhausted"  # a read/write failed more times than allowed
    BAD_STATE = "bad_state"                  # the measured joint state is malformed (NaN, wrong length)
    USER = "user"                            # someone pressed stop


class SafetyFault(RuntimeError):
    """Raised by the driver (after latching the e-stop) when the arm cannot be commanded safely."""

    def __init__(self, kind: FaultKind, message: str, servo_id: int | None = None):
        self.kind = kind
        self.servo_id = servo_id
        where = f" (servo {servo_id})" if servo_id is not None else ""
        super().__init__(f"{kind.value}{where}: {message}")


class EStop:
    """A latched stop: set by `latch` (API, fault, ROS service, teleop key), cleared only by `reset`.

    Thread-safe; listeners run (outside the lock) on the transition to latched so a driver can
    act at once instead of at its next tick.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._latched_at_s: float | None = None
        self._count = 0
        self._listeners: list[Callable[[str], None]] = []

    @property
    def latched(self) -> bool:
        return self._reason is not None

    @property
    def reason(self) -> str | None:
        return self._reason

    @property
    def latched_at_s(self) -> float | None:
        """time.monotonic() of the latch, None when clear."""
        return self._latched_at_s

    @property
    def latch_count(self) -> int:
        return self._count

    def add_listener(self, fn: Callable[[str], None]) -> None:
        with self._lock:
            self._listeners.append(fn)

    def latch(self, reason: str | SafetyFault = "latched") -> None:
        """Latch (idempotent: the first reason is kept until reset)."""
        text = str(reason) or "latched"
        with self._lock:
            if self._reason is not None:
                return
            self._reason = text
            self._latched_at_s = time.monotonic()
            self._count += 1
            listeners = list(self._listeners)
        for fn in listeners:
            fn(text)

    def reset(self) -> str | None:
        """Clear the latch (the only way); returns the reason it held."""
        with self._lock:
            reason, self._reason, self._latched_at_s = self._reason, None, None
        return reason


class Watchdog:
    """Expires when `feed` was not called for ``timeout_s`` (monotonic clock; thread-safe).

    It starts fed at construction, so a controller that never sends anything also trips it.
    ``now`` arguments let tests and simulated clocks drive it; they must come from time.monotonic().
    """

    def __init__(self, timeout_s: float):
        if not timeout_s > 0:
            raise ValueError(f"Watchdog timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = float(timeout_s)
        self._lock = threading.Lock()
        self._last_feed_s = time.monotonic()

    def feed(self, now: float | None = None) -> None:
        t = time.monotonic() if now is None else float(now)
        with self._lock:
            self._last_feed_s = max(self._last_feed_s, t)  # never moves backwards

    def time_since_feed(self, now: float | None = None) -> float:
        t = time.monotonic() if now is None else float(now)
        with self._lock:
            return t - self._last_feed_s

    def expired(self, now: float | None = None) -> bool:
        return self.time_since_feed(now) > self.timeout_s
