"""``TwinRobot``: the MuJoCo twin behind the ``se_robot.robot.Robot`` interface.

The same ``ArmEnv`` that drives the serial arm drives this, so a policy trained here meets the
real arm's observation, action decoding and safety envelope unchanged. The twin applies its own
``SafetyFilter`` (built as ``SerialArm`` builds its own) before a servo target is set, and its own
``EStop``, with ``SerialArm``'s hold semantics so sim and arm agree: a held command (and
``hold``) keeps the last goal (position servos hold it against gravity), and a latch of the e-stop
stops the arm once at its present position, after which nothing moves until the latch is reset.

Time is the physics time: nothing moves until ``advance`` steps the simulation, which is why
``realtime`` is False and an env paces the twin by advancing it rather than by sleeping.

Domain randomization (``set_randomization``, ``se_robot.sim.randomize``) draws the twin's camera,
lighting, colours, image effects, servo and cube parameters and control latency anew at every
``reset_scene``, from a child of the reset's generator: a seeded env reset gives the same draw, and
the scene it samples is the same with randomization on or off.

One re-entrant lock guards the MuJoCo data, so a ROS node can render from its camera timer while
its control timer sends and advances.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import numpy as np

from se_robot.arm import ArmDescription, load_arm
from se_robot.estop import EStop
from se_robot.homing import drive_home
from se_robot.robot import Frame, ObjectState, RobotState
from se_robot.safety import SafeCommand, SafetyFilter
from se_robot.sim.randomize import RandomizationSpec, TwinRandomizer, load_randomization
from se_robot.sim.twin import ArmTwin
from se_robot.tasks import ResetSample, Task

#: physics time a reset lets pass with the arm at home, so gravity sag settles before anyone looks
SETTLE_S = 0.2


class TwinRobot:
    """The twin as a robot: joints, cameras ``scene`` and ``wrist``, and true object positions.

    ``control_hz`` is the rate ``home`` commands at (as a real arm's homing would).
    """

    realtime = False
    camera_names = ("scene", "wrist")
    has_object_state = True

    def __init__(self, arm: str | ArmDescription = "so101", task: str | Task = "reach", control_hz: float = 10.0):
        from se_robot.sim.kinematics import Kinematics

        self.arm: ArmDescription = load_arm(arm) if isinstance(arm, str) else arm
        self.twin = ArmTwin(self.arm, task)
        self.estop = EStop()
        self.filter = SafetyFilter(self.arm, Kinematics(self.arm), self.estop)
        self.control_hz = control_hz
        self.lock = threading.RLock()
        self._goal = self.arm.home.copy()
        self._closed = False
        self.counters = {"ticks": 0, "clipped": 0, "held": 0, "resets": 0}
        self.randomizer: TwinRandomizer | None = None
        self.estop.add_listener(self._stop)

    # ------------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        """The model is built with the robot; the first connect puts the arm at home and the
        objects where a fixed seed draws them, so a node that never resets still shows a scene."""
        self._closed = False
        if self.counters["resets"] == 0:
            self.reset_scene(np.random.default_rng(0))

    def close(self) -> None:
        """Frees the renderers; EGL ties them to the thread that made them, so call it from there."""
        with self.lock:
            self.twin.close()
        self._closed = True

    @property
    def is_connected(self) -> bool:
        return not self._closed

    def now(self) -> float:
        return self.twin.time_s

    # ------------------------------------------------------------------ joints
    def read(self) -> RobotState:
        with self.lock:
            t = self.twin
            return RobotState(t.joint_positions(), t.joint_velocities(), t.joint_efforts(), t.time_s)

    def send(self, q_rad: np.ndarray) -> SafeCommand:
        """Filter against the joints measured now; a held command keeps the last goal (as
        ``SerialArm`` does), and while e-stopped nothing is set (the latch already stopped the arm).

        Unlike the bus, the twin's reading is never stale, so the caps are measured from it alone.
        Where the measured pose is already outside the envelope (``current_unsafe``: an arm pressed
        under the floor clearance while pushing the cube) a held command stops where the arm is,
        as before: keeping the goal there made the scripted push expert fail 9 of 100 episodes
        instead of 1, and measuring the caps from the goal as well, 10.
        """
        with self.lock:
            cmd = self.filter.filter(q_rad, self.twin.joint_positions())
            if cmd.held and not self.estop.latched and "current_unsafe" not in cmd.reasons:
                cmd = SafeCommand(self._goal.copy(), False, True, cmd.reasons)
            if not (self.estop.latched and cmd.held):
                self.twin.set_targets(cmd.positions)
                self._goal = cmd.positions.copy()
            self.counters["ticks"] += 1
            self.counters["clipped"] += int(cmd.clipped)
            self.counters["held"] += int(cmd.held)
            return cmd

    def hold(self, reason: str) -> SafeCommand:
        """Keep the last safe goal: it already passed the filter, so holding it cannot leave the envelope."""
        with self.lock:
            cmd = self.filter.hold(self._goal, reason)
            self.twin.set_targets(cmd.positions)
            self.counters["held"] += 1
            return cmd

    def trigger_estop(self, reason: str) -> None:
        """Latch; the latch stops the arm where it is now (coasting on to the last goal is not stopping)."""
        self.estop.latch(reason)

    def _stop(self, reason: str) -> None:
        """EStop listener: one hold at the present position, whoever latched (a fault, a key, a service)."""
        with self.lock:
            self._goal = self.twin.joint_positions()
            self.twin.set_targets_now(self._goal)

    def advance(self, dt_s: float) -> None:
        with self.lock:
            self.twin.step(dt_s)

    def prefetch(self) -> None:
        """Nothing to do ahead: the twin is read where it stands."""

    def home(self, tolerance_rad: float, timeout_s: float) -> None:
        drive_home(self, self._homing_kinematics, tolerance_rad, timeout_s, 1.0 / self.control_hz, " (twin)")

    @functools.cached_property
    def _homing_kinematics(self) -> Any:
        """Homing's own (Kinematics is not thread-safe), made once: a few ms on every reset otherwise."""
        from se_robot.sim.kinematics import Kinematics

        return Kinematics(self.arm)

    # ------------------------------------------------------------------ scene
    def capture(self, camera: str, size: int, newer_than_s: float = -np.inf, timeout_s: float = 0.0) -> Frame:
        """A render of the current physics state at ``size`` x ``size``: never stale, since the
        image is made from the state it is stamped with."""
        if camera not in self.camera_names:
            raise ValueError(f"unknown camera {camera!r}; the twin has {', '.join(self.camera_names)}")
        with self.lock:
            return Frame(self.twin.render(camera, size, size), self.twin.time_s)

    def object_state(self) -> ObjectState:
        with self.lock:
            return ObjectState(self.twin.cube_position(), self.twin.target_position())

    def place(self, q: np.ndarray) -> None:
        """Put the arm at ``q`` with its goal there too, as a hand leaves it: where homing and
        safety tests and benchmarks start from a pose no policy would be allowed to reach."""
        q = np.asarray(q, dtype=np.float64)
        with self.lock:
            self.twin.reset(np.random.default_rng(0), q=q)
            self._goal = q.copy()

    def set_randomization(self, spec: str | RandomizationSpec | dict | None) -> None:
        """Randomize every following ``reset_scene`` (a preset name, YAML path, mapping or spec),
        or, with None or a spec that changes nothing, stop: the nominal twin is restored now."""
        spec = load_randomization(spec) if spec is not None else None
        with self.lock:
            if spec is not None and spec.enabled:
                if self.randomizer is None:
                    self.randomizer = TwinRandomizer(self.twin, spec)
                self.randomizer.spec = spec
            elif self.randomizer is not None:
                self.randomizer.restore()
                self.randomizer = None

    def reset_scene(self, rng: np.random.Generator) -> ResetSample:
        """Arm at home, objects drawn from the task with ``rng``, then ``SETTLE_S`` of physics;
        with randomization, a new draw first (from ``rng``'s next child generator)."""
        with self.lock:
            if self.randomizer is not None:
                self.randomizer.new_draw(rng.spawn(1)[0])
            sample = self.twin.reset(rng)
            self._goal = self.arm.home.copy()
            self.twin.step(SETTLE_S)
            self.counters["resets"] += 1
            return sample

    def diagnostics(self) -> dict[str, float]:
        out = {f"arm/{k}": float(v) for k, v in self.counters.items()}
        out.update({f"safety/{k}": float(v) for k, v in self.filter.stats.items()})
        out["safety/estop_latched"] = float(self.estop.latched)
        out["sim/time_s"] = float(self.twin.time_s)
        return out
