"""The two things an arm node can drive: a SerialArm on a servo bus, or the MuJoCo twin.

Both apply the same SafetyFilter before anything moves (SerialArm inside ``send_joint_targets``,
the twin here, with the filter built the way SerialArm builds it), so a policy meets identical
limits on either side of ``use_sim``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from se_robot.arm import ArmDescription, load_arm
from se_robot.safety import EStop, SafeCommand, SafetyFilter


class SerialBackend:
    """arm_node's backend: ``SerialArm`` (safety filter and bus-fault e-stop inside it)."""

    def __init__(self, cfg: Any):
        from se_robot.hardware.serial_arm import SerialArm

        self.arm: ArmDescription = load_arm(cfg.arm)
        self.device = SerialArm(self.arm, cfg.port, cfg.calibration or None,
                                timeout_s=cfg.bus_timeout_s, retries=cfg.bus_retries)
        self.joint_names = self.arm.joint_names
        self.home = self.arm.home
        self.estop: EStop = self.device.estop

    def open(self) -> None:
        self.device.connect()

    def close(self) -> None:
        self.device.disconnect()

    def enable(self) -> None:
        self.device.torque_on()
        # SerialArm's own watchdog thread: holds even if this node's executor stalls.
        self.device.start_watchdog()

    def hold(self, reason: str) -> None:
        """Goal = present position (also while e-stopped: the stop must not coast to the last goal)."""
        self.device.hold()

    def read(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        st = self.device.read_state()
        return st.positions, st.velocities, st.efforts

    def send(self, q: np.ndarray) -> SafeCommand:
        return self.device.send_joint_targets(q)

    def tick(self, dt_s: float) -> None:
        pass

    def stats(self) -> dict[str, float]:
        return self.device.diagnostics()


class TwinBackend:
    """sim_node's backend: the MuJoCo twin stepped in real time behind a SafetyFilter.

    ``tick`` advances the physics by the wall-clock time since the previous tick (times
    ``real_time_factor``, at most 5 control periods so a stalled process does not jump), so the
    twin keeps real time even when the executor's timer drifts. One lock guards the MuJoCo data:
    the control timer steps it while the camera timer renders it.
    """

    def __init__(self, cfg: Any):
        from se_robot.sim.twin import ArmTwin
        from se_robot.sim.kinematics import Kinematics

        self.cfg = cfg
        self.arm: ArmDescription = load_arm(cfg.arm)
        self.joint_names = self.arm.joint_names
        self.home = self.arm.home
        self.estop = EStop()
        self.filter = SafetyFilter(self.arm, Kinematics(self.arm), self.estop)
        self.twin = ArmTwin(self.arm, cfg.task)
        self.lock = threading.RLock()
        self._rng = np.random.default_rng(cfg.seed)
        self._resets = 0
        self._last_tick: float | None = None
        self.counters = {"ticks": 0, "clipped": 0, "held": 0}

    def open(self) -> None:
        self.reset_task()

    def reset_task(self, seed: int | None = None) -> Any:
        """Arm at home, objects resampled (seed: restart the sampler there)."""
        with self.lock:
            if seed is not None:
                self._rng = np.random.default_rng(seed)
            self._resets += 1
            return self.twin.reset(self._rng)

    def close(self) -> None:
        """Renderers belong to the thread that made them (EGL); that thread calls close_renderers."""

    def close_renderers(self) -> None:
        with self.lock:
            self.twin.close()

    def enable(self) -> None:
        pass

    def hold(self, reason: str) -> None:
        with self.lock:
            cmd = self.filter.hold(self.twin.joint_positions(), reason)
            self.twin.set_targets(cmd.positions)

    def read(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with self.lock:
            return self.twin.joint_positions(), self.twin.joint_velocities(), self.twin.joint_efforts()

    def send(self, q: np.ndarray) -> SafeCommand:
        with self.lock:
            cmd = self.filter.filter(q, self.twin.joint_positions())
            if not (self.estop.latched and cmd.held):
                self.twin.set_targets(cmd.positions)
            self.counters["ticks"] += 1
            self.counters["clipped"] += int(cmd.clipped)
            self.counters["held"] += int(cmd.held)
            return cmd

    def tick(self, dt_s: float) -> None:
        now = time.monotonic()
        elapsed = dt_s if self._last_tick is None else min(now - self._last_tick, 5 * dt_s)
        self._last_tick = now
        with self.lock:
            self.twin.step(max(elapsed, 0.0) * self.cfg.real_time_factor)

    def render(self, camera: str, width: int, height: int) -> tuple[np.ndarray, int]:
        """A frame and the wall-clock ns of the physics state it shows."""
        with self.lock:
            stamp_ns = time.time_ns()
            return self.twin.render(camera, width=width, height=height), stamp_ns

    def task_positions(self) -> tuple[np.ndarray, np.ndarray, int]:
        with self.lock:
            return self.twin.target_position(), self.twin.cube_position(), time.time_ns()

    def stats(self) -> dict[str, float]:
        out = {f"arm/{k}": float(v) for k, v in self.counters.items()}
        out.update({f"safety/{k}": float(v) for k, v in self.filter.stats.items()})
        out["safety/estop_latched"] = float(self.estop.latched)
        out["sim/time_s"] = float(self.twin.time_s)
        out["sim/task_resets"] = float(self._resets)
        return out
