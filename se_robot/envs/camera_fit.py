"""Fit the twin's scene camera (pose offset and field of view) to a real camera from 3D-pixel pairs.

Why: a policy, an encoder and the colour detector trained or calibrated on the twin see the table
from the twin's camera; a real camera is mounted a few centimetres and degrees elsewhere, with
another lens. Given points whose base-frame position is known (the cube put at known spots, or
points a user clicked in an image) and where they appear in the real image, this finds the offsets
that, applied to the twin's camera exactly as the randomizer applies its camera draw
(``se_robot.sim.randomize.offset_camera``), make the twin project those points onto the same
pixels. The projection is the twin's own (``projection_from_mujoco``), so the fitted camera is one
the twin renders, and its 3x4 matrix is what the detector takes for the real camera.

The fit is Levenberg-Marquardt over 7 parameters (position offset x, y, z in metres; rotation
offset about the camera's own axes in radians; field-of-view offset in degrees) with a numeric
Jacobian, started at the nominal camera (all offsets 0). Four points are the least it accepts,
and points on one line are refused: they leave the rotation about that line free.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from se_robot.config import ConfigError, read_yaml
from se_robot.envs.detector import projection_from_mujoco
from se_robot.sim.randomize import offset_camera

MIN_POINTS = 4
#: numeric-Jacobian steps: position (m), rotation (rad), field of view (deg)
_STEPS = np.array([1e-5] * 3 + [1e-5] * 3 + [1e-4])
#: parameter scales the damping and the conditioning check use (a typical misalignment of each)
_SCALES = np.array([0.01] * 3 + [0.02] * 3 + [2.0])


class FitError(ValueError):
    """The correspondences cannot determine the camera (too few, collinear, or the fit diverged)."""


@dataclass(frozen=True)
class CameraFit:
    """Offsets of the twin camera that best reproject the points, and how well they do."""

    camera: str
    pos_offset_m: np.ndarray      # (3,) added to the camera position (its parent frame: the world)
    rot_offset_rad: np.ndarray    # (3,) rotation vector about the camera's own axes
    fovy_offset_deg: float        # added to the vertical field of view
    fovy_deg: float               # the fitted field of view itself
    rms_px: float                 # RMS reprojection error over the points
    max_px: float                 # largest single point's error
    n_points: int
    image_width: int
    image_height: int
    projection: np.ndarray        # (3, 4) base-frame point -> pixel of the fitted camera

    def twin_camera(self) -> dict:
        """The fitted camera as written to a camera config (``twin_camera`` section)."""
        return {"camera": self.camera, "pos_offset_m": [round(float(v), 6) for v in self.pos_offset_m],
                "rot_offset_rad": [round(float(v), 6) for v in self.rot_offset_rad],
                "fovy_offset_deg": round(float(self.fovy_offset_deg), 4),
                "fit_rms_px": round(self.rms_px, 3), "fit_points": self.n_points}


def check_points(points_m: np.ndarray, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pairs as float arrays (N, 3) and (N, 2); ``FitError`` if they cannot fix a camera."""
    points_m = np.asarray(points_m, dtype=np.float64)
    pixels = np.asarray(pixels, dtype=np.float64)
    if points_m.ndim != 2 or points_m.shape[1] != 3 or pixels.shape != (len(points_m), 2):
        raise FitError(f"need N 3D points (N, 3) and N pixels (N, 2), got {points_m.shape} and {pixels.shape}")
    if len(points_m) < MIN_POINTS:
        raise FitError(f"need at least {MIN_POINTS} correspondences, got {len(points_m)}")
    for name, a in (("3D points", points_m), ("pixels", pixels)):
        s = np.linalg.svd(a - a.mean(axis=0), compute_uv=False)
        if s[0] < 1e-9 or s[1] < 1e-3 * s[0]:
            raise FitError(f"the {name} lie on one line (or one spot): spread the points over the table")
    return points_m, pixels


def apply_camera(model: mujoco.MjModel, camera: str, pos_offset_m, rot_offset_rad, fovy_offset_deg: float) -> None:
    """Move ``camera`` of ``model`` by the fitted offsets (the twin side of an alignment).

    Applies to the model as it is: call it once on a freshly built twin (``ArmTwin.model``), then
    ``mujoco.mj_forward``. A randomizer made afterwards keeps this camera as its nominal one.
    """
    offset_camera(model, model.camera(camera).id, np.asarray(pos_offset_m, np.float64),
                  np.asarray(rot_offset_rad, np.float64), float(fovy_offset_deg))


def apply_camera_config(model: mujoco.MjModel, config: str | Path | dict) -> None:
    """Apply the ``twin_camera`` section of a camera config that ``se-robot align-camera`` wrote."""
    data = config if isinstance(config, dict) else read_yaml(config)
    source = "<camera config>" if isinstance(config, dict) else str(config)
    section = data.get("twin_camera")
    if not isinstance(section, dict):
        raise ConfigError(source, "twin_camera", "missing: write it with `se-robot align-camera`")
    try:
        apply_camera(model, section.get("camera", "scene"), [float(v) for v in section["pos_offset_m"]],
                     [float(v) for v in section["rot_offset_rad"]], float(section["fovy_offset_deg"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(source, "twin_camera", f"expected camera, pos_offset_m (3), rot_offset_rad (3) "
                          f"and fovy_offset_deg ({e})") from None


class _Projector:
    """Projection of the model's camera moved by a parameter vector; the model is restored after."""

    def __init__(self, model: mujoco.MjModel, camera: str, width: int, height: int):
        self.model, self.camera, self.width, self.height = model, camera, width, height
        self.cam_id = model.camera(camera).id
        self.data = mujoco.MjData(model)
        c = self.cam_id
        self.nominal = (model.cam_pos[c].copy(), model.cam_quat[c].copy(), float(model.cam_fovy[c]))

    def matrix(self, params: np.ndarray) -> np.ndarray:
        m, c = self.model, self.cam_id
        pos, quat, fovy = self.nominal
        m.cam_pos[c], m.cam_quat[c], m.cam_fovy[c] = pos, quat, fovy
        try:
            offset_camera(m, c, params[:3], params[3:6], float(params[6]))
            mujoco.mj_kinematics(m, self.data)
            mujoco.mj_camlight(m, self.data)
            return projection_from_mujoco(m, self.data, self.camera, self.width, self.height)
        finally:
            m.cam_pos[c], m.cam_quat[c], m.cam_fovy[c] = pos, quat, fovy

    def residuals(self, params: np.ndarray, points_h: np.ndarray, pixels: np.ndarray) -> np.ndarray:
        p = points_h @ self.matrix(params).T
        if np.any(p[:, 2] <= 1e-6):
            return np.full(pixels.size, 1e6)  # a point behind the camera: a candidate to reject
        return (p[:, :2] / p[:, 2:3] - pixels).ravel()


def fit_camera(model: mujoco.MjModel, points_m, pixels, width: int, height: int, camera: str = "scene",
               max_iters: int = 100) -> CameraFit:
    """Fit ``camera``'s offsets so the twin projects ``points_m`` (base frame, m) onto ``pixels``
    (in a ``width`` x ``height`` image). ``model`` is left as it was."""
    points_m, pixels = check_points(points_m, pixels)
    proj = _Projector(model, camera, width, height)
    points_h = np.c_[points_m, np.ones(len(points_m))]

    x = np.zeros(7)
    r = proj.residuals(x, points_h, pixels)
    lam = 1e-3
    for _ in range(max_iters):
        J = np.empty((r.size, 7))
        for k in range(7):
            dx = np.zeros(7)
            dx[k] = _STEPS[k]
            forward, back = proj.residuals(x + dx, points_h, pixels), proj.residuals(x - dx, points_h, pixels)
            J[:, k] = (forward - back) / (2 * _STEPS[k])
        Js = J * _SCALES                    # in units of a typical misalignment: comparable columns
        A, g = Js.T @ Js, Js.T @ r
        improved = False
        while lam < 1e10:
            step = -np.linalg.solve(A + lam * np.diag(np.diag(A) + 1e-12), g) * _SCALES
            r_new = proj.residuals(x + step, points_h, pixels)
            if float(r_new @ r_new) < float(r @ r):
                x, r, lam, improved = x + step, r_new, max(lam / 10, 1e-9), True
                break
            lam *= 10
        if not improved or np.max(np.abs(step / _SCALES)) < 1e-7:
            break
    s = np.linalg.svd(Js, compute_uv=False)
    if s[-1] < 1e-6 * s[0]:
        raise FitError("the points do not determine the camera (pose and field of view trade off): "
                       "use points spread over the table and, if you can, at more than one height")
    err = np.linalg.norm(r.reshape(-1, 2), axis=1)
    c = proj.cam_id
    return CameraFit(camera=camera, pos_offset_m=x[:3].copy(), rot_offset_rad=x[3:6].copy(),
                     fovy_offset_deg=float(x[6]), fovy_deg=float(model.cam_fovy[c] + x[6]),
                     rms_px=float(np.sqrt(np.mean(err**2))), max_px=float(err.max()), n_points=len(points_m),
                     image_width=width, image_height=height, projection=proj.matrix(x))


def load_points(path: str | Path) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Clicked correspondences: YAML ``{image_width, image_height, points: [{xyz: [x, y, z], pixel:
    [u, v]}, ...]}`` (metres in the arm's base frame; pixels in that image size). Returns points,
    pixels and (width, height)."""
    data = read_yaml(path)
    try:
        size = (int(data["image_width"]), int(data["image_height"]))
        pairs = data["points"]
        points = np.array([[float(v) for v in p["xyz"]] for p in pairs])
        pixels = np.array([[float(v) for v in p["pixel"]] for p in pairs])
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(str(path), "points", "expected image_width, image_height and points: "
                          f"[{{xyz: [x, y, z], pixel: [u, v]}}, ...] ({e})") from None
    if points.ndim != 2 or points.shape[1:] != (3,) or pixels.shape != (len(points), 2):
        raise ConfigError(str(path), "points", "each point needs xyz (3 numbers) and pixel (2 numbers)")
    return points, pixels, size


__all__ = ["CameraFit", "FitError", "MIN_POINTS", "apply_camera", "apply_camera_config", "check_points", "fit_camera",
           "load_points"]
