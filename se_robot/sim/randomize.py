"""Domain randomization of the twin: a spec of ranges (YAML, named presets), one seeded draw per
episode, and applying a draw to an ``ArmTwin`` with its nominal model values restored first.

A policy or encoder trained on one exact scene learns that scene's camera pose, colours and servo
response; a real arm differs in all of them. Drawing them anew every episode makes the learner
rely on what stays true across the draws. Every parameter is either an *offset* (neutral 0, added
to the nominal value) or a *scale* (neutral 1, multiplying it); a range ``[lo, hi]`` is drawn
uniformly. A range that is the neutral value (or absent) is off; a zero-width range elsewhere is a
fixed change, which is what a gap file describing one other setup wants. ``docs/randomization.md``
lists each parameter with its unit and the presets' ranges.

The spec is read through the project's config machinery (``se_robot.config.from_dict``), so an
unknown key or a value out of range stops with the file and the key. ``config/randomization/``
holds the named presets (``mild``, ``hard``); any YAML path is accepted too.

The table texture and the distractors are written by ``se_robot.sim.scene_randomize``; the servo
deadband is applied by ``ArmTwin.set_targets``.

Off is free: a twin nobody randomizes keeps its compiled model and renders and steps exactly as
before (the twin's hooks are a check or two per frame and per command).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import mujoco
import numpy as np

from se_robot.config import ConfigError, from_dict, named_config, option, read_yaml
from se_robot.sim.scene_randomize import DISTRACTOR_GEOMS, SceneClutter

if TYPE_CHECKING:
    from se_robot.sim.twin import ArmTwin

Range = tuple[float, float]
OFF: Range = (0.0, 0.0)
ONE: Range = (1.0, 1.0)


def _offset(help: str, lim: float) -> Any:
    return option(OFF, help=f"{help}; offset range [lo, hi], neutral 0", range=(-lim, lim))


def _scale(help: str, lo: float, hi: float) -> Any:
    return option(ONE, help=f"{help}; scale range [lo, hi], neutral 1", range=(lo, hi))


@dataclass(frozen=True)
class RandomizationSpec:
    """Ranges of the randomized parameters; the defaults are all off (see the module docstring)."""

    camera_pos_m: Range = _offset("scene camera position, added to each of x, y, z (m)", 0.2)
    camera_rot_rad: Range = _offset("scene camera orientation, a rotation about each of the camera's own "
                                    "x, y, z axes (rad)", 0.5)
    camera_fovy_deg: Range = _offset("scene camera vertical field of view (deg)", 30.0)
    light_tilt_rad: Range = _offset("top light direction, tilted about the world x and y axes (rad)", 1.0)
    light_intensity: Range = _scale("top light diffuse and headlight ambient/diffuse intensity", 0.1, 3.0)
    table_rgb: Range = _offset("table colour, added to each of R, G, B (0..1 units, clipped)", 1.0)
    cube_rgb: Range = _offset("cube colour, added to each of R, G, B (0..1 units, clipped)", 1.0)
    goal_rgb: Range = _offset("target/goal marker colour, added to each of R, G, B (0..1 units, clipped)", 1.0)
    image_noise_std: Range = option(OFF, help="Gaussian pixel noise std per episode (0-255 units)", range=(0.0, 64.0))
    image_blur_sigma_px: Range = option(OFF, help="Gaussian blur sigma per episode (px)", range=(0.0, 5.0))
    servo_kp: Range = _scale("position-servo stiffness kp of every arm actuator", 0.2, 5.0)
    joint_damping: Range = _scale("joint damping of every arm joint (the servos' damping)", 0.2, 5.0)
    joint_friction_nm: Range = _offset("joint friction loss of every arm joint (N*m; result clipped at 0)", 1.0)
    cube_mass: Range = _scale("cube mass (and inertia)", 0.1, 10.0)
    cube_size: Range = _scale("cube edge length (lift's height reference stays 15 mm: see the docs)", 0.7, 1.3)
    cube_friction: Range = _scale("cube friction (sliding, torsional, rolling)", 0.1, 5.0)
    latency_ticks: tuple[int, int] = option((0, 0), help="control latency: commands applied this many ticks "
                                            "late; integer range [lo, hi]", range=(0, 20))
    # Drawn after image_seed (see LATE_FIELDS), so the fields above draw as they did before these existed.
    table_texture: Range = option(OFF, help="strength of a procedural pattern (checkerboard or smooth noise of "
                                  "two colours) blended over the table colour: 0 plain, 1 pattern only",
                                  range=(0.0, 1.0))
    distractors: tuple[int, int] = option((0, 0), help="number of visual-only distractor objects on the table; "
                                          "integer range [lo, hi]", range=(0, len(DISTRACTOR_GEOMS)))
    servo_deadband_rad: Range = option(OFF, help="position-servo deadband: a joint's target ignores changes "
                                       "smaller than this (rad)", range=(0.0, 0.1))

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            lo, hi = getattr(self, f.name)
            if lo > hi:
                raise ConfigError("<randomization>", f.name, f"range [{lo}, {hi}] has lo > hi")

    @property
    def enabled(self) -> bool:
        """Whether any parameter moves off its nominal value."""
        return any(getattr(self, f.name) != f.default for f in dataclasses.fields(self))


def load_randomization(spec: str | Path | dict | RandomizationSpec, kind: str = "randomization") -> RandomizationSpec:
    """A spec from a preset name (``config/<kind>/<name>.yaml``: ``randomization`` for the twin's
    per-episode ranges, ``gaps`` for the emulator's reality gaps), a YAML path, a mapping or a
    spec; a wrong key or value is a ``ConfigError`` naming the file and the key."""
    if isinstance(spec, RandomizationSpec):
        return spec
    if isinstance(spec, dict):
        source, data = f"<{kind}>", spec
    else:
        path = named_config(kind, spec)
        source, data = str(path), read_yaml(path)
    try:
        return from_dict(RandomizationSpec, data, source)
    except ConfigError as e:
        if e.source == source:
            raise
        raise ConfigError(source, e.key, e.message) from None


@dataclass(frozen=True)
class Draw:
    """One episode's values (see ``RandomizationSpec`` for each one's meaning and unit)."""

    camera_pos_m: np.ndarray
    camera_rot_rad: np.ndarray
    camera_fovy_deg: float
    light_tilt_rad: np.ndarray
    light_intensity: float
    table_rgb: np.ndarray
    cube_rgb: np.ndarray
    goal_rgb: np.ndarray
    image_noise_std: float
    image_blur_sigma_px: float
    servo_kp: float
    joint_damping: float
    joint_friction_nm: float
    cube_mass: float
    cube_size: float
    cube_friction: float
    latency_ticks: int
    image_seed: int
    table_texture: float
    distractors: int
    servo_deadband_rad: float
    scene_seed: int  # the table pattern's and the distractors' shapes, colours and places


#: components drawn per parameter (each from the same range)
_WIDTH = {"camera_pos_m": 3, "camera_rot_rad": 3, "light_tilt_rad": 2, "table_rgb": 3, "cube_rgb": 3, "goal_rgb": 3}
#: integer ranges, drawn inclusive of hi
_INTEGER = {"latency_ticks", "distractors"}
#: parameters added after the first presets were in use: drawn after image_seed, so that a seed gives
#: every earlier parameter (and image_seed) the value it gave before they existed
LATE_FIELDS = ("table_texture", "distractors", "servo_deadband_rad")


def sample(spec: RandomizationSpec, rng: np.random.Generator) -> Draw:
    """One draw; every parameter is drawn, in a fixed order, so a seed means the same draw whichever
    ranges are off."""
    values: dict[str, Any] = {}

    def draw(name: str) -> None:
        lo, hi = getattr(spec, name)
        if name in _INTEGER:
            values[name] = int(rng.integers(lo, hi + 1))
        elif name in _WIDTH:
            values[name] = rng.uniform(lo, hi, _WIDTH[name])
        else:
            values[name] = float(rng.uniform(lo, hi))

    for f in dataclasses.fields(spec):
        if f.name not in LATE_FIELDS:
            draw(f.name)
    values["image_seed"] = int(rng.integers(2**63))
    for name in LATE_FIELDS:
        draw(name)
    values["scene_seed"] = int(rng.integers(2**63))
    return Draw(**values)


class ImageEffects:
    """Blur (the lens) then Gaussian noise (the sensor) on a rendered uint8 frame, with the
    episode's own noise generator so a seeded episode renders the same frames."""

    def __init__(self, noise_std: float, blur_sigma_px: float, seed: int):
        self.noise_std, self.blur_sigma_px = noise_std, blur_sigma_px
        self.rng = np.random.default_rng(seed)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self.blur_sigma_px > 0:
            image = cv2.GaussianBlur(image, (0, 0), self.blur_sigma_px)
        if self.noise_std > 0:  # float32 and in place: this runs on every frame
            noisy = self.rng.standard_normal(image.shape, dtype=np.float32)
            noisy *= self.noise_std
            noisy += image
            np.rint(noisy, out=noisy)
            np.clip(noisy, 0, 255, out=noisy)
            image = noisy.astype(np.uint8)
        return image


#: mjModel.stat fields mj_setConst recomputes (the model's arrays are all kept, see TwinRandomizer)
_STAT_FIELDS = ("meaninertia", "meanmass", "meansize", "extent", "center")
_HEADLIGHT_FIELDS = ("ambient", "diffuse")


class TwinRandomizer:
    """Applies draws of ``spec`` to ``twin``: the nominal model values are copied once, here, and
    written back before every draw and by ``restore``, so no value drifts across episodes.

    Every array of the model is kept, not only those a draw writes: ``mj_setConst`` (after a cube
    mass or size change) rewrites derived constants (inertia weights, bounding volumes, ...) whose
    list is MuJoCo's to change; copying them all back is a fraction of a millisecond per episode.
    Whatever else writes the model after this is made is overwritten at the next draw (nothing does
    today: the twin styles its target markers before).

    Call ``new_draw`` before ``ArmTwin.reset`` (the reset places the cube at its drawn size and
    fills the latency line). Pretraining that poses the twin itself calls it once per episode (or
    per frame) the same way; the twin's renders then carry the draw's noise and blur.
    """

    def __init__(self, twin: ArmTwin, spec: RandomizationSpec):
        self.twin, self.spec = twin, spec
        m = twin.model
        self._nominal = {name: value.copy() for name in dir(m) if not name.startswith("_")
                         and isinstance(value := getattr(m, name), np.ndarray) and value.size}
        self._stat = {name: np.copy(getattr(m.stat, name)) for name in _STAT_FIELDS}
        self._headlight = {name: getattr(m.vis.headlight, name).copy() for name in _HEADLIGHT_FIELDS}
        self._cam = m.camera("scene").id
        self._light = m.light("top").id
        self._materials = {"table_rgb": m.material("table").id, "cube_rgb": m.material("cube").id}
        self._goal_geoms = [twin._target_geom, twin._post_geom, twin._goal_geom]
        self._cube_geom = m.geom("cube_geom").id
        self._arm_dofs = np.arange(m.nv)[twin._dadr]
        self._arm_acts = np.arange(m.nu)[twin._act]
        self._clutter = SceneClutter(m)
        self.draw: Draw | None = None

    def restore(self) -> None:
        """The nominal model, no image effects, no latency: the twin as built."""
        m = self.twin.model
        for name, value in self._nominal.items():
            getattr(m, name)[...] = value
        for name, value in self._stat.items():
            setattr(m.stat, name, value)
        for name, value in self._headlight.items():
            getattr(m.vis.headlight, name)[...] = value
        self.twin.image_filter = None
        self.twin.cube_z_offset_m = 0.0
        self.twin.set_action_delay(0)
        self.twin.servo_deadband_rad = 0.0
        self.draw = None

    def new_draw(self, rng: np.random.Generator) -> Draw:
        """Restore, draw from ``rng`` and apply; returns the draw (for logs and tests)."""
        self.restore()
        draw = sample(self.spec, rng)
        self.apply(draw)
        return draw

    def apply(self, draw: Draw) -> None:
        """Write ``draw`` over the nominal model (call ``restore`` first unless the model is nominal)."""
        twin, m = self.twin, self.twin.model
        self._camera(m, draw)
        self._light_and_colours(m, draw)
        if draw.servo_kp != 1.0:
            m.actuator_gainprm[self._arm_acts, 0] *= draw.servo_kp
            m.actuator_biasprm[self._arm_acts, 1] *= draw.servo_kp
        if draw.joint_damping != 1.0:
            m.dof_damping[self._arm_dofs] *= draw.joint_damping
        if draw.joint_friction_nm != 0.0:
            friction = m.dof_frictionloss[self._arm_dofs] + draw.joint_friction_nm
            m.dof_frictionloss[self._arm_dofs] = np.maximum(friction, 0.0)
        if draw.cube_friction != 1.0:
            m.geom_friction[self._cube_geom] *= draw.cube_friction
        if draw.cube_mass != 1.0 or draw.cube_size != 1.0:
            self._cube_body(m, draw.cube_mass, draw.cube_size)
        if draw.image_noise_std > 0 or draw.image_blur_sigma_px > 0:
            twin.image_filter = ImageEffects(draw.image_noise_std, draw.image_blur_sigma_px, draw.image_seed)
        twin.set_action_delay(draw.latency_ticks)
        twin.servo_deadband_rad = draw.servo_deadband_rad
        if draw.table_texture > 0 or draw.distractors > 0:
            texture_rng, distractor_rng = np.random.default_rng(draw.scene_seed).spawn(2)
            if draw.table_texture > 0:  # after the colours: the pattern is blended over the drawn table colour
                self._clutter.apply_texture(m, draw.table_texture, texture_rng)
                twin.textures_changed()
            if draw.distractors > 0:
                self._clutter.apply_distractors(m, draw.distractors, distractor_rng)
        mujoco.mj_forward(m, twin.data)  # camera and light poses in data follow the model now
        self.draw = draw

    def _camera(self, m: mujoco.MjModel, draw: Draw) -> None:
        offset_camera(m, self._cam, draw.camera_pos_m, draw.camera_rot_rad, draw.camera_fovy_deg)

    def _light_and_colours(self, m: mujoco.MjModel, draw: Draw) -> None:
        if np.any(draw.light_tilt_rad):
            tilt = _rotvec_quat(np.array([draw.light_tilt_rad[0], draw.light_tilt_rad[1], 0.0]))
            out = np.empty(3)
            mujoco.mju_rotVecQuat(out, m.light_dir[self._light].astype(np.float64), tilt)
            m.light_dir[self._light] = out
        if draw.light_intensity != 1.0:
            k = draw.light_intensity
            m.light_diffuse[self._light] *= k
            for name in _HEADLIGHT_FIELDS:
                getattr(m.vis.headlight, name)[...] *= k
        for key, mat in self._materials.items():
            jitter = getattr(draw, key)
            if np.any(jitter):
                m.mat_rgba[mat, :3] = np.clip(m.mat_rgba[mat, :3] + jitter, 0.0, 1.0)
        if np.any(draw.goal_rgb):
            for g in self._goal_geoms:
                m.geom_rgba[g, :3] = np.clip(m.geom_rgba[g, :3] + draw.goal_rgb, 0.0, 1.0)

    def _cube_body(self, m: mujoco.MjModel, mass: float, size: float) -> None:
        """Mass and edge scaled, inertia with them (m * s^2); the derived constants recomputed,
        and the cube placed at its own half height on reset."""
        b, g = self.twin._cube_body, self._cube_geom
        m.body_mass[b] *= mass
        m.body_inertia[b] *= mass * size**2
        m.geom_size[g] *= size
        m.geom_rbound[g] *= size
        m.geom_aabb[g] *= size
        self.twin.cube_z_offset_m = float(m.geom_size[g, 2] - self._nominal["geom_size"][g, 2])
        mujoco.mj_setConst(m, self.twin.data)


def offset_camera(m: mujoco.MjModel, cam_id: int, pos_m: np.ndarray, rot_rad: np.ndarray, fovy_deg: float) -> None:
    """Move camera ``cam_id`` of ``m`` from where it is: ``pos_m`` added to its position (parent
    frame), rotated by the rotation vector ``rot_rad`` about its own axes, ``fovy_deg`` added to its
    field of view. The randomizer's camera draw and the camera alignment's fit both apply this."""
    if np.any(pos_m):
        m.cam_pos[cam_id] += pos_m
    if np.any(rot_rad):
        m.cam_quat[cam_id] = _mul_quat(m.cam_quat[cam_id], _rotvec_quat(rot_rad))
    if fovy_deg != 0.0:
        m.cam_fovy[cam_id] += fovy_deg


def _rotvec_quat(v: np.ndarray) -> np.ndarray:
    """The unit quaternion (w, x, y, z) of a rotation vector (axis times angle, rad)."""
    angle = float(np.linalg.norm(v))
    q = np.empty(4)
    mujoco.mju_axisAngle2Quat(q, np.asarray(v, np.float64) / angle, angle)
    return q


def _mul_quat(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.empty(4)
    mujoco.mju_mulQuat(out, np.asarray(a, np.float64), np.asarray(b, np.float64))
    return out


__all__ = ["Draw", "ImageEffects", "LATE_FIELDS", "RandomizationSpec", "TwinRandomizer", "load_randomization",
           "offset_camera", "sample"]
