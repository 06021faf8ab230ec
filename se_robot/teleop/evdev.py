"""Gamepads and SpaceMice through Linux evdev, read as raw ``struct input_event`` bytes.

No extra dependency: ``/dev/input/eventN`` yields fixed-size records ``struct input_event
{struct timeval time; __u16 type; __u16 code; __s32 value;}`` (24 bytes on 64-bit Linux), which
``parse_events`` decodes. The same reader takes a FIFO or a file of recorded events, so tests feed
synthetic bytes through the real parsing path. Axis ranges come from the ``EVIOCGABS`` ioctl when
the path is a real input device, else from the defaults below.

Find a device with ``ls -l /dev/input/by-id/`` (``*-event-joystick`` for gamepads, ``*3Dconnexion*``
for a SpaceMouse); the user needs read access (the ``input`` group).
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
import stat
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np

from se_robot.teleop.base import TeleopDevice, apply_deadzone

EVENT_FORMAT = "llHHi"  # native: timeval (long, long), type, code, value
EVENT_SIZE = struct.calcsize(EVENT_FORMAT)

EV_SYN, EV_KEY, EV_REL, EV_ABS = 0x00, 0x01, 0x02, 0x03
ABS_X, ABS_Y, ABS_Z, ABS_RX, ABS_RY, ABS_RZ = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05
ABS_HAT0X, ABS_HAT0Y = 0x10, 0x11
REL_X, REL_Y, REL_Z, REL_RX, REL_RY, REL_RZ = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05
BTN_0, BTN_1 = 0x100, 0x101
BTN_SOUTH, BTN_EAST, BTN_NORTH, BTN_WEST = 0x130, 0x131, 0x133, 0x134
BTN_TL, BTN_TR, BTN_SELECT, BTN_START, BTN_MODE = 0x136, 0x137, 0x13A, 0x13B, 0x13C


@dataclasses.dataclass(frozen=True)
class InputEvent:
    time_s: float
    type: int
    code: int
    value: int


def encode_event(type_: int, code: int, value: int, time_s: float = 0.0) -> bytes:
    """The bytes the kernel would deliver for one event (used to build test streams)."""
    sec = int(time_s)
    return struct.pack(EVENT_FORMAT, sec, int(round((time_s - sec) * 1e6)), type_, code, value)


def parse_events(buf: bytearray) -> list[InputEvent]:
    """Consume whole events from ``buf``; a partial record stays for the next read."""
    n = len(buf) // EVENT_SIZE
    out = []
    for i in range(n):
        sec, usec, type_, code, value = struct.unpack_from(EVENT_FORMAT, buf, i * EVENT_SIZE)
        out.append(InputEvent(sec + usec * 1e-6, type_, code, value))
    del buf[: n * EVENT_SIZE]
    return out


def _eviocgabs(axis: int) -> int:
    # _IOR('E', 0x40 + axis, struct input_absinfo): six __s32 = 24 bytes
    return (2 << 30) | (24 << 16) | (ord("E") << 8) | (0x40 + axis)


class EvdevReader:
    """Non-blocking reader of input events from a device node, FIFO or file."""

    def __init__(self, path: str):
        self.path = path
        self._fd: int | None = None
        self._buf = bytearray()

    def open(self) -> None:
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except PermissionError:
            raise PermissionError(f"{self.path}: no read permission; add the user to the 'input' group "
                                  "or add a udev rule for the device") from None
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.path}: no such input device (see ls -l /dev/input/by-id/)") from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def is_char_device(self) -> bool:
        return self._fd is not None and stat.S_ISCHR(os.fstat(self._fd).st_mode)

    def abs_range(self, axis: int) -> tuple[int, int] | None:
        """(minimum, maximum) of an absolute axis from the kernel, or None if not a real device."""
        if not self.is_char_device:
            return None
        buf = bytearray(24)
        try:
            fcntl.ioctl(self._fd, _eviocgabs(axis), buf)
        except OSError:
            return None
        _, lo, hi, _, _, _ = struct.unpack("6i", buf)
        return (lo, hi) if hi > lo else None

    def read(self) -> Iterator[InputEvent]:
        if self._fd is None:
            raise RuntimeError(f"{self.path}: read before open")
        while True:
            try:
                chunk = os.read(self._fd, EVENT_SIZE * 64)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.ENODEV:
                    raise OSError(f"{self.path}: input device unplugged") from None
                raise
            if not chunk:
                break
            self._buf += chunk
        yield from parse_events(self._buf)


class _EvdevDevice(TeleopDevice):
    """Shared plumbing: open the node, fold events into axis/button state each poll."""

    default_ranges: dict[int, tuple[int, int]] = {}

    def __init__(self, path: str, deadzone: float = 0.1, speed: float = 1.0, estop: Any | None = None):
        super().__init__(estop=estop)
        self.reader = EvdevReader(path)
        self.deadzone, self.speed = deadzone, speed
        self.ranges = dict(self.default_ranges)
        self.axes: dict[int, float] = {}  # normalised [-1, 1] (absolute and relative)
        self.keys: dict[int, bool] = {}
        self.gripper = 1.0

    def connect(self) -> "_EvdevDevice":
        self.reader.open()
        for axis in list(self.ranges):
            rng = self.reader.abs_range(axis)
            if rng is not None:
                self.ranges[axis] = rng
        return self

    def disconnect(self) -> None:
        self.reader.close()

    def _normalise(self, code: int, value: int) -> float:
        lo, hi = self.ranges.get(code, (-32768, 32767))
        return float(np.clip(2.0 * (value - lo) / (hi - lo) - 1.0, -1.0, 1.0))

    def _events(self) -> list[InputEvent]:
        return list(self.reader.read())


@dataclasses.dataclass(frozen=True)
class GamepadMap:
    """Xbox-style layout (xpad/hid-generic). Signs make stick-up = +x (forward), stick-left = +y."""

    x_axis: tuple[int, float] = (ABS_Y, -1.0)  # left stick up/down
    y_axis: tuple[int, float] = (ABS_X, -1.0)  # left stick left/right
    z_axis: tuple[int, float] = (ABS_RY, -1.0)  # right stick up/down
    open_trigger: int = ABS_Z  # left trigger opens
    close_trigger: int = ABS_RZ  # right trigger closes
    buttons: tuple[tuple[int, str], ...] = ((BTN_SOUTH, "success"), (BTN_EAST, "failure"),
                                            (BTN_NORTH, "rerecord"), (BTN_WEST, "intervene"),
                                            (BTN_MODE, "estop"), (BTN_SELECT, "estop"), (BTN_START, "quit"),
                                            (BTN_TL, "restored"))
    gripper_toggle: int = BTN_TR


class GamepadTeleop(_EvdevDevice):
    """Left stick moves in x/y, right stick in z, triggers open/close, face buttons mark episodes."""

    name = "gamepad"
    default_ranges = {ABS_X: (-32768, 32767), ABS_Y: (-32768, 32767), ABS_RX: (-32768, 32767),
                      ABS_RY: (-32768, 32767), ABS_Z: (0, 1023), ABS_RZ: (0, 1023)}

    def __init__(self, path: str, mapping: GamepadMap = GamepadMap(), **kwargs: Any):
        super().__init__(path, **kwargs)
        self.mapping = mapping

    def _read(self, follower_q: np.ndarray | None) -> tuple[np.ndarray, bool, set[str]]:
        buttons: set[str] = set()
        names = dict(self.mapping.buttons)
        for ev in self._events():
            if ev.type == EV_ABS:
                self.axes[ev.code] = self._normalise(ev.code, ev.value)
            elif ev.type == EV_KEY:
                was = self.keys.get(ev.code, False)
                self.keys[ev.code] = ev.value != 0
                if ev.value == 1 and not was:  # press edge; 2 is auto-repeat
                    if ev.code in names:
                        buttons.add(names[ev.code])
                    elif ev.code == self.mapping.gripper_toggle:
                        self.gripper = -self.gripper
        m = self.mapping
        motion = np.array([sign * apply_deadzone(self.axes.get(code, 0.0), self.deadzone)
                           for code, sign in (m.x_axis, m.y_axis, m.z_axis)])
        # triggers rest at -1 after normalisation of (0, max); pressed past half sets the gripper
        if self.axes.get(m.open_trigger, -1.0) > 0.0:
            self.gripper = 1.0
        elif self.axes.get(m.close_trigger, -1.0) > 0.0:
            self.gripper = -1.0
        action = np.concatenate([motion * self.speed, [self.gripper]])
        return action, bool(np.any(motion != 0)), buttons


class SpaceMouseTeleop(_EvdevDevice):
    """3Dconnexion SpaceMouse: translation drives dx, dy, dz; button 0 toggles the gripper,
    button 1 toggles intervention. Older kernels report EV_REL, newer EV_ABS; both are read.

    ``axis_map`` maps (device axis code, sign) to x, y, z in the robot base frame; the default
    suits the puck's cable pointing away from the operator, facing the robot.
    """

    name = "spacemouse"
    full_scale = 350.0  # counts at full deflection on SpaceMouse Compact/Wireless
    default_ranges = {code: (-350, 350) for code in range(6)}

    def __init__(self, path: str, axis_map: tuple[tuple[int, float], ...] = ((1, -1.0), (0, -1.0), (2, -1.0)),
                 buttons: tuple[tuple[int, str], ...] = ((BTN_1, "intervene"),), **kwargs: Any):
        kwargs.setdefault("deadzone", 0.15)
        super().__init__(path, **kwargs)
        self.axis_map = axis_map
        self.button_names = dict(buttons)

    def _read(self, follower_q: np.ndarray | None) -> tuple[np.ndarray, bool, set[str]]:
        buttons: set[str] = set()
        for ev in self._events():
            if ev.type in (EV_ABS, EV_REL) and ev.code < 6:
                self.axes[ev.code] = self._normalise(ev.code, ev.value) if ev.type == EV_ABS else \
                    float(np.clip(ev.value / self.full_scale, -1.0, 1.0))
            elif ev.type == EV_KEY and ev.value == 1:
                if ev.code == BTN_0:
                    self.gripper = -self.gripper
                elif ev.code in self.button_names:
                    buttons.add(self.button_names[ev.code])
        motion = np.array([sign * apply_deadzone(self.axes.get(code, 0.0), self.deadzone)
                           for code, sign in self.axis_map])
        action = np.concatenate([motion * self.speed, [self.gripper]])
        return action, bool(np.any(motion != 0)), buttons
