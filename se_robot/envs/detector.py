"""Where the cube and the target are on the table, from one camera frame (HSV colour segmentation).

Why colour and a homography: the real arm has no motion capture, so reward and success on hardware
need the object positions from the camera the policy already uses. A saturated coloured cube and a
coloured target on a matte table separate cleanly in HSV; a plane-to-plane homography calibrated
once maps a blob's pixel centroid to (x, y) in the arm's base frame on the plane where the object's
centre lies (``plane_z_m``, the cube's half height). Forward kinematics gives the gripper, so the
task's reward can be computed from these positions exactly as the twin computes it from its state.

Calibration is a YAML file (``config/cameras/<camera>.yaml``, key ``detector``) holding the 3x3
pixel -> table homography at a stated image size, and optionally the 3x4 projection matrix used to
draw base-frame points into the image. For the twin it is computed from the MuJoCo camera
(``calibration_from_mujoco``); for a real camera, place the cube at four or more known positions
and fit ``homography_from_points``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from se_robot.config import ConfigError, config_path, from_dict, option, read_yaml


@dataclass(frozen=True)
class HsvRange:
    """An OpenCV HSV box (H 0..179, S and V 0..255); ``h_min > h_max`` wraps through red."""

    h_min: int = option(0, range=(0, 179))
    h_max: int = option(179, range=(0, 179))
    s_min: int = option(80, range=(0, 255))
    s_max: int = option(255, range=(0, 255))
    v_min: int = option(40, range=(0, 255))
    v_max: int = option(255, range=(0, 255))

    def mask(self, hsv: np.ndarray) -> np.ndarray:
        lo_sv, hi_sv = (self.s_min, self.v_min), (self.s_max, self.v_max)
        if self.h_min <= self.h_max:
            return cv2.inRange(hsv, (self.h_min, *lo_sv), (self.h_max, *hi_sv))
        return cv2.inRange(hsv, (self.h_min, *lo_sv), (179, *hi_sv)) | cv2.inRange(hsv, (0, *lo_sv), (self.h_max, *hi_sv))


@dataclass(frozen=True)
class DetectorCalibration:
    """Colour ranges and the camera-to-table mapping of one camera.

    Give either ``homography`` (a real camera, fitted with ``homography_from_points``) or
    ``mujoco_camera`` (the twin: the mapping is computed from that MuJoCo camera when loaded, so it
    follows the MJCF if the camera is moved).
    """

    image_width: int = option(help="frame width the homography is for (px)", range=(1, 8192))
    image_height: int = option(help="frame height the homography is for (px)", range=(1, 8192))
    homography: tuple[tuple[float, float, float], ...] | None = option(
        None, help="3x3 rows: pixel (u, v, 1) -> base-frame (x, y, 1) on the plane z = plane_z_m")
    mujoco_camera: str | None = option(None, help="compute homography and projection from this camera of the twin")
    mujoco_arm: str = option("so101", help="arm whose scene holds mujoco_camera")
    plane_z_m: float = option(0.015, help="height of the plane the homography maps to (cube centre)")
    target_plane_z_m: float = option(0.0, help="height of the target marker (a disc on the table); used "
                                     "when `projection` is known, else the homography's plane is used")
    projection: tuple[tuple[float, float, float, float], ...] | None = option(
        None, help="optional 3x4 rows: base-frame (x, y, z, 1) -> pixel, for lifted cubes and drawing")
    cube: HsvRange = option(default_factory=lambda: HsvRange(45, 85, 90, 255, 40, 255), help="cube colour")
    target: HsvRange = option(default_factory=lambda: HsvRange(100, 130, 90, 255, 60, 255), help="target colour")
    min_area_frac: float = option(2e-4, help="smallest blob, as a fraction of the image area", range=(0.0, 0.5))

    def __post_init__(self) -> None:
        if self.homography is None and self.mujoco_camera is None:
            raise ValueError("give `homography` (a calibrated camera) or `mujoco_camera` (the twin)")
        if self.homography is not None and (len(self.homography) != 3 or any(len(r) != 3 for r in self.homography)):
            raise ValueError("homography must be 3 rows of 3 numbers")
        if self.projection is not None and (len(self.projection) != 3 or any(len(r) != 4 for r in self.projection)):
            raise ValueError("projection must be 3 rows of 4 numbers")

    def resolved(self, model=None) -> "DetectorCalibration":
        """A copy with homography and projection filled from ``mujoco_camera`` (if set)."""
        if self.mujoco_camera is None:
            return self
        if model is None:
            from se_robot.arm import load_arm
            from se_robot.sim.mjcf import build_model

            model = build_model(load_arm(self.mujoco_arm), scene=True)
        P = projection_from_mujoco(model, None, self.mujoco_camera, self.image_width, self.image_height)
        H = homography_for_plane(P, self.plane_z_m)
        return dataclasses.replace(self, mujoco_camera=None, homography=_rows(H), projection=_rows(P))

    @property
    def H(self) -> np.ndarray:  # noqa: N802 - the usual name of a homography
        return np.asarray(self.homography, dtype=np.float64)

    @property
    def P(self) -> np.ndarray | None:  # noqa: N802
        return None if self.projection is None else np.asarray(self.projection, dtype=np.float64)


@dataclass(frozen=True)
class Blob:
    pixel: tuple[float, float]   # centroid (u, v) in the frame as given
    area_px: float
    table_xy_m: tuple[float, float]  # base-frame position on the calibration plane


@dataclass(frozen=True)
class Detections:
    cube: Blob | None
    target: Blob | None
    extras: dict = field(default_factory=dict)


class ColorDetector:
    """Finds the largest cube-coloured and target-coloured blobs and maps them to the table."""

    def __init__(self, calibration: DetectorCalibration):
        calibration = calibration.resolved()
        self.calibration = calibration
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        P = calibration.P
        self._target_H = calibration.H if P is None else homography_for_plane(P, calibration.target_plane_z_m)

    def detect(self, frame_rgb: np.ndarray) -> Detections:
        cal = self.calibration
        h, w = frame_rgb.shape[:2]
        if abs(w * cal.image_height - h * cal.image_width) > 0.01 * w * cal.image_height:
            raise ValueError(f"frame {w}x{h} has another aspect ratio than the calibration "
                             f"{cal.image_width}x{cal.image_height}; the mapping only rescales, it cannot crop")
        hsv = cv2.cvtColor(np.ascontiguousarray(frame_rgb), cv2.COLOR_RGB2HSV)
        return Detections(cube=self._blob(hsv, self.calibration.cube, self.calibration.H),
                          target=self._blob(hsv, self.calibration.target, self._target_H))

    def pixel_to_table(self, u: float, v: float, frame_shape: tuple[int, ...],
                       H: np.ndarray | None = None) -> tuple[float, float]:
        """Base-frame (x, y) on the calibration plane of pixel (u, v) in a frame of ``frame_shape``."""
        cal = self.calibration
        su, sv = cal.image_width / frame_shape[1], cal.image_height / frame_shape[0]
        p = (cal.H if H is None else H) @ np.array([u * su, v * sv, 1.0])
        return float(p[0] / p[2]), float(p[1] / p[2])

    def cube_position(self, blob: Blob, frame_shape: tuple[int, ...], ee_pos_m: np.ndarray | None = None,
                      held_within_m: float = 0.04) -> tuple[np.ndarray, bool]:
        """The cube centre (3,) in the base frame, and whether it was taken to be in the gripper.

        One camera fixes the cube only up to its viewing ray. On the table the ray meets the plane
        z = ``plane_z_m``. If the ray passes within ``held_within_m`` of the gripper (forward
        kinematics) above that plane, the cube is taken to be held and placed at the ray's point
        nearest the gripper, which is what lets the lift task measure height from one camera.
        """
        on_table = np.array([*blob.table_xy_m, self.calibration.plane_z_m])
        P = self.calibration.P
        if ee_pos_m is None or P is None:
            return on_table, False
        su = self.calibration.image_width / frame_shape[1]
        sv = self.calibration.image_height / frame_shape[0]
        u, v = blob.pixel[0] * su, blob.pixel[1] * sv
        M, p4 = P[:, :3], P[:, 3]
        centre = -np.linalg.solve(M, p4)                      # camera centre in the base frame
        direction = np.linalg.solve(M, np.array([u, v, 1.0]))
        direction /= np.linalg.norm(direction)
        ee = np.asarray(ee_pos_m, dtype=np.float64)
        along = float(np.dot(ee - centre, direction))
        nearest = centre + along * direction
        held = (np.linalg.norm(nearest - ee) < held_within_m
                and nearest[2] > self.calibration.plane_z_m + 0.5 * held_within_m)
        return (nearest if held else on_table), bool(held)

    def _blob(self, hsv: np.ndarray, colour: HsvRange, H: np.ndarray) -> Blob | None:
        mask = colour.mask(hsv)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self._kernel)
        n, _, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if n <= 1:
            return None
        best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        area = float(stats[best, cv2.CC_STAT_AREA])
        if area < self.calibration.min_area_frac * hsv.shape[0] * hsv.shape[1]:
            return None
        u, v = (float(c) for c in centroids[best])
        return Blob(pixel=(u, v), area_px=area, table_xy_m=self.pixel_to_table(u, v, hsv.shape, H))


# ------------------------------------------------------------------------------------------
# Calibration
# ------------------------------------------------------------------------------------------

def homography_for_plane(P: np.ndarray, z_m: float) -> np.ndarray:
    """Pixel -> (x, y) homography of the plane z = ``z_m`` for a 3x4 projection matrix."""
    plane_to_pixel = np.c_[P[:, 0], P[:, 1], P[:, 2] * z_m + P[:, 3]]
    H = np.linalg.inv(plane_to_pixel)
    return H / H[2, 2]


def homography_from_points(pixels: np.ndarray, table_xy_m: np.ndarray) -> np.ndarray:
    """Fit the pixel -> table homography from 4+ correspondences (cube placed at known spots)."""
    pixels = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
    table_xy_m = np.asarray(table_xy_m, dtype=np.float64).reshape(-1, 2)
    if len(pixels) < 4 or len(pixels) != len(table_xy_m):
        raise ValueError(f"need 4 or more matching points, got {len(pixels)} pixels and {len(table_xy_m)} positions")
    H, _ = cv2.findHomography(pixels, table_xy_m, 0)
    if H is None:
        raise ValueError("points are degenerate (collinear?); spread them over the table")
    return H / H[2, 2]


def projection_from_mujoco(model, data, camera: str, width: int, height: int) -> np.ndarray:
    """3x4 matrix mapping world (= arm base) points to pixels of a MuJoCo camera's rendered image.

    ``data`` may be None for a camera fixed in the world (its pose does not depend on the joints).
    """
    import mujoco

    cam_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    if cam_id < 0:
        raise ValueError(f"no camera named {camera!r} in the model")
    if data is None or not np.any(data.cam_xmat[cam_id]):  # no kinematics computed yet
        data = mujoco.MjData(model)
        mujoco.mj_forward(model, data)
    pos = data.cam_xpos[cam_id]
    rot = data.cam_xmat[cam_id].reshape(3, 3)  # columns: camera x (right), y (up), z (backwards)
    f = 0.5 * height / np.tan(np.deg2rad(model.cam_fovy[cam_id]) / 2)
    # Camera coordinates with the image convention: x right, y down, z forward.
    R = np.stack([rot[:, 0], -rot[:, 1], -rot[:, 2]])
    K = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]])
    return K @ np.c_[R, -R @ pos]


def _rows(M: np.ndarray) -> tuple:
    return tuple(tuple(float(x) for x in r) for r in M)


def calibration_from_mujoco(model, data, camera: str, width: int, height: int,
                            plane_z_m: float = 0.015, **fields) -> DetectorCalibration:
    P = projection_from_mujoco(model, data, camera, width, height)
    H = homography_for_plane(P, plane_z_m)
    return DetectorCalibration(image_width=width, image_height=height, homography=_rows(H),
                               plane_z_m=plane_z_m, projection=_rows(P), **fields)


def load_calibration(path: str | Path, model=None) -> DetectorCalibration:
    """The ``detector`` section of a camera YAML (or a file holding only that section), resolved.

    ``model``: the twin's MuJoCo model, to resolve ``mujoco_camera`` without building another.
    """
    data = read_yaml(path)
    if "detector" in data:
        cal = from_dict(DetectorCalibration, data["detector"], str(path), prefix="detector")
    else:
        cal = from_dict(DetectorCalibration, data, str(path))
    try:
        return cal.resolved(model)
    except ValueError as e:
        raise ConfigError(str(path), "detector.mujoco_camera", str(e)) from None


def make_detector(detector: "str | Path | DetectorCalibration | ColorDetector | None",
                  camera_yaml: str | Path | None = None) -> ColorDetector | None:
    """A detector from a calibration (object, name in ``config/cameras``, or YAML path), or else
    from the ``detector`` section of the scene camera's YAML; None when neither gives one."""
    if isinstance(detector, ColorDetector) or detector is None and camera_yaml is None:
        return detector
    if isinstance(detector, DetectorCalibration):
        return ColorDetector(detector)
    if detector is not None:
        path = detector if str(detector).endswith((".yaml", ".yml")) else config_path("cameras", f"{detector}.yaml")
        return ColorDetector(load_calibration(path))
    if "detector" in read_yaml(camera_yaml):
        return ColorDetector(load_calibration(camera_yaml))
    return None
