"""The MuJoCo twin as a :class:`se_robot.robot.Robot` (minimal version written by the ros helper so
sim_node runs against the protocol; core-env's TwinRobot supersedes it at integration).

The world moves only by ``advance`` (``realtime`` is False): whoever drives the twin decides how
fast physics runs (an env steps it one control period at a time, sim_node keeps it in wall-clock
time). Stamps are physics seconds. Like the serial arm, every command passes a SafetyFilter here,
the lowest layer that moves the joints, so a policy meets the same limits on both.

Not thread-safe: a caller that renders from one thread while another steps must serialise the
calls. Renderers belong to the thread that created them (EGL), so call ``close`` from the thread
that called ``capture``.
"""

from __future__ import annotations

import numpy as np

from se_robot.arm import ArmDescription, load_arm
from se_robot.robot import Frame, HomingError, ObjectState, RobotNotConnected, RobotState
from se_robot.safety import EStop, SafeCommand, SafetyFilter
from se_robot.sim.kinematics import Kinematics
from se_robot.sim.twin import ArmTwin
from se_robot.tasks import ResetSample, Task


class TwinRobot:
    """The twin of ``arm`` in the scene of ``task``; see the module docstring."""

    realtime = False
    has_object_state = True
    camera_names = ("scene", "wrist")

    def __init__(self, arm: ArmDescription | str = "so101", task: Task | str = "reach"):
        self.arm = load_arm(arm) if isinstance(arm, str) else arm
        self.task = task
        self.estop = EStop()
        self.safety = SafetyFilter(self.arm, Kinematics(self.arm), self.estop)
        self._twin: ArmTwin | None = None
        self._resets = 0

    # ------------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        """Build the scene, arm at home, objects drawn from a fixed seed (``reset_scene`` redraws)."""
        if self._twin is None:
            self._twin = ArmTwin(self.arm, self.task)
            self._twin.reset(np.random.default_rng(0))

    def close(self) -> None:
        if self._twin is not None:
            self._twin.close()
            self._twin = None

    @property
    def is_connected(self) -> bool:
        return self._twin is not None

    def _require(self) -> ArmTwin:
        if self._twin is None:
            raise RobotNotConnected("TwinRobot: call connect() first")
        return self._twin

    # ------------------------------------------------------------------ joints
    def now(self) -> float:
        return self._require().time_s

    def read(self) -> RobotState:
        t = self._require()
        return RobotState(t.joint_positions(), t.joint_velocities(), t.joint_efforts(), t.time_s)

    def send(self, q_rad: np.ndarray) -> SafeCommand:
        t = self._require()
        cmd = self.safety.filter(q_rad, t.joint_positions())
        if not self.estop.latched:
            t.set_targets(cmd.positions)
        return cmd

    def hold(self, reason: str) -> SafeCommand:
        """Targets = present positions: the arm stops where it is (never coasts to an old goal)."""
        t = self._require()
        cmd = self.safety.hold(t.joint_positions(), reason)
        t.set_targets(cmd.positions)
        return cmd

    def trigger_estop(self, reason: str) -> None:
        self.estop.latch(reason)
        self.hold("estop")

    def advance(self, dt_s: float) -> None:
        if dt_s > 0:
            self._require().step(dt_s)

    def home(self, tolerance_rad: float, timeout_s: float) -> None:
        """Command home every 20 ms of physics (the filter limits each step) until within tolerance."""
        t = self._require()
        home = self.arm.home
        period_s = 0.02
        for _ in range(max(1, int(timeout_s / period_s))):
            err = np.abs(t.joint_positions() - home)
            if np.all(err <= tolerance_rad):
                return
            if self.send(home).held and self.estop.latched:
                raise HomingError(f"e-stop latched ({self.estop.reason}); reset it before homing")
            self.advance(period_s)
        err = np.abs(t.joint_positions() - home)
        far = [f"{n} off by {err[i]:.3f} rad" for i, n in enumerate(self.arm.joint_names) if err[i] > tolerance_rad]
        if far:
            raise HomingError(f"twin did not reach home within {timeout_s} s: " + "; ".join(far))

    # ------------------------------------------------------------------ scene
    def capture(self, camera: str, size: int, newer_than_s: float, timeout_s: float) -> Frame:
        """A render of the current physics state (always newer than anything before it)."""
        if camera not in self.camera_names:
            raise ValueError(f"TwinRobot has no camera {camera!r}; cameras: {', '.join(self.camera_names)}")
        t = self._require()
        return Frame(t.render(camera, width=size, height=size), t.time_s)

    def object_state(self) -> ObjectState:
        t = self._require()
        return ObjectState(t.cube_position(), t.target_position())

    def reset_scene(self, rng: np.random.Generator) -> ResetSample:
        self._resets += 1
        return self._require().reset(rng)

    def diagnostics(self) -> dict[str, float]:
        out = {f"safety/{k}": float(v) for k, v in self.safety.stats.items()}
        out["safety/estop_latched"] = float(self.estop.latched)
        out["sim/task_resets"] = float(self._resets)
        if self._twin is not None:
            out["sim/time_s"] = float(self._twin.time_s)
        return out
