"""The colour detector on rendered frames of the twin, compared with the twin's true positions."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from se_robot.arm import load_arm  # noqa: E402
from se_robot.config import ConfigError, config_path  # noqa: E402
from se_robot.envs.detector import (  # noqa: E402
    ColorDetector, calibration_from_mujoco, homography_from_points, load_calibration)

pytestmark = pytest.mark.timeout(120)

W, H = 320, 240


@pytest.fixture(scope="module")
def push_twin():
    from se_robot.sim.twin import ArmTwin

    twin = ArmTwin(load_arm(), task="push")
    yield twin
    twin.close()


@pytest.fixture(scope="module")
def detector(push_twin):
    return ColorDetector(load_calibration(config_path("cameras", "twin_scene.yaml"), model=push_twin.model))


def test_shipped_twin_calibration_is_the_scene_camera(push_twin):
    shipped = load_calibration(config_path("cameras", "twin_scene.yaml"), model=push_twin.model)
    fresh = calibration_from_mujoco(push_twin.model, push_twin.data, "scene", W, H)
    assert shipped.mujoco_camera is None  # resolved on load
    assert np.allclose(shipped.H, fresh.H) and np.allclose(shipped.P, fresh.P)
    # A real-camera file loads too (its mapping starts as the twin's until calibrated).
    assert load_calibration(config_path("cameras", "usb_scene.yaml")).image_width == 640


def test_other_aspect_ratio_is_refused(detector):
    with pytest.raises(ValueError, match="aspect ratio"):
        detector.detect(np.zeros((84, 84, 3), np.uint8))


@pytest.mark.parametrize("seed", range(6))
def test_cube_and_goal_found_within_a_centimetre(push_twin, detector, seed):
    sample = push_twin.reset(np.random.default_rng(seed))
    frame = push_twin.render("scene", width=W, height=H)
    det = detector.detect(frame)
    assert det.cube is not None and det.target is not None
    cube_true = push_twin.cube_position()
    goal_true = push_twin.target_position()
    assert np.linalg.norm(np.array(det.cube.table_xy_m) - cube_true[:2]) < 0.01
    assert np.linalg.norm(np.array(det.target.table_xy_m) - goal_true[:2]) < 0.01
    assert np.allclose(sample.cube_pos[:2], cube_true[:2], atol=1e-3)


def test_other_frame_sizes_are_rescaled(push_twin, detector):
    push_twin.reset(np.random.default_rng(11))
    frame = push_twin.render("scene", width=160, height=120)
    det = detector.detect(frame)
    assert det.cube is not None
    assert np.linalg.norm(np.array(det.cube.table_xy_m) - push_twin.cube_position()[:2]) < 0.015


def test_nothing_found_in_an_empty_frame(detector):
    det = detector.detect(np.full((H, W, 3), (180, 170, 150), np.uint8))
    assert det.cube is None and det.target is None


def test_lifted_cube_height_from_ray_and_gripper(push_twin, detector):
    """A cube held in the air: one camera ray plus the gripper position gives its height."""
    push_twin.reset(np.random.default_rng(3))
    m, d = push_twin.model, push_twin.data
    adr = m.jnt_qposadr[m.joint("cube_joint").id]
    d.qpos[adr:adr + 3] = [0.18, 0.03, 0.09]
    mujoco.mj_forward(m, d)
    frame = push_twin.render("scene", width=W, height=H)
    blob = detector.detect(frame).cube
    assert blob is not None
    ee = np.array([0.18, 0.03, 0.10])  # the gripper just above the cube centre
    pos, held = detector.cube_position(blob, frame.shape, ee)
    assert held
    assert np.linalg.norm(pos - push_twin.cube_position()) < 0.02
    # Without the gripper nearby the same blob is taken to lie on the table.
    pos_table, held_table = detector.cube_position(blob, frame.shape, np.array([0.3, -0.2, 0.2]))
    assert not held_table and pos_table[2] == pytest.approx(0.015)


def test_homography_from_points_recovers_a_known_mapping(push_twin):
    cal = calibration_from_mujoco(push_twin.model, push_twin.data, "scene", W, H)
    xy = np.array([[0.12, -0.1], [0.25, -0.1], [0.25, 0.1], [0.12, 0.1], [0.18, 0.0]])
    pts = np.c_[xy, np.full(len(xy), cal.plane_z_m), np.ones(len(xy))]
    uvw = (cal.P @ pts.T).T
    pixels = uvw[:, :2] / uvw[:, 2:]
    fitted = homography_from_points(pixels, xy)
    assert np.allclose(fitted, cal.H, atol=1e-6)
    with pytest.raises(ValueError, match="4 or more"):
        homography_from_points(pixels[:3], xy[:3])


def test_bad_calibration_yaml_names_the_key(tmp_path):
    path = tmp_path / "cam.yaml"
    path.write_text("detector:\n  image_width: 320\n  image_height: 240\n  homography: [[1, 0, 0], [0, 1]]\n")
    with pytest.raises(ConfigError, match="detector.homography"):
        load_calibration(path)
    path.write_text("detector:\n  image_width: 320\n  image_height: 240\n"
                    "  homography: [[1, 0, 0], [0, 1, 0], [0, 0, 1]]\n  cube: {h_min: 400}\n")
    with pytest.raises(ConfigError, match="detector.cube.h_min"):
        load_calibration(path)
    path.write_text("detector:\n  image_width: 320\n  image_height: 240\n  mujoco_camera: nope\n")
    with pytest.raises(ConfigError, match="nope"):
        load_calibration(path)
    path.write_text("detector:\n  image_width: 320\n  image_height: 240\n")
    with pytest.raises(ConfigError, match="homography"):
        load_calibration(path)


def test_detector_through_an_mjpeg_stream_with_a_camera_gap(push_twin, detector):
    """JPEG artefacts, a brightness offset and sensor noise between the render and the detector."""
    from se_robot.hardware.camera import OpenCVCamera
    from se_robot.hardware.mjpeg_server import CameraGap, MjpegServer

    push_twin.reset(np.random.default_rng(5))
    frame = push_twin.render("scene", width=W, height=H).copy()
    gap = CameraGap(brightness=15, color_gain=(1.05, 1.0, 0.95), noise_std=4.0, jpeg_quality=70)
    with MjpegServer(lambda: frame, fps=30, gap=gap, seed=0) as srv, OpenCVCamera(srv.url) as cam:
        received, _ = cam.read(timeout_s=5.0)
    det = detector.detect(received)
    assert det.cube is not None and det.target is not None
    assert np.linalg.norm(np.array(det.cube.table_xy_m) - push_twin.cube_position()[:2]) < 0.01
    assert np.linalg.norm(np.array(det.target.table_xy_m) - push_twin.target_position()[:2]) < 0.01
