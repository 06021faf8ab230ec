"""One interface for every teleoperation device: an action in the env's space plus operator buttons.

Why one interface: recording, interventions during training and the ROS teleop node should not care
whether a human holds a gamepad, a SpaceMouse, a keyboard over SSH or a leader arm. Each device's
``poll()`` returns a ``TeleopCommand``: the action in the env's action space (``ee_delta``: dx, dy,
dz, gripper in [-1, 1]; a leader arm gives ``joint_targets`` in radians), whether the operator is
moving it, and the buttons pressed since the last poll. Pressing e-stop latches the safety layer's
``EStop`` right inside ``poll`` so no caller can forget it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

#: Operator buttons every device can produce (edge-triggered: reported once per press).
BUTTONS = ("success", "failure", "rerecord", "intervene", "estop", "quit", "restored")

EE_DELTA_DIM = 4  # dx, dy, dz, gripper


@dataclasses.dataclass
class TeleopCommand:
    """What a device says at one control tick."""

    action: np.ndarray  # float32 in [-1, 1], the env's action space (ee_delta or joint_delta)
    active: bool = False  # the operator is deflecting the device (or moving the leader arm)
    buttons: frozenset[str] = frozenset()  # presses since the previous poll, from BUTTONS
    intervening: bool = False  # the device holds control (intervene toggled on)
    joint_targets: np.ndarray | None = None  # leader arm only: follower joint targets (rad)

    def pressed(self, button: str) -> bool:
        return button in self.buttons


class TeleopDevice:
    """Base class: subclasses implement ``_read() -> (action, active, buttons)``.

    The base keeps the ``intervene`` toggle and the e-stop latch so every device behaves the same.
    Use as a context manager (connect/disconnect), like the hardware drivers.
    """

    action_mode = "ee_delta"
    name = "device"

    def __init__(self, estop: Any | None = None):
        self.estop = estop
        self.intervening = False

    # -- lifecycle -----------------------------------------------------------------------------
    def connect(self) -> "TeleopDevice":
        return self

    def disconnect(self) -> None:
        pass

    def __enter__(self) -> "TeleopDevice":
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    # -- reading -------------------------------------------------------------------------------
    def _read(self, follower_q: np.ndarray | None) -> tuple[np.ndarray, bool, set[str]]:
        raise NotImplementedError

    def poll(self, follower_q: np.ndarray | None = None) -> TeleopCommand:
        """Read everything the device sent since the last call; never blocks.

        ``follower_q`` (rad, joint order) lets joint-space devices express their action relative
        to where the follower is; Cartesian devices ignore it.
        """
        action, active, buttons = self._read(follower_q)
        if "intervene" in buttons:
            self.intervening = not self.intervening
        if "estop" in buttons and self.estop is not None:
            self.estop.latch(f"teleop e-stop ({self.name})")
        action = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        targets = getattr(self, "last_joint_targets", None)
        return TeleopCommand(action=action, active=bool(active), buttons=frozenset(buttons),
                             intervening=self.intervening, joint_targets=targets)


def apply_deadzone(value: float, deadzone: float) -> float:
    """Zero inside the deadzone, rescaled so the output still spans [-1, 1] outside it."""
    if abs(value) <= deadzone:
        return 0.0
    return float(np.sign(value) * min(1.0, (abs(value) - deadzone) / (1.0 - deadzone)))


class CombinedDevice(TeleopDevice):
    """Motion from one device, buttons from all: e.g. a SpaceMouse (two buttons) plus the keyboard
    in the terminal for success/failure/re-record/e-stop."""

    def __init__(self, motion: TeleopDevice, *others: TeleopDevice, estop: Any | None = None):
        super().__init__(estop=estop)
        self.motion, self.others = motion, others
        self.action_mode = motion.action_mode
        self.name = "+".join(d.name for d in (motion, *others))

    def connect(self) -> "CombinedDevice":
        for d in (self.motion, *self.others):
            d.connect()
        return self

    def disconnect(self) -> None:
        for d in (self.motion, *self.others):
            d.disconnect()

    @property
    def last_joint_targets(self) -> np.ndarray | None:
        return getattr(self.motion, "last_joint_targets", None)

    def _read(self, follower_q: np.ndarray | None) -> tuple[np.ndarray, bool, set[str]]:
        # The parts' own toggles stay off (the combined device keeps the one toggle); their
        # estop presses are latched here, once.
        action, active, buttons = self.motion._read(follower_q)
        buttons = set(buttons)
        for d in self.others:
            _, _, more = d._read(None)
            buttons |= set(more)
        return action, active, buttons
