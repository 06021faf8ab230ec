"""The virtual arm: servo emulator + physics + (optionally) a camera stream, started as one thing.

``VirtualArm`` is what ``se-robot emulate`` runs and what integration tests build: a pty that
speaks the arm's servo protocol, whose servos either follow a first-order model or drive the
MuJoCo twin stepping in real time, and an MJPEG server showing the twin. The emulator's "factory
truth" calibration is its own fixture, ``config/arms/<arm>_emulator_calibration.yaml`` (servo
horns centred; ``default_calibration`` for an arm that ships none): drivers are handed it
explicitly (``VirtualArm.calibration`` or ``.calibration_path``), so ``SerialArm`` reads the
twin's joint angles in radians as it would a real arm's, and no real arm ever picks it up.

Beyond the bus (``RealityGap``) and the camera link (``CameraGap``), a *twin gap* makes the
emulated world itself differ from the training twin, as a user's real setup does: a
randomization spec (``se_robot.sim.randomize``; presets ``config/gaps/<name>.yaml``) drawn once
per emulator session from ``twin_gap_seed`` and kept, scene resets included, moves the camera,
changes its field of view, the light, the colours, adds image noise and blur to the stream, and
changes servo gains, damping, friction and the cube. ``VirtualArm.gap_draw`` is the drawn "truth".
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from se_robot.arm import ArmDescription
from se_robot.config import config_path
from se_robot.hardware.calibration import ArmCalibration, default_calibration, load_calibration
from se_robot.hardware.registers import ServoModel, get_model
from se_robot.hardware.servo_emulator import FirstOrderServos, RealityGap, ServoEmulator
from se_robot.tasks import ResetSample, Task

if TYPE_CHECKING:   # the camera part (OpenCV) is optional: imported where the stream starts
    from se_robot.hardware.mjpeg_server import CameraGap
    from se_robot.sim.randomize import Draw, RandomizationSpec


class TwinServos:
    """Physics backed by ``se_robot.sim.twin.ArmTwin``: goals become the twin's position-servo
    targets and a thread steps it in real time. Torque off is approximated by making a joint's
    target follow its position (the twin has no limp mode).

    With ``gap`` (a randomization spec), one draw from ``gap_seed`` is applied to the twin before
    anything runs and kept for the object's life: ``reset`` and ``place_objects`` never draw again,
    as a real setup does not change between episodes. The draw's ``latency_ticks`` is not applied
    here (the twin's delay line counts its target updates, one per physics step): ``VirtualArm``
    puts it on the bus as a command latency."""

    def __init__(self, arm: ArmDescription, calibration: ArmCalibration, task: str = "reach",
                 rate_hz: float = 250.0, seed: int = 0, gap: RandomizationSpec | None = None, gap_seed: int = 0):
        from se_robot.sim.twin import ArmTwin

        self.arm = arm
        self.cal = calibration
        self.twin = ArmTwin(arm, task)
        self.gap_draw: Draw | None = None if gap is None else self._apply_gap(gap, gap_seed)
        self.twin.reset(np.random.default_rng(seed))
        self.period_s = 1.0 / rate_hz
        self.lock = threading.Lock()
        self._names = arm.joint_names
        self._index = {sid: i for i, sid in enumerate(arm.servo_ids)}
        self._torque = np.zeros(arm.n_joints, dtype=bool)
        self._targets = arm.home.copy()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._renderer = None
        self._renderer_size = (0, 0)
        self._max_effort = np.array([max(arm.joint_limits[n].max_effort, 1e-3) for n in self._names])

    def _apply_gap(self, spec: RandomizationSpec, seed: int) -> Draw:
        from se_robot.sim.randomize import TwinRandomizer, sample

        draw = sample(spec, np.random.default_rng(seed))
        TwinRandomizer(self.twin, spec).apply(draw)
        self.twin.set_action_delay(0)
        return draw

    def reset(self, positions_ticks: dict[int, float]) -> None:
        ticks = np.array([positions_ticks[s] for s in self.arm.servo_ids], dtype=np.float64)
        q = self.cal.ticks_to_rad(ticks, self._names)
        with self.lock:
            self.twin.reset(np.random.default_rng(0), q=q)
            self._targets = q.copy()
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="twin-physics", daemon=True)
            self._thread.start()
            _RUNNING.add(self)

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.period_s):
            now = time.monotonic()
            dt = min(now - last, 0.05)  # after a stall, do not try to catch up in one jump
            last = now
            with self.lock:
                q = self.twin.joint_positions()
                self.twin.set_targets(np.where(self._torque, self._targets, q))
                self.twin.step(dt)

    def set_goal(self, servo_id: int, ticks: float, now: float) -> None:
        i = self._index[servo_id]
        q = self.cal.ticks_to_rad(np.array([ticks]), [self._names[i]])[0]
        with self.lock:
            self._targets[i] = q

    def set_torque(self, servo_id: int, enabled: bool, now: float) -> None:
        i = self._index[servo_id]
        with self.lock:
            self._torque[i] = enabled
            if enabled:
                self._targets[i] = self.twin.joint_positions()[i]

    def state(self, now: float) -> dict[int, tuple[float, float, float]]:
        with self.lock:
            q, dq, eff = self.twin.joint_positions(), self.twin.joint_velocities(), self.twin.joint_efforts()
        offset, direction, _, _ = self.cal._vectors(self._names)
        ticks = offset + direction * q / self.cal.rad_per_tick
        vel = direction * dq / self.cal.rad_per_tick
        load = np.clip(direction * eff / self._max_effort, -1.0, 1.0)
        return {sid: (float(ticks[i]), float(vel[i]), float(load[i])) for sid, i in self._index.items()}

    def place_objects(self, sample: ResetSample) -> None:
        """Put the cube (and target) where ``sample`` says; the arm keeps its pose and goals."""
        with self.lock:
            self.twin.place_objects(sample)

    def render(self, camera: str = "scene", width: int = 640, height: int = 480) -> np.ndarray:
        """Only the scene update holds the physics lock; the (slow, software GL) drawing does not,
        so a camera stream never delays a servo reply."""
        import mujoco

        if self._renderer is None or self._renderer_size != (width, height):
            if self._renderer is not None:
                self._renderer.close()
            self._renderer = mujoco.Renderer(self.twin.model, height=height, width=width)
            self._renderer_size = (width, height)
        with self.lock:
            self._renderer.update_scene(self.twin.data, camera=camera)
        image = self._renderer.render()
        return image if self.twin.image_filter is None else self.twin.image_filter(image)

    def close_renderers(self) -> None:
        """Free GL contexts; must run in the thread that rendered (EGL contexts are per thread)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        with self.lock:
            self.twin.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        _RUNNING.discard(self)


#: twins whose physics thread runs. One left running at interpreter exit would step MuJoCo (which
#: runs without the GIL) while the interpreter frees its model: a segfault after a clean run.
_RUNNING: "weakref.WeakSet[TwinServos]" = weakref.WeakSet()


@atexit.register
def _stop_running_twins() -> None:
    for servos in list(_RUNNING):
        servos.close()


def emulator_calibration_path(arm: ArmDescription) -> Path:
    """The emulator's factory calibration of ``arm``: ``config/arms/<arm>_emulator_calibration.yaml``."""
    return config_path("arms", f"{arm.name}_emulator_calibration.yaml")


def servo_model_for(arm: ArmDescription, protocol: str) -> ServoModel:
    """The arm's own servo model, or a stand-in when emulating the other protocol."""
    if protocol == arm.bus.protocol:
        return get_model(arm.bus.model)
    return get_model("sts3215" if protocol == "feetech" else "xl430")


class VirtualArm:
    """Emulated servos of ``arm`` on a pty, with optional stable symlink and camera stream.

    ``gap`` is the bus's reality gap, ``camera_gap`` the camera link's, ``twin_gap`` the world's
    (a preset name in ``config/gaps/``, a YAML path, a mapping or a spec; twin physics only), drawn
    once from ``twin_gap_seed``. Its ``latency_ticks`` become a command latency on the bus of
    ticks / ``gap_control_hz`` seconds (a tick is one control period, as in the twin's envs).
    """

    def __init__(self, arm: ArmDescription, *, protocol: str | None = None, physics: str = "first_order",
                 calibration: ArmCalibration | str | Path | None = None, gap: RealityGap | None = None,
                 link: str | None = None, camera_port: int | None = None, camera: str = "scene",
                 camera_size: tuple[int, int] = (640, 480), camera_fps: float = 30.0, task: str = "reach",
                 scene_port: int | None = None, camera_gap: CameraGap | None = None,
                 twin_gap: str | Path | dict | RandomizationSpec | None = None, twin_gap_seed: int = 0,
                 gap_control_hz: float = 10.0):
        if physics not in ("first_order", "twin"):
            raise ValueError(f"physics must be first_order or twin, got {physics!r}")
        if camera_port is not None and physics != "twin":
            raise ValueError("a camera stream needs physics='twin' (there is nothing to render otherwise)")
        if twin_gap is not None and physics != "twin":
            raise ValueError("a twin gap needs physics='twin' (first-order servos have no world to change)")
        self.arm = arm
        self.protocol = protocol or arm.bus.protocol
        self.model = servo_model_for(arm, self.protocol)
        self.calibration, self.calibration_path = self._factory_calibration(arm, calibration)
        self.physics_name = physics
        self.twin_gap: RandomizationSpec | None = None
        if twin_gap is not None:
            from se_robot.sim.randomize import load_randomization

            self.twin_gap = load_randomization(twin_gap, kind="gaps")
        self.physics = (TwinServos(arm, self.calibration, task, gap=self.twin_gap, gap_seed=twin_gap_seed)
                        if physics == "twin" else FirstOrderServos())
        self.gap_draw: Draw | None = getattr(self.physics, "gap_draw", None)
        self.gap_latency_s = 0.0 if self.gap_draw is None else self.gap_draw.latency_ticks / gap_control_hz
        if self.gap_latency_s:
            gap = gap or RealityGap()
            gap = dataclasses.replace(gap, command_latency_s=gap.command_latency_s + self.gap_latency_s)
        home_ticks = self.calibration.rad_to_ticks(arm.home, arm.joint_names)
        self.emulator = ServoEmulator(self.protocol, self.model, arm.servo_ids,
                                      initial_ticks=dict(zip(arm.servo_ids, (int(t) for t in home_ticks))),
                                      physics=self.physics, gap=gap)
        self._configure_limits()
        self.link = link
        self.camera_port = camera_port
        self.camera = camera
        self.camera_size = camera_size
        self.camera_fps = camera_fps
        self.camera_gap = camera_gap   # latency, colour and noise of a real camera
        self.camera_server = None
        if scene_port is not None and physics != "twin":
            raise ValueError("a scene service needs physics='twin' (there is no cube otherwise)")
        self.scene_port = scene_port
        self.scene_service = None

    @staticmethod
    def _factory_calibration(arm: ArmDescription, calibration: ArmCalibration | str | Path | None
                             ) -> tuple[ArmCalibration, Path | None]:
        """The calibration the emulated servos were "assembled" with, and its file when there is
        one (what a driver is given with ``--calibration``): the one passed, else the arm's
        emulator fixture, else centred servos for an arm that ships no fixture."""
        if isinstance(calibration, ArmCalibration):
            return calibration.check(arm), None
        path = Path(calibration) if calibration is not None else emulator_calibration_path(arm)
        if calibration is None and not path.exists():
            return default_calibration(arm), None
        return load_calibration(path, arm), path

    def _configure_limits(self) -> None:
        """Write each joint's calibrated range into the servos' limit registers, as a
        commissioned arm would have them (calibrate can read them back)."""
        for name, sid in zip(self.arm.joint_names, self.arm.servo_ids):
            j = self.calibration.joints[name]
            self.emulator.set_register(sid, "Min_Position_Limit", max(0, j.min_ticks))
            self.emulator.set_register(sid, "Max_Position_Limit", max(0, j.max_ticks))

    @property
    def port(self) -> str:
        """The path clients open: the symlink when one was asked for, else the pty."""
        return self.link or self.emulator.port

    @property
    def camera_url(self) -> str | None:
        return None if self.camera_server is None else f"{self.camera_server.url}"

    def start(self) -> "VirtualArm":
        self.emulator.start()
        if self.link:
            link = Path(self.link)
            if link.is_symlink() or link.exists():
                if not link.is_symlink():
                    raise FileExistsError(f"{link} exists and is not a symlink; refusing to replace it")
                link.unlink()
            os.symlink(self.emulator.port, link)
        if self.camera_port is not None:
            try:
                from se_robot.hardware.mjpeg_server import MjpegServer
            except ImportError as e:  # the camera part is optional; say what is missing
                raise RuntimeError(f"camera stream unavailable: {e}; pip install opencv-python") from e
            width, height = self.camera_size
            self.camera_server = MjpegServer(lambda: self.physics.render(self.camera, width, height),
                                             port=self.camera_port, fps=self.camera_fps, gap=self.camera_gap,
                                             on_producer_exit=self.physics.close_renderers).start()
        if self.scene_port is not None:
            from se_robot.hardware.scene_service import SceneService

            self.scene_service = SceneService(self.physics.twin.task, self.place_objects, port=self.scene_port).start()
        return self

    @property
    def scene_url(self) -> str | None:
        """Where another process's env asks for the scene to be restored (``operator=`` this URL)."""
        return None if self.scene_service is None else self.scene_service.url

    def stop(self) -> None:
        if self.scene_service is not None:
            self.scene_service.stop()
            self.scene_service = None
        if self.camera_server is not None:
            self.camera_server.stop()
            self.camera_server = None
        self.emulator.stop()
        if self.link and Path(self.link).is_symlink():
            Path(self.link).unlink()

    def __enter__(self) -> "VirtualArm":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def place_objects(self, sample: ResetSample) -> None:
        """Move the twin's cube and target (the camera then shows them there); twin physics only."""
        if not isinstance(self.physics, TwinServos):
            raise ValueError("placing objects needs physics='twin' (first-order servos have no scene)")
        self.physics.place_objects(sample)

    def scene_operator(self) -> "ScriptedSceneOperator":
        """An operator for ``make_env(..., operator=)`` that restores this twin's scene unattended."""
        return ScriptedSceneOperator(self)

    def joint_positions_rad(self) -> np.ndarray:
        """Ground truth from the physics (what the servos' encoders would read, noise-free)."""
        st = self.physics.state(time.monotonic())
        ticks = np.array([st[s][0] for s in self.arm.servo_ids])
        return self.calibration.ticks_to_rad(ticks, self.arm.joint_names)


class ScriptedSceneOperator:
    """The emulator's stand-in for the person who puts the cube back between episodes.

    Asked to restore (``se_robot.envs.operator.SceneOperator``), it draws a pose from the task's
    reset distribution with the env's generator and places the cube there in the twin behind the
    pty, so the camera the env reads shows it. ``requests`` counts the calls, ``messages`` keeps them.
    """

    def __init__(self, virtual: VirtualArm):
        self.virtual = virtual
        self.requests = 0
        self.messages: list[str] = []

    def restore(self, task: Task, rng: np.random.Generator, message: str) -> bool:
        self.requests += 1
        self.messages.append(message)
        self.virtual.place_objects(task.sample_reset(rng))
        return True


def describe_gap(draw: Draw, latency_s: float) -> str:
    """The drawn twin gap in words and units: what the emulated "real" setup is."""
    def v(a: np.ndarray) -> str:
        return "(" + ", ".join(f"{x:+.3f}" for x in a) + ")"

    return "\n".join([
        f"  camera: moved {v(draw.camera_pos_m)} m (world x, y, z), rotated {v(draw.camera_rot_rad)} rad "
        f"(own x, y, z), fovy {draw.camera_fovy_deg:+.2f} deg",
        f"  light: tilted {v(draw.light_tilt_rad)} rad (world x, y), intensity x{draw.light_intensity:.3f}",
        f"  colours (RGB, 0..1): table {v(draw.table_rgb)}, cube {v(draw.cube_rgb)}, goal {v(draw.goal_rgb)}",
        f"  image: noise std {draw.image_noise_std:.2f} (0-255), blur sigma {draw.image_blur_sigma_px:.2f} px",
        f"  servos: kp x{draw.servo_kp:.3f}, damping x{draw.joint_damping:.3f}, "
        f"friction {draw.joint_friction_nm:+.4f} N*m, "
        f"latency {draw.latency_ticks} ticks ({latency_s * 1e3:.0f} ms on the bus)",
        f"  cube: mass x{draw.cube_mass:.3f}, size x{draw.cube_size:.3f}, friction x{draw.cube_friction:.3f}",
        f"  scene: table texture {draw.table_texture:.2f} (0 plain, 1 pattern only), {draw.distractors} distractors; "
        f"servo deadband {draw.servo_deadband_rad:.4f} rad",
    ])


__all__ = ["VirtualArm", "ScriptedSceneOperator", "TwinServos", "FirstOrderServos", "RealityGap", "describe_gap",
           "emulator_calibration_path", "servo_model_for"]
