"""Terminal keyboard teleoperation: raw tty bytes, so it works over SSH with no display.

A terminal reports key presses (and the auto-repeat of held keys), never releases, so each press
moves the gripper for ``hold_polls`` control ticks; holding a key keeps it moving through the
terminal's auto-repeat. The gripper command is sticky (toggle, open, close).

Keys (also printed by ``KeyboardTeleop.help_text()``)::

    w / s, Up / Down        +x / -x  (forward / back)
    a / d, Left / Right     +y / -y  (left / right)
    r / f, PgUp / PgDn      +z / -z  (up / down)
    g                       toggle gripper;  o open, c close
    + / -                   speed up / down
    Enter or y              mark success      n   mark failure
    p                       scene restored (the cube is back; the next episode may start)
    x or Backspace          re-record (drop this episode)
    i or Tab                toggle intervention (take over from the policy)
    Space                   E-STOP (latches; reset is separate)
    q, Ctrl-C, Ctrl-D       quit
"""

from __future__ import annotations

import os
import select
import sys
import termios
from typing import Any

import numpy as np

from se_robot.teleop.base import TeleopDevice

ESC = 0x1B
#: escape sequences (after ESC [) of the keys we use
_CSI_KEYS = {b"A": "up", b"B": "down", b"C": "right", b"D": "left", b"5~": "pgup", b"6~": "pgdn"}
#: key -> (axis, sign) for motion
_MOTION = {"w": (0, 1), "up": (0, 1), "s": (0, -1), "down": (0, -1),
           "a": (1, 1), "left": (1, 1), "d": (1, -1), "right": (1, -1),
           "r": (2, 1), "pgup": (2, 1), "f": (2, -1), "pgdn": (2, -1)}
_BUTTON_KEYS = {"\r": "success", "\n": "success", "y": "success", "n": "failure",
                "x": "rerecord", "\x7f": "rerecord", "\x08": "rerecord",
                "i": "intervene", "\t": "intervene", " ": "estop", "p": "restored",
                "q": "quit", "\x03": "quit", "\x04": "quit"}
SPEEDS = (0.25, 0.5, 0.75, 1.0)


def parse_keys(buf: bytearray) -> list[str]:
    """Consume complete key presses from ``buf``; an unfinished escape sequence stays in it."""
    keys: list[str] = []
    i = 0
    while i < len(buf):
        b = buf[i]
        if b == ESC:
            if i + 1 >= len(buf):
                break  # maybe the start of a sequence: wait for more bytes
            if buf[i + 1] != ord("["):
                keys.append("esc")
                i += 1
                continue
            j = i + 2
            while j < len(buf) and not (0x40 <= buf[j] <= 0x7E):
                j += 1
            if j >= len(buf):
                break  # sequence not finished yet
            keys.append(_CSI_KEYS.get(bytes(buf[i + 2:j + 1]), "unknown"))
            i = j + 1
            continue
        keys.append(chr(b) if b < 0x80 else "unknown")
        i += 1
    del buf[:i]
    return keys


class KeyboardTeleop(TeleopDevice):
    """Keys from a terminal file descriptor (stdin by default, or a tty path such as a pty)."""

    name = "keyboard"

    def __init__(self, tty_path: str | None = None, fd: int | None = None, hold_polls: int = 1,
                 speed: float = 0.5, estop: Any | None = None):
        super().__init__(estop=estop)
        self.tty_path, self._given_fd = tty_path, fd
        self.hold_polls = max(1, int(hold_polls))
        self.speed = float(speed)
        self.gripper = 1.0
        self._fd: int | None = None
        self._own_fd = False
        self._saved_attrs: list | None = None
        self._buf = bytearray()
        self._held = np.zeros(3)  # current deflection per axis
        self._hold_left = np.zeros(3, dtype=int)

    @staticmethod
    def help_text() -> str:
        return __doc__.split("Keys (also printed by ``KeyboardTeleop.help_text()``)::", 1)[1].rstrip()

    def connect(self) -> "KeyboardTeleop":
        if self._fd is not None:
            return self
        if self.tty_path is not None:
            self._fd = os.open(self.tty_path, os.O_RDWR | os.O_NOCTTY)
            self._own_fd = True
        else:
            self._fd = self._given_fd if self._given_fd is not None else sys.stdin.fileno()
        if os.isatty(self._fd):
            # cbreak without echo and without signals: Ctrl-C arrives as a byte (quit), so an
            # episode in progress is closed cleanly; output processing stays on for prints.
            self._saved_attrs = termios.tcgetattr(self._fd)
            attrs = termios.tcgetattr(self._fd)
            attrs[0] &= ~(termios.IXON | termios.ICRNL)
            attrs[3] &= ~(termios.ICANON | termios.ECHO | termios.ISIG | termios.IEXTEN)
            attrs[6][termios.VMIN] = 0
            attrs[6][termios.VTIME] = 0
            termios.tcsetattr(self._fd, termios.TCSANOW, attrs)
        return self

    def disconnect(self) -> None:
        if self._fd is None:
            return
        if self._saved_attrs is not None:
            try:
                termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved_attrs)
            except termios.error:
                pass
            self._saved_attrs = None
        if self._own_fd:
            os.close(self._fd)
        self._fd = None

    def _drain(self) -> None:
        while self._fd is not None:
            ready, _, _ = select.select([self._fd], [], [], 0)
            if not ready:
                return
            try:
                chunk = os.read(self._fd, 4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # the pty's other end closed
                return
            if not chunk:
                return
            self._buf += chunk

    def feed(self, data: bytes) -> None:
        """Add bytes as if typed (for callers that read the terminal themselves)."""
        self._buf += data

    def _read(self, follower_q: np.ndarray | None) -> tuple[np.ndarray, bool, set[str]]:
        if self._fd is None and not self._buf:
            raise RuntimeError("KeyboardTeleop.poll before connect()")
        self._drain()
        buttons: set[str] = set()
        pressed = np.zeros(3)
        for key in parse_keys(self._buf):
            k = key.lower() if len(key) == 1 and key.isalpha() else key
            if k in _MOTION:
                axis, sign = _MOTION[k]
                pressed[axis] += sign
            elif k in _BUTTON_KEYS:
                buttons.add(_BUTTON_KEYS[k])
            elif k == "g":
                self.gripper = -self.gripper
            elif k == "o":
                self.gripper = 1.0
            elif k == "c":
                self.gripper = -1.0
            elif k in ("+", "="):
                self.speed = next((s for s in SPEEDS if s > self.speed), SPEEDS[-1])
            elif k in ("-", "_"):
                self.speed = next((s for s in reversed(SPEEDS) if s < self.speed), SPEEDS[0])
        for axis in range(3):
            if pressed[axis] != 0:
                self._held[axis] = np.clip(pressed[axis], -1, 1)
                self._hold_left[axis] = self.hold_polls
        motion = np.where(self._hold_left > 0, self._held, 0.0)
        self._hold_left = np.maximum(self._hold_left - 1, 0)
        active = bool(np.any(motion != 0))
        action = np.concatenate([motion * self.speed, [self.gripper]]).astype(np.float32)
        return action, active, buttons
