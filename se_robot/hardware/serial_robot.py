"""The serial-bus arm as a :class:`se_robot.robot.Robot` (minimal version written by the ros helper so
arm_node runs against the protocol; core-env's SerialRobot, with cameras, supersedes it).

Everything that moves the servos goes through ``SerialArm``, whose safety filter and bus-fault
e-stop sit at the lowest layer that writes goals. ``connect`` energises the servos with goal =
present position (nothing jumps) and starts SerialArm's own watchdog, so the arm holds even if
the process driving it stalls. Stamps are ``time.monotonic()``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from se_robot.arm import ArmDescription, load_arm
from se_robot.hardware.serial_arm import SerialArm
from se_robot.robot import ControlClock, Frame, HomingError, RobotState
from se_robot.safety import SafeCommand
from se_robot.tasks import ResetSample


class SerialRobot:
    """``arm`` on serial ``port``; ``calibration`` as SerialArm takes it."""

    realtime = True
    has_object_state = False
    camera_names: tuple[str, ...] = ()

    def __init__(self, arm: ArmDescription | str, port: str, calibration: Any = None, *,
                 timeout_s: float = 0.05, retries: int = 3, watchdog: bool = True, home_rate_hz: float = 30.0):
        self.arm = load_arm(arm) if isinstance(arm, str) else arm
        self.device = SerialArm(self.arm, port, calibration, timeout_s=timeout_s, retries=retries)
        self.estop = self.device.estop
        self.watchdog = watchdog
        self.home_rate_hz = home_rate_hz

    def connect(self) -> None:
        if self.device.is_connected:
            return
        self.device.connect()
        try:
            self.device.torque_on()
            if self.watchdog:
                self.device.start_watchdog()
        except Exception:
            self.device.disconnect()
            raise

    def close(self) -> None:
        self.device.disconnect()

    @property
    def is_connected(self) -> bool:
        return self.device.is_connected

    def now(self) -> float:
        return time.monotonic()

    def read(self) -> RobotState:
        st = self.device.read_state()
        return RobotState(st.positions, st.velocities, st.efforts, st.stamp)

    def send(self, q_rad: np.ndarray) -> SafeCommand:
        return self.device.send_joint_targets(q_rad)

    def hold(self, reason: str) -> SafeCommand:
        """Goal = present position, also while e-stopped (the stop must not coast to the last goal)."""
        return self.device.hold()

    def trigger_estop(self, reason: str) -> None:
        self.estop.latch(reason)
        self.device.hold()

    def advance(self, dt_s: float) -> None:
        """Real time passes by itself."""

    def capture(self, camera: str, size: int, newer_than_s: float, timeout_s: float) -> Frame:
        raise ValueError(f"this SerialRobot has no camera {camera!r} (no cameras configured)")

    def object_state(self) -> None:
        return None

    def reset_scene(self, rng: np.random.Generator) -> ResetSample | None:
        return None

    def home(self, tolerance_rad: float, timeout_s: float) -> None:
        """Command home every tick (the safety filter limits each step) until within tolerance."""
        home = self.arm.home
        clock = ControlClock(1.0 / self.home_rate_hz)
        deadline = time.monotonic() + timeout_s
        while True:
            q = self.read().positions
            err = np.abs(q - home)
            if np.all(err <= tolerance_rad):
                return
            if time.monotonic() > deadline:
                far = [f"{name} at {q[i]:+.3f} rad (home {home[i]:+.3f}, off by {err[i]:.3f})"
                       for i, name in enumerate(self.arm.joint_names) if err[i] > tolerance_rad]
                raise HomingError(f"arm on {self.device.port} did not reach home within {timeout_s:.1f} s "
                                  f"(tolerance {tolerance_rad} rad): " + "; ".join(far))
            cmd = self.send(home)
            if cmd.held and "estop" in cmd.reasons:
                raise HomingError(f"e-stop latched ({self.estop.reason}); reset it before homing")
            clock.wait()

    def diagnostics(self) -> dict[str, float]:
        return self.device.diagnostics()
