"""The real arm as a Gymnasium env: the twin's tasks, spaces and actions over ``SerialArm`` + camera.

Same observation and action spaces as ``se_robot/Sim*-v0`` (``se_robot.envs.spaces``), same task
code (``se_robot.tasks``), same action decoding (``ActionDecoder``, ee_delta through
``Kinematics``). What differs is where the task's quantities come from: joints from the servo bus,
the gripper from forward kinematics, the cube and target from a colour detector on the scene
camera (``se_robot.envs.detector``). The reach target is virtual: sampled by the env, like the
twin's, since nothing marks a point in the air on a real table.

Control-rate timing policy (one step = one tick of a fixed-rate clock of period 1/control_hz):

1. ``step(action)`` decodes the action and sends it at once (``SerialArm.send_joint_targets``,
   which applies the safety filter); the time it went out is ``t_cmd``.
2. It then sleeps until the clock's next tick. If that tick has already passed (the caller, the
   bus or the camera took longer than a period) the step is an *overrun*: it is counted, the
   lateness is reported, and the clock restarts from now instead of bursting to catch up.
3. At the tick it waits for a camera frame captured after ``t_cmd`` (so the image never predates
   the command it is judged by), at most ``frame_timeout_s``; a frame that does not come makes
   the step *stale* (counted; the newest older frame is used).
4. It reads the joint state (one sync read), runs the detector, and builds obs, reward, success.

So commands go out one period apart whenever the policy is faster than the period, and every
observation is sampled at a tick. ``info`` carries ``timing/overrun``, ``timing/overruns``
(episode count), ``timing/late_s``, ``camera/frame_age_s``, ``camera/stale``,
``camera/stale_frames`` and the safety clip of the command (``safety/clipped``, ``safety/held``,
``safety/reasons``), besides ``is_success``.

Reset drives the arm to ``arm.home`` through the safety filter at the control rate, and fails
naming every joint that did not get within ``home_tolerance_rad`` in ``home_timeout_s``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import cv2
import gymnasium as gym
import numpy as np

from se_robot.arm import ArmDescription
from se_robot.config import config_path
from se_robot.envs.detector import ColorDetector, DetectorCalibration, Detections, load_calibration
from se_robot.envs.spaces import (ActionDecoder, action_space, build_obs, build_state, observation_space,
                                  resolve_env_parts)
from se_robot.tasks import Task, TaskState
from se_robot.hardware.camera import CameraError, CameraTimeout, OpenCVCamera, load_camera_config


class HomingError(RuntimeError):
    """Reset could not bring the arm home; the message names the joints and their errors."""


class ControlClock:
    """Ticks at ``t0 + k * period``; a missed tick is an overrun and restarts the schedule."""

    def __init__(self, period_s: float):
        self.period_s = period_s
        self.next_tick = time.monotonic() + period_s

    def restart(self) -> None:
        self.next_tick = time.monotonic() + self.period_s

    def wait(self) -> float:
        """Sleep until the next tick; returns how late we already were (0 when on time)."""
        now = time.monotonic()
        late_s = now - self.next_tick
        if late_s > 0:
            self.next_tick = now + self.period_s
            return late_s
        time.sleep(self.next_tick - now)
        self.next_tick += self.period_s
        return 0.0


def center_square(frame: np.ndarray, size: int) -> np.ndarray:
    """Centre crop to a square and resize: what the twin renders for a square image of the same
    camera (MuJoCo keeps the vertical field of view, so a square render is a horizontal crop)."""
    h, w = frame.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    crop = frame[y0:y0 + side, x0:x0 + side]
    if side == size:
        return np.ascontiguousarray(crop)
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


class HardwareArmEnv(gym.Env):
    """The task on the real arm (or on ``VirtualArm``, the byte-level emulator); see module doc.

    ``port``: the arm's serial port. ``scene_camera``: as a name in ``config/cameras``, a YAML
    path, or an ``OpenCVCamera``; None for a state-only reach. ``wrist_camera``: likewise, for
    ``camera="wrist"`` pixels (``camera`` is the EnvConfig option choosing which camera makes the
    pixels, as in the sim env). ``camera_source`` overrides the
    YAML's source (the emulator's URL). ``detector``: calibration (name/path/object); by default
    the ``detector`` section of the camera's YAML. ``calibration``: the arm's servo calibration.
    ``watchdog``: run ``SerialArm``'s watchdog (hold when commands stop for the arm's
    ``safety.watchdog_timeout_s``).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, task: str | Task = "reach", arm: str | ArmDescription = "so101",
                 port: str = "/dev/ttyUSB0", calibration: Any = None,
                 scene_camera: str | OpenCVCamera | None = "usb_scene", camera_source: int | str | None = None,
                 detector: str | DetectorCalibration | None = None, wrist_camera: OpenCVCamera | str | None = None,
                 home_tolerance_rad: float = 0.05, home_timeout_s: float = 8.0, frame_timeout_s: float = 0.5,
                 object_timeout_s: float = 5.0, watchdog: bool = True, render_mode: str | None = None,
                 **options: Any):
        from se_robot.hardware.serial_arm import SerialArm
        from se_robot.sim.kinematics import Kinematics

        self.cfg, self.arm, self.task = resolve_env_parts(task, arm, render_mode, options)
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": self.cfg.control_hz}
        self.kin = Kinematics(self.arm)
        self.robot = SerialArm(self.arm, port, calibration)
        self.camera, camera_yaml = self._make_camera(scene_camera, camera_source)
        self.wrist_camera, _ = self._make_camera(wrist_camera, None)
        self._check_cameras()
        self.detector = self._make_detector(detector, camera_yaml)
        self.decoder = ActionDecoder(self.arm, self.kin, self.cfg)
        self.observation_space = observation_space(self.arm, self.task, self.cfg)
        self.action_space = action_space(self.arm, self.cfg)
        self.home_tolerance_rad = home_tolerance_rad
        self.home_timeout_s = home_timeout_s
        self.frame_timeout_s = frame_timeout_s
        self.object_timeout_s = object_timeout_s
        self.watchdog = watchdog
        self.held_max_gripper = 0.6  # gripper opening (0 closed .. 1 open) below which a lift may hold
        self.clock = ControlClock(1.0 / self.cfg.control_hz)
        self._q_cmd = self.arm.home.copy()
        self._frame: np.ndarray | None = None
        self._wrist_frame: np.ndarray | None = None
        self._q = self.arm.home.copy()
        self._qd = np.zeros(self.arm.n_joints)
        self._cube = np.full(3, np.nan)
        self._target = np.full(3, np.nan)
        self._cube_held = False
        self._seen: Detections | None = None
        self.counters = {"overruns": 0, "stale_frames": 0}

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def _make_camera(camera, source) -> tuple[OpenCVCamera | None, str | None]:
        if camera is None or isinstance(camera, OpenCVCamera):
            return camera, None
        cfg = load_camera_config(camera)
        yaml_path = camera if str(camera).endswith((".yaml", ".yml")) else str(config_path("cameras", f"{camera}.yaml"))
        if source is not None:
            cfg = dataclasses.replace(cfg, source=source)
        cam = OpenCVCamera.from_config(cfg)
        return cam, yaml_path

    def _check_cameras(self) -> None:
        needs_pixels = self.cfg.obs_mode != "state"
        if self.task.name != "reach" and self.camera is None:
            raise ValueError(f"task {self.task.name!r} needs the scene camera (the cube is found by the detector); "
                             "pass scene_camera=")
        if needs_pixels and self.cfg.camera == "scene" and self.camera is None:
            raise ValueError(f"obs_mode {self.cfg.obs_mode!r} with camera 'scene' needs scene_camera=")
        if needs_pixels and self.cfg.camera == "wrist" and self.wrist_camera is None:
            raise ValueError(f"obs_mode {self.cfg.obs_mode!r} with camera 'wrist' needs wrist_camera=")

    def _make_detector(self, detector, camera_yaml: str | None) -> ColorDetector | None:
        if isinstance(detector, DetectorCalibration):
            return ColorDetector(detector)
        if detector is not None:
            path = detector if str(detector).endswith((".yaml", ".yml")) else config_path("cameras", f"{detector}.yaml")
            return ColorDetector(load_calibration(path))
        if camera_yaml is not None:
            from se_robot.config import read_yaml

            if "detector" in read_yaml(camera_yaml):
                return ColorDetector(load_calibration(camera_yaml))
        if self.task.name != "reach":
            raise ValueError(f"task {self.task.name!r} needs a detector calibration (detector=, or a "
                             "`detector` section in the camera YAML)")
        return None

    # ------------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        """Open the bus and the cameras (done by the first reset if not called)."""
        if not self.robot.is_connected:
            self.robot.connect()
            if self.watchdog:  # if this process stalls mid-episode, the arm holds (or goes limp)
                self.robot.start_watchdog()
        for cam in (self.camera, self.wrist_camera):
            if cam is not None and not cam.is_connected:
                cam.connect()

    def close(self) -> None:
        for cam in (self.camera, self.wrist_camera):
            if cam is not None:
                cam.disconnect()
        self.robot.disconnect()

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.connect()
        self.robot.torque_on()
        self._go_home()
        self._q_cmd = self.arm.home.copy()
        sample = self.task.sample_reset(self.np_random)
        self._target = sample.target_pos.copy()
        self._cube = sample.cube_pos.copy() if self.task.name == "reach" else np.full(3, np.nan)
        self._sense(t_cmd=time.monotonic())
        if self.task.name != "reach":
            self._wait_for_objects()
        self.counters = {"overruns": 0, "stale_frames": 0}
        self.clock.restart()
        s = self.object_state()
        return self._observe(s), self._info(s, None, 0.0, False)

    def step(self, action):
        target = self.decoder.decode(action, self._q_cmd)
        cmd = self.robot.send_joint_targets(target)
        t_cmd = time.monotonic()
        self._q_cmd = cmd.positions
        late_s = self.clock.wait()
        if late_s > 0:
            self.counters["overruns"] += 1
        stale = self._sense(t_cmd)
        s = self.object_state()
        success = bool(self.task.success(s))
        reward = float(self.task.reward(s, self.cfg.reward_type))
        terminated = success and self.task.cfg.terminate_on_success
        return self._observe(s), reward, terminated, False, self._info(s, cmd, late_s, stale)

    def render(self):
        if self.render_mode == "rgb_array":
            return None if self._frame is None else self._frame.copy()
        return None

    # ------------------------------------------------------------------ sensing
    def _sense(self, t_cmd: float) -> bool:
        """Frames newer than the command (if they come in time), joint state, detections."""
        stale = False
        for cam, attr in ((self.camera, "_frame"), (self.wrist_camera, "_wrist_frame")):
            if cam is None:
                continue
            try:
                frame, _ = cam.read_newer_than(t_cmd, self.frame_timeout_s)
            except CameraTimeout:
                stale = True
                frame, _ = cam.read(timeout_s=self.frame_timeout_s)
            setattr(self, attr, frame)
        if stale:
            self.counters["stale_frames"] += 1
        state = self.robot.read_state()
        self._q, self._qd = state.positions, state.velocities
        if self.detector is not None and self._frame is not None:
            self._update_objects(self.detector.detect(self._frame))
        return stale

    def _update_objects(self, det: Detections) -> None:
        """Keep the last known positions when a blob is hidden (e.g. the cube under the gripper)."""
        self._seen = det
        if self.task.name == "reach":
            return
        if det.cube is not None:
            # Only a lift can raise the cube, and only with the jaws closing on it; otherwise the
            # cube is on the table (a gripper hovering near the viewing ray must not lift it).
            may_hold = self.task.name == "lift" and self.arm.gripper_fraction(self._q) < self.held_max_gripper
            ee = self.kin.fk(self._q) if may_hold else None
            self._cube, self._cube_held = self.detector.cube_position(det.cube, self._frame.shape, ee)
        if self.task.name == "push" and det.target is not None:
            self._target = np.array([*det.target.table_xy_m, 0.0])

    def _wait_for_objects(self) -> None:
        deadline = time.monotonic() + self.object_timeout_s
        while np.isnan(self._cube).any() and time.monotonic() < deadline:
            self._sense(time.monotonic())
        if np.isnan(self._cube).any():
            raise CameraError(f"reset: the {self.task.name} task needs the cube, but the detector found no "
                              f"cube-coloured blob in {self.object_timeout_s:.1f} s; place the cube in view "
                              "or check the HSV ranges in the camera YAML")

    def _go_home(self) -> None:
        """Command home every tick (the safety filter limits each step) until within tolerance."""
        home = self.arm.home
        clock = ControlClock(1.0 / self.cfg.control_hz)
        deadline = time.monotonic() + self.home_timeout_s
        while True:
            q = self.robot.read_state().positions
            err = np.abs(q - home)
            if np.all(err <= self.home_tolerance_rad):
                return
            if time.monotonic() > deadline:
                far = [f"{name} at {q[i]:+.3f} rad (home {home[i]:+.3f}, off by {err[i]:.3f})"
                       for i, name in enumerate(self.arm.joint_names) if err[i] > self.home_tolerance_rad]
                raise HomingError(f"reset: arm on {self.robot.port} did not reach home within "
                                  f"{self.home_timeout_s:.1f} s (tolerance {self.home_tolerance_rad} rad): "
                                  + "; ".join(far))
            cmd = self.robot.send_joint_targets(home)
            if cmd.held and "estop" in cmd.reasons:
                raise HomingError(f"reset: e-stop latched ({self.robot.estop.reason}); reset it before homing")
            clock.wait()

    # ------------------------------------------------------------------ observations
    def object_state(self) -> TaskState:
        """What the task sees: FK of the measured joints, detected (or virtual) objects."""
        return TaskState(self.kin.fk(self._q), np.float64(self.arm.gripper_fraction(self._q)),
                         self._cube.copy(), self._target.copy())

    def _observe(self, s: TaskState):
        cfg = self.cfg
        pixels = None
        if cfg.obs_mode != "state":
            frame = self._frame if cfg.camera == "scene" else self._wrist_frame
            pixels = center_square(frame, cfg.image_size)
        features = self.task.features(s).astype(np.float64) if cfg.obs_mode == "state" else None
        state = build_state(self._q, self._qd, float(s.gripper), s.ee_pos, features)
        return build_obs(cfg, state, pixels)

    def _info(self, s: TaskState, cmd, late_s: float, stale: bool) -> dict:
        det = self._seen
        return {
            "is_success": bool(self.task.success(s)),
            "safety/clipped": bool(cmd.clipped) if cmd else False,
            "safety/held": bool(cmd.held) if cmd else False,
            "safety/reasons": ",".join(cmd.reasons) if cmd else "",
            "timing/overrun": late_s > 0,
            "timing/late_s": float(late_s),
            "timing/overruns": self.counters["overruns"],
            "camera/stale": bool(stale),
            "camera/stale_frames": self.counters["stale_frames"],
            "camera/frame_age_s": self.camera.frame_age_s if self.camera is not None else float("nan"),
            "detector/cube_visible": bool(det is not None and det.cube is not None),
            "detector/target_visible": bool(det is not None and det.target is not None),
            "detector/cube_held": self._cube_held,
        }

    @property
    def commanded_joints(self) -> np.ndarray:
        return self._q_cmd.copy()


def make_hardware_env(task: str = "reach", **options: Any) -> gym.Env:
    """``HardwareArmEnv`` with the task's episode limit (what ``make_env(backend="hardware")`` calls)."""
    env = HardwareArmEnv(task, **options)
    return gym.wrappers.TimeLimit(env, max_episode_steps=env.task.cfg.max_episode_steps)
