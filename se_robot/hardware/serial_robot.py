"""``SerialRobot``: a servo-bus arm and its OpenCV cameras behind the ``se_robot.robot.Robot`` interface.

``SerialArm`` stays the lowest layer: its own safety filter runs inside every write of a goal, so
nothing above (this class, ``ArmEnv``, a teleop session) can move the arm outside the envelope.
This class adds what an environment needs on top: homing, the watchdog started with the bus, and
camera frames newer than a command (or the newest one, flagged stale, when none comes in time).

The clock is ``time.monotonic()``, which is also what the servo replies and the camera threads
stamp with, so ``capture(newer_than_s=robot.now())`` compares like with like.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Any

import numpy as np

from se_robot.arm import ArmDescription, load_arm
from se_robot.config import config_path
from se_robot.hardware.camera import CameraTimeout, OpenCVCamera, load_camera_config
from se_robot.hardware.serial_arm import SerialArm
from se_robot.homing import drive_home
from se_robot.robot import Frame, RobotState
from se_robot.safety import SafeCommand


def camera_yaml_path(spec: str | Path) -> str:
    """The YAML file a camera spec names: a path as given, or ``config/cameras/<name>.yaml``."""
    return str(spec) if str(spec).endswith((".yaml", ".yml")) else str(config_path("cameras", f"{spec}.yaml"))


def make_camera(spec: str | Path | OpenCVCamera | None, source: int | str | None = None) -> OpenCVCamera | None:
    """An unconnected camera from a name in ``config/cameras``, a YAML path, or an instance.

    ``source`` overrides the YAML's source (an index, a device, the emulator's MJPEG URL).
    """
    if spec is None or isinstance(spec, OpenCVCamera):
        return spec
    cfg = load_camera_config(spec)
    if source is not None:
        cfg = dataclasses.replace(cfg, source=source)
    return OpenCVCamera.from_config(cfg)


class SerialRobot:
    """``SerialArm`` on ``port`` plus cameras by view name (``{"scene": cam, "wrist": cam}``).

    Nothing is opened until ``connect``, so spaces can be built and checked without the rig.
    ``control_hz`` is the rate homing commands at; ``watchdog`` starts SerialArm's watchdog at
    connect, so the arm holds (or goes limp, per the arm's YAML) if this process stalls.
    ``serial_options`` go to ``SerialArm`` (``arm_id``: whose stored calibration to use when no
    ``calibration`` is given; ``timeout_s``, ``retries``, ``disconnect_torque``).
    """

    realtime = True
    has_object_state = False

    def __init__(self, arm: str | ArmDescription, port: str, calibration: Any = None, *,
                 cameras: dict[str, OpenCVCamera] | None = None, control_hz: float = 10.0,
                 watchdog: bool = True, **serial_options: Any):
        self.arm: ArmDescription = load_arm(arm) if isinstance(arm, str) else arm
        self.device = SerialArm(self.arm, port, calibration, **serial_options)
        self.estop = self.device.estop
        self.cameras = {name: cam for name, cam in (cameras or {}).items() if cam is not None}
        self.camera_names = tuple(self.cameras)
        self.control_hz = control_hz
        self.watchdog = watchdog

    @property
    def port(self) -> str:
        return self.device.port

    @property
    def calibration(self) -> Any:
        return self.device.calibration

    # ------------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        if not self.device.is_connected:
            self.device.connect()
            # Powered from the start, holding where the servos are (goal = present position first):
            # a node that only connects must still move on its first command.
            self.device.torque_on()
            if self.watchdog:
                self.device.start_watchdog()
        for cam in self.cameras.values():
            if not cam.is_connected:
                cam.connect()

    def close(self) -> None:
        for cam in self.cameras.values():
            cam.disconnect()
        self.device.disconnect()

    @property
    def is_connected(self) -> bool:
        return self.device.is_connected

    def now(self) -> float:
        return time.monotonic()

    # ------------------------------------------------------------------ joints
    def read(self) -> RobotState:
        st = self.device.read_state()
        return RobotState(st.positions, st.velocities, st.efforts, st.stamp)

    def send(self, q_rad: np.ndarray) -> SafeCommand:
        return self.device.send_joint_targets(q_rad)

    def hold(self, reason: str) -> SafeCommand:
        return self.device.hold(reason)

    def trigger_estop(self, reason: str) -> None:
        """Latch, then goal = present position so the servos stop where they are."""
        self.estop.latch(reason)
        self.device.hold("estop")

    def advance(self, dt_s: float) -> None:
        """The world moves by itself; pacing is the caller's ``ControlClock``."""

    def prefetch(self) -> None:
        """Nothing to do ahead: a bus read asks the servos at read time."""

    def home(self, tolerance_rad: float, timeout_s: float) -> None:
        """Torque on (goal = present first, so nothing jumps), then drive home at ``control_hz``.

        Torque comes on here because homing is the first motion of every episode; it raises
        ``SafetyFault`` while the e-stop is latched.
        """
        self.device.torque_on()
        drive_home(self, self._homing_kinematics, tolerance_rad, timeout_s, 1.0 / self.control_hz, f" on {self.port}")

    @functools.cached_property
    def _homing_kinematics(self) -> Any:
        """Homing's own (Kinematics is not thread-safe), made once: a few ms on every reset otherwise."""
        from se_robot.sim.kinematics import Kinematics

        return Kinematics(self.arm)

    # ------------------------------------------------------------------ cameras and scene
    def capture(self, camera: str, size: int, newer_than_s: float, timeout_s: float) -> Frame:
        """A frame grabbed after ``newer_than_s``; when none comes in ``timeout_s``, the newest
        one, flagged stale. Native resolution: the caller crops and resizes to ``size``."""
        cam = self.cameras.get(camera)
        if cam is None:
            raise ValueError(f"no {camera!r} camera on this arm; it has: {', '.join(self.camera_names) or 'none'}")
        try:
            image, stamp = cam.read_newer_than(newer_than_s, timeout_s)
            return Frame(image, stamp, stale=False)
        except CameraTimeout:
            image, stamp = cam.read(timeout_s=timeout_s)
            return Frame(image, stamp, stale=True)

    def object_state(self) -> None:
        """A real table has no privileged positions: a detector on the scene camera finds them."""
        return None

    def reset_scene(self, rng: np.random.Generator) -> None:
        """Objects on a real table are put back by a person or a script, not by the driver."""
        return None

    def diagnostics(self) -> dict[str, float]:
        out = self.device.diagnostics()
        for name, cam in self.cameras.items():
            # the camera's own keys are camera/<counter>; the view name goes in between
            out.update({f"camera/{name}/{k.split('/', 1)[-1]}": float(v) for k, v in cam.stats().items()})
        return out


def make_serial_robot(arm: str | ArmDescription = "so101", port: str = "/dev/ttyUSB0", calibration: Any = None, *,
                      scene_camera: str | Path | OpenCVCamera | None = "usb_scene",
                      camera_source: int | str | None = None,
                      wrist_camera: str | Path | OpenCVCamera | None = None,
                      control_hz: float = 10.0, watchdog: bool = True,
                      **serial_options: Any) -> tuple[SerialRobot, str | None]:
    """A ``SerialRobot`` with its cameras built from names or YAML paths (``camera_source``
    overrides the scene camera's source), and the scene camera's YAML path (where its detector
    calibration lives; None when the camera was given as an object or not at all)."""
    cameras = {"scene": make_camera(scene_camera, camera_source), "wrist": make_camera(wrist_camera)}
    named = scene_camera is not None and not isinstance(scene_camera, OpenCVCamera)
    scene_yaml = camera_yaml_path(scene_camera) if named else None
    robot = SerialRobot(arm, port, calibration, cameras=cameras, control_hz=control_hz, watchdog=watchdog,
                        **serial_options)
    return robot, scene_yaml
