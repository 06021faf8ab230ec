"""The randomization parameters added after the first presets: the table texture, distractor objects
and the servo deadband. Each does what it says; the existing presets draw exactly what they drew
before; the nominal scene renders and steps exactly as a scene without these additions; and the
colour detector is not fooled by the clutter."""

from __future__ import annotations

import dataclasses
import hashlib

import cv2
import mujoco
import numpy as np
import pytest

from se_robot.arm import load_arm
from se_robot.envs.detector import make_detector
from se_robot.sim.mjcf import build_spec
from se_robot.sim.randomize import LATE_FIELDS, TwinRandomizer, load_randomization, sample
from se_robot.sim.scene_randomize import DISTRACTOR_GEOMS, safe_colours
from se_robot.sim.twin import ArmTwin

pytestmark = pytest.mark.timeout(300)

ARM = load_arm("so101")

#: SHA-256 (first 16 hex digits) of every earlier field, image_seed included, of the draws of seeds
#: 0-4, as float64 bytes in field order: computed on main at 9d809e2, before the new parameters
#: existed. config/randomization/hard.yaml has the new keys since; its earlier fields draw the same.
BEFORE = {("randomization", "mild"): "d0880330c980087e", ("randomization", "hard"): "bd3f0036d4783ebd",
          ("gaps", "mild"): "dd4d5d534de0f66d", ("gaps", "hard"): "87985c81bd07f24a"}


def _earlier_fields_hash(kind: str, name: str) -> str:
    spec = load_randomization(name, kind)
    earlier = [f.name for f in dataclasses.fields(spec) if f.name not in LATE_FIELDS] + ["image_seed"]
    h = hashlib.sha256()
    for seed in range(5):
        draw = sample(spec, np.random.default_rng(seed))
        for name_ in earlier:
            h.update(np.asarray(getattr(draw, name_), dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("kind, name", sorted(BEFORE))
def test_existing_presets_draw_what_they_drew_before(kind, name):
    assert _earlier_fields_hash(kind, name) == BEFORE[kind, name]


def test_the_cluttered_gap_is_mild_plus_clutter():
    mild, cluttered = load_randomization("mild", "gaps"), load_randomization("cluttered", "gaps")
    for seed in range(3):
        a, b = sample(mild, np.random.default_rng(seed)), sample(cluttered, np.random.default_rng(seed))
        for f in dataclasses.fields(a):
            if f.name not in LATE_FIELDS + ("scene_seed",):
                np.testing.assert_array_equal(getattr(a, f.name), getattr(b, f.name), err_msg=f.name)
        assert b.table_texture >= 0.2 and 1 <= b.distractors <= 3 and b.servo_deadband_rad >= 0.002


# ------------------------------------------------------------------ off is the scene as it was
def _model_without_additions() -> mujoco.MjModel:
    """The scene as it was before the texture, its material and the distractors were declared."""
    spec = build_spec(ARM, scene=True)
    for name in DISTRACTOR_GEOMS:
        spec.delete(spec.geom(name))
    spec.delete(spec.material("table_textured"))
    spec.delete(spec.texture("table_texture"))
    return spec.compile()


def _rollout(twin: ArmTwin) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(5)
    twin.reset(rng)
    frames, states = [], []
    for k in range(6):
        twin.set_targets(twin.joint_positions() + rng.uniform(-0.1, 0.1, ARM.n_joints))
        twin.step(0.1)
        states.append(np.r_[twin.data.qpos, twin.data.qvel])
        if k % 2 == 0:
            frames += [twin.render("scene", 64, 48), twin.render("wrist", 48, 48)]
    return frames, np.array(states)


@pytest.mark.parametrize("task", ["push", "lift"])
def test_the_nominal_scene_renders_and_steps_as_without_the_additions(task, monkeypatch):
    full = ArmTwin(ARM, task)
    monkeypatch.setattr("se_robot.sim.mjcf.build_model", lambda arm, scene=True: _model_without_additions())
    bare = ArmTwin(ARM, task)
    assert bare.model.ngeom == full.model.ngeom - len(DISTRACTOR_GEOMS)
    assert bare.model.stat.extent == full.model.stat.extent   # znear/zfar scale with it
    (frames_a, states_a), (frames_b, states_b) = _rollout(full), _rollout(bare)
    np.testing.assert_array_equal(states_a, states_b)
    for a, b in zip(frames_a, frames_b):
        np.testing.assert_array_equal(a, b)
    full.close()
    bare.close()


# ------------------------------------------------------------------ texture
def _cube_mask(frame: np.ndarray) -> np.ndarray:
    det = make_detector("twin_scene")
    return det.calibration.cube.mask(cv2.cvtColor(frame, cv2.COLOR_RGB2HSV)) > 0


def test_texture_changes_the_table_not_the_cube_and_reaches_a_live_renderer():
    twin = ArmTwin(ARM, "lift")
    twin.reset(np.random.default_rng(0))
    plain = twin.render("scene", 160, 120)   # this renderer exists before the draws: they must reach it
    rand = TwinRandomizer(twin, load_randomization({"table_texture": [0.8, 0.8]}))
    textured = []
    for seed in (0, 1):
        rand.new_draw(np.random.default_rng(seed))
        twin.reset(np.random.default_rng(0))
        textured.append(twin.render("scene", 160, 120))
    cube = _cube_mask(plain)
    assert cube.sum() > 50
    inner = cv2.erode(cube.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0   # away from antialiased edges
    for image in textured:
        np.testing.assert_array_equal(image[inner], plain[inner])
        table = ~cv2.dilate(cube.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        table[:50] = False   # the lower part of the frame is table only (the arm stands in the upper part)
        assert np.abs(image[table].astype(int) - plain[table]).mean() > 10.0
    assert np.abs(textured[0].astype(int) - textured[1]).mean() > 5.0   # a new pattern, uploaded again
    rand.restore()
    twin.reset(np.random.default_rng(0))
    np.testing.assert_array_equal(twin.render("scene", 160, 120), plain)
    twin.close()


# ------------------------------------------------------------------ distractors
def test_distractors_show_n_objects_that_never_touch_anything():
    twin, plain_twin = ArmTwin(ARM, "push"), ArmTwin(ARM, "push")
    m = twin.model
    ids = [m.geom(n).id for n in DISTRACTOR_GEOMS]
    assert (m.geom_contype[ids] == 0).all() and (m.geom_conaffinity[ids] == 0).all()
    rand = TwinRandomizer(twin, load_randomization({"distractors": [0, 3]}))
    counts = set()
    for seed in range(12):
        draw = rand.new_draw(np.random.default_rng(seed))
        shown = rand._clutter.shown_distractors(m)
        assert len(shown) == draw.distractors
        counts.add(draw.distractors)
        if draw.distractors == 3:
            scene = mujoco.MjvScene(m, maxgeom=200)
            mujoco.mjv_updateScene(m, twin.data, mujoco.MjvOption(), None, mujoco.MjvCamera(),
                                   mujoco.mjtCatBit.mjCAT_ALL, scene)
            drawn = {scene.geoms[i].objid for i in range(scene.ngeom)
                     if scene.geoms[i].objtype == mujoco.mjtObj.mjOBJ_GEOM}
            assert {m.geom(n).id for n in shown} <= drawn
            assert not drawn & (set(ids) - {m.geom(n).id for n in shown})
            three = draw
    assert counts == {0, 1, 2, 3}
    # visual only: the physics of a rollout is the plain twin's, bit for bit
    rand.restore()
    rand.apply(three)
    _, states = _rollout(twin)
    _, plain_states = _rollout(plain_twin)
    np.testing.assert_array_equal(states, plain_states)
    twin.close()
    plain_twin.close()


def test_clutter_colours_stay_out_of_the_detectors_ranges():
    cal = make_detector("twin_scene").calibration
    rgb = safe_colours(np.random.default_rng(0), 5000)
    hsv = cv2.cvtColor((rgb * 255).round().astype(np.uint8)[None], cv2.COLOR_RGB2HSV)
    assert not cal.cube.mask(hsv).any() and not cal.target.mask(hsv).any()


def test_the_detector_finds_cube_and_goal_in_a_cluttered_textured_scene():
    det = make_detector("twin_scene")
    twin = ArmTwin(ARM, "push")
    rand = TwinRandomizer(twin, load_randomization({"table_texture": [1.0, 1.0], "distractors": [3, 3]}))
    for seed in range(4):
        rand.new_draw(np.random.default_rng(seed))
        twin.reset(np.random.default_rng(seed))
        found = det.detect(twin.render("scene", 320, 240))
        assert found.cube is not None and found.target is not None, seed
        assert np.hypot(*(np.array(found.cube.table_xy_m) - twin.cube_position()[:2])) < 0.01, seed
        assert np.hypot(*(np.array(found.target.table_xy_m) - twin.target_position()[:2])) < 0.01, seed
    twin.close()


# ------------------------------------------------------------------ deadband
def test_a_target_step_inside_the_deadband_does_not_move_the_joint():
    twin = ArmTwin(ARM, "reach")
    rand = TwinRandomizer(twin, load_randomization({"servo_deadband_rad": [0.02, 0.02]}))
    assert rand.new_draw(np.random.default_rng(0)).servo_deadband_rad == 0.02
    twin.reset(np.random.default_rng(0))
    twin.step(0.5)
    q0, held = twin.joint_positions(), twin.targets()
    small = held.copy()
    small[0] += 0.015
    twin.set_targets(small)
    np.testing.assert_array_equal(twin.targets(), held)
    twin.step(0.5)
    assert abs(twin.joint_positions()[0] - q0[0]) < 1e-3
    large = held.copy()
    large[0] += 0.03
    large[1] += 0.01   # this joint's own change is inside the deadband: it keeps its target
    twin.set_targets(large)
    np.testing.assert_array_equal(twin.targets(), np.r_[large[0], held[1:]])
    twin.step(0.5)
    assert twin.joint_positions()[0] - q0[0] > 0.02
    rand.restore()   # off: every change is applied
    twin.set_targets(held + 1e-4)
    np.testing.assert_array_equal(twin.targets(), held + 1e-4)
    twin.close()
