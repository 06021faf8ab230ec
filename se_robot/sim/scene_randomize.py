"""Scene clutter for domain randomization: a procedural texture on the table and distractor objects.

A real table has grain, a cloth or a printed mat, and a real workspace has other things on it. A
pixel policy trained on a plain table next to nothing may key on that emptiness; these draws put
patterns and stray objects in the frame so it cannot.

Both live in ``sim/scene.xml`` and are unused by the nominal model: the texture ``table_texture``
belongs to the material ``table_textured``, which no geom uses, and the distractor geoms
``distractor0..5`` sit in geom group 3, which renderers do not draw, with contype = conaffinity = 0,
so they never collide. A draw rewrites the texture's pixels and gives the table that material, and
sizes, colours and places ``n`` distractors and moves them to group 0. ``TwinRandomizer`` copies every
model array once and writes it back before each draw, which puts all of this back too.

The colour detector (``se_robot.envs.detector``) finds the cube as green (OpenCV hue 45-85, i.e.
90-170 deg) and the target as blue (hue 100-130, 200-260 deg), both with saturation >= 90/255. Every
colour drawn here (distractors and both texture colours) has a hue in ``SAFE_HUE_DEG``, 280 deg
through red to 70 deg (magenta, red, orange, yellow), at least 20 deg from either range, so a
distractor or the table pattern never passes for the cube or the target.

The pixels of a texture are uploaded to a renderer's GL context when it is made; the twin
re-uploads them to its live renderers when ``ArmTwin.textures_changed`` is called.
"""

from __future__ import annotations

import cv2
import mujoco
import numpy as np

#: hue band (deg) drawn from, wrapping through red: [280, 360) and [0, 70]; see the module docstring
SAFE_HUE_DEG = (280.0, 430.0)
#: distractor geoms declared in sim/scene.xml
DISTRACTOR_GEOMS = tuple(f"distractor{i}" for i in range(6))
#: where distractors stand: a patch of the table the scene camera sees (base frame, m)
DISTRACTOR_X_M = (0.06, 0.34)
DISTRACTOR_Y_M = (-0.2, 0.2)
#: half extent of a distractor (box half edge, cylinder radius and half height), m
DISTRACTOR_HALF_M = (0.008, 0.025)
#: pattern cells across the whole table (0.8 m): cells of 3 to 20 cm
TEXTURE_CELLS = (4, 24)
_SHOWN_GROUP, _HIDDEN_GROUP = 0, 3


def safe_colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` RGB colours (0..1) with hues in ``SAFE_HUE_DEG``, saturation 0.2-0.9, value 0.3-0.95."""
    hue = np.mod(rng.uniform(*SAFE_HUE_DEG, n), 360.0)
    sat = rng.uniform(0.2, 0.9, n)
    val = rng.uniform(0.3, 0.95, n)
    hsv = np.stack([hue, sat, val], axis=-1).astype(np.float32)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0].astype(np.float64)  # float HSV: H in degrees


def texture_pixels(rng: np.random.Generator, strength: float, base_rgb: np.ndarray, height: int,
                   width: int) -> np.ndarray:
    """A (height, width, 3) uint8 pattern: a checkerboard or smooth noise between two safe colours,
    blended over the plain table colour ``base_rgb`` (0..1) with weight ``strength`` (0..1)."""
    cells = int(rng.integers(TEXTURE_CELLS[0], TEXTURE_CELLS[1] + 1))
    a, b = safe_colours(rng, 2)
    if rng.random() < 0.5:
        checker = (np.arange(height)[:, None] * cells // height + np.arange(width)[None, :] * cells // width) % 2
        weight = checker.astype(np.float64)
    else:
        coarse = rng.random((cells, cells)).astype(np.float32)
        weight = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR).astype(np.float64)
    pattern = a * (1.0 - weight[..., None]) + b * weight[..., None]
    rgb = (1.0 - strength) * np.asarray(base_rgb, np.float64) + strength * pattern
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


class SceneClutter:
    """Writes a draw's table texture and distractors into a model built from ``sim/scene.xml``."""

    def __init__(self, m: mujoco.MjModel):
        self._texture = m.texture("table_texture").id
        self._table_geom = m.geom("table").id
        self._table_material = m.material("table").id
        self._textured_material = m.material("table_textured").id
        self._distractors = np.array([m.geom(name).id for name in DISTRACTOR_GEOMS])

    def apply_texture(self, m: mujoco.MjModel, strength: float, rng: np.random.Generator) -> None:
        """The table textured: a pattern over its (possibly jittered) material colour."""
        t = self._texture
        h, w, c = int(m.tex_height[t]), int(m.tex_width[t]), int(m.tex_nchannel[t])
        rgb = texture_pixels(rng, strength, m.mat_rgba[self._table_material, :3], h, w)
        pixels = rgb if c == 3 else np.concatenate([rgb, np.full((h, w, c - 3), 255, np.uint8)], axis=-1)
        adr = int(m.tex_adr[t])
        m.tex_data[adr:adr + h * w * c] = pixels.reshape(-1)
        m.geom_matid[self._table_geom] = self._textured_material

    def apply_distractors(self, m: mujoco.MjModel, n: int, rng: np.random.Generator) -> None:
        """``n`` distractors shown, each of a random size, safe colour, place and yaw on the table."""
        geoms = rng.choice(self._distractors, size=n, replace=False)
        colours = safe_colours(rng, n)
        for g, rgb in zip(geoms, colours):
            half = rng.uniform(*DISTRACTOR_HALF_M, 3)
            x, y = rng.uniform(*DISTRACTOR_X_M), rng.uniform(*DISTRACTOR_Y_M)
            yaw = rng.uniform(-np.pi, np.pi)
            if m.geom_type[g] == mujoco.mjtGeom.mjGEOM_CYLINDER:
                half[1] = half[0]  # radius in x and y
                m.geom_size[g] = (half[0], half[2], 0.0)
            else:
                m.geom_size[g] = half
            m.geom_aabb[g, 3:] = half
            m.geom_rbound[g] = float(np.linalg.norm(half))
            m.geom_pos[g] = (x, y, half[2])
            m.geom_quat[g] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
            m.geom_rgba[g] = (*rgb, 1.0)
            m.geom_group[g] = _SHOWN_GROUP

    def shown_distractors(self, m: mujoco.MjModel) -> list[str]:
        """Names of the distractors a default renderer draws now."""
        return [DISTRACTOR_GEOMS[i] for i, g in enumerate(self._distractors) if m.geom_group[g] != _HIDDEN_GROUP]


__all__ = ["DISTRACTOR_GEOMS", "SAFE_HUE_DEG", "SceneClutter", "safe_colours", "texture_pixels"]
