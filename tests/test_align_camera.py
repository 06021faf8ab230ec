"""Camera alignment: the fit on synthetic projections, its refusals, and `se-robot align-camera`
against an emulator whose camera has a known, fixed gap."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import yaml

os.environ.setdefault("MUJOCO_GL", "egl")

from se_robot.arm import load_arm  # noqa: E402
from se_robot.config import ConfigError  # noqa: E402
from se_robot.envs.camera_fit import FitError, apply_camera, apply_camera_config, fit_camera  # noqa: E402
from se_robot.envs.detector import projection_from_mujoco  # noqa: E402
from se_robot.sim.mjcf import build_model  # noqa: E402

pytestmark = pytest.mark.timeout(180)

ARM = load_arm("so101")
W, H = 320, 240
#: the gap's camera offsets: fixed (zero-width ranges); colours, light and noise left off
POS_M, ROT_RAD, FOVY_DEG = 0.03, 0.05, 4.0
CAMERA_GAP = {"camera_pos_m": [POS_M, POS_M], "camera_rot_rad": [ROT_RAD, ROT_RAD],
              "camera_fovy_deg": [FOVY_DEG, FOVY_DEG]}
#: tolerances the emulator test holds the fit to (measured: ~1 mm, ~0.15 deg, ~0.1 deg fov)
TOL_POS_M, TOL_ROT_DEG, TOL_FOVY_DEG, TOL_RMS_PX = 0.005, 0.5, 0.5, 0.5


def _grid(n: int = 4, z: float = 0.015) -> np.ndarray:
    return np.array([(x, y, z) for x in np.linspace(0.11, 0.26, n) for y in np.linspace(-0.12, 0.08, n)])


def _project(P: np.ndarray, points: np.ndarray) -> np.ndarray:
    p = np.c_[points, np.ones(len(points))] @ P.T
    return p[:, :2] / p[:, 2:3]


def _gapped_projection() -> np.ndarray:
    model = build_model(ARM, scene=True)
    apply_camera(model, "scene", [POS_M] * 3, [ROT_RAD] * 3, FOVY_DEG)
    return projection_from_mujoco(model, None, "scene", W, H)


def test_fit_recovers_a_moved_camera_from_its_projections():
    points = _grid()
    pixels = _project(_gapped_projection(), points)
    model = build_model(ARM, scene=True)
    nominal = (model.cam_pos.copy(), model.cam_quat.copy(), model.cam_fovy.copy())
    fit = fit_camera(model, points, pixels, W, H)
    assert np.allclose(fit.pos_offset_m, POS_M, atol=1e-6)
    assert np.allclose(fit.rot_offset_rad, ROT_RAD, atol=1e-6)
    assert fit.fovy_offset_deg == pytest.approx(FOVY_DEG, abs=1e-4)
    assert fit.rms_px < 1e-3 and fit.n_points == 16
    for before, after in zip(nominal, (model.cam_pos, model.cam_quat, model.cam_fovy)):
        assert np.array_equal(before, after)   # the model the fit used is left as it was

    # a twin that applies the written section projects as the fit does
    applied = build_model(ARM, scene=True)
    apply_camera_config(applied, {"twin_camera": fit.twin_camera()})
    assert np.allclose(projection_from_mujoco(applied, None, "scene", W, H), fit.projection, rtol=1e-4, atol=1e-3)

    # half a pixel of noise on each point moves the fit by little over this spread of points
    noisy = pixels + np.random.default_rng(0).normal(0.0, 0.5, pixels.shape)
    fit = fit_camera(model, points, noisy, W, H)
    assert np.all(np.abs(fit.pos_offset_m - POS_M) < 0.01)
    assert abs(fit.fovy_offset_deg - FOVY_DEG) < 1.5
    assert 0.2 < fit.rms_px < 0.8


def test_fit_refuses_what_cannot_fix_a_camera():
    model = build_model(ARM, scene=True)
    P = projection_from_mujoco(model, None, "scene", W, H)
    points = _grid()
    with pytest.raises(FitError, match="at least 4"):
        fit_camera(model, points[:3], _project(P, points[:3]), W, H)
    line = np.c_[np.linspace(0.12, 0.25, 6), np.zeros(6), np.full(6, 0.015)]
    with pytest.raises(FitError, match="one line"):
        fit_camera(model, line, _project(P, line), W, H)
    with pytest.raises(FitError, match="one line"):
        fit_camera(model, np.repeat(points[:1], 5, axis=0), np.repeat(_project(P, points[:1]), 5, axis=0), W, H)
    with pytest.raises(FitError, match=r"\(N, 3\)"):
        fit_camera(model, points, _project(P, points)[:-1], W, H)
    with pytest.raises(ConfigError, match="twin_camera"):
        apply_camera_config(model, {"camera": {}})


def test_points_file_and_bad_points_file(tmp_path):
    from se_robot.cli import main

    points = _grid(3)
    pixels = _project(_gapped_projection(), points)
    clicked = tmp_path / "clicked.yaml"
    clicked.write_text(yaml.safe_dump({"image_width": W, "image_height": H, "points": [
        {"xyz": p.tolist(), "pixel": q.tolist()} for p, q in zip(points, pixels)]}))
    out = tmp_path / "mine.yaml"
    assert main(["align-camera", "--points", str(clicked), "--out", str(out)]) == 0
    written = yaml.safe_load(out.read_text())
    assert np.allclose(written["twin_camera"]["pos_offset_m"], POS_M, atol=1e-5)
    assert "mujoco_camera" not in written["detector"] and len(written["detector"]["projection"]) == 3

    line = [{"xyz": [0.1 + 0.02 * i, 0.0, 0.015], "pixel": [100.0 + 10 * i, 100.0 + 5 * i]} for i in range(5)]
    clicked.write_text(yaml.safe_dump({"image_width": W, "image_height": H, "points": line}))
    assert main(["align-camera", "--points", str(clicked), "--out", str(out)]) == 1   # refused: one line
    clicked.write_text("image_width: 320\nimage_height: 240\npoints: [{xyz: [0.1, 0.0], pixel: [3, 4]}]\n")
    assert main(["align-camera", "--points", str(clicked), "--out", str(out)]) == 2   # a configuration error


def test_align_camera_recovers_the_gapped_emulator_camera(tmp_path):
    """Cube put on a 4 x 4 grid by the emulator's scene service, found by colour in its MJPEG
    stream, fitted: the written offsets are the gap's, and the detector built from the written
    config places the cube where it is (the nominal twin calibration does not)."""
    from se_robot.cli import main
    from se_robot.config import config_path
    from se_robot.envs.detector import ColorDetector, load_calibration
    from se_robot.hardware.camera import OpenCVCamera
    from se_robot.hardware.emulator import VirtualArm
    from se_robot.tasks import ResetSample

    out, overlay = tmp_path / "aligned.yaml", tmp_path / "overlay.png"
    with VirtualArm(ARM, physics="twin", task="lift", camera_port=0, camera_size=(W, H), scene_port=0,
                    twin_gap=CAMERA_GAP) as vm:
        for sid in ARM.servo_ids:   # hold the arm where it starts (out of the cube's way)
            vm.physics.set_torque(sid, True, time.monotonic())
        assert main(["align-camera", "--source", vm.camera_url, "--scene-url", vm.scene_url, "--task", "lift",
                     "--out", str(out), "--overlay", str(overlay)]) == 0
        cube = np.array([0.2, -0.03, 0.015])
        vm.place_objects(ResetSample(cube, 0.3, np.zeros(3)))
        with OpenCVCamera(vm.camera_url) as cam:
            time.sleep(0.3)
            frame, _ = cam.read_newer_than(time.monotonic(), timeout_s=30.0)
    fitted = yaml.safe_load(out.read_text())["twin_camera"]
    assert np.all(np.abs(np.array(fitted["pos_offset_m"]) - POS_M) < TOL_POS_M), fitted
    assert np.all(np.abs(np.rad2deg(np.array(fitted["rot_offset_rad"]) - ROT_RAD)) < TOL_ROT_DEG), fitted
    assert abs(fitted["fovy_offset_deg"] - FOVY_DEG) < TOL_FOVY_DEG, fitted
    assert fitted["fit_rms_px"] < TOL_RMS_PX and fitted["fit_points"] >= 12
    assert overlay.stat().st_size > 1000

    aligned = ColorDetector(load_calibration(out)).detect(frame).cube
    nominal = ColorDetector(load_calibration(config_path("cameras", "twin_scene.yaml"))).detect(frame).cube
    aligned_err = np.linalg.norm(np.array(aligned.table_xy_m) - cube[:2])
    nominal_err = np.linalg.norm(np.array(nominal.table_xy_m) - cube[:2])
    print(f"cube located {aligned_err * 1000:.1f} mm off (aligned), {nominal_err * 1000:.1f} mm (nominal)")
    assert aligned_err < 0.004 and nominal_err > 0.006


def test_scene_service_places_the_cube_at_a_given_spot():
    import json
    import urllib.error
    import urllib.request

    from se_robot.commands.align_camera import place_cube
    from se_robot.hardware.scene_service import SceneService
    from se_robot.tasks import load_task

    placed = []
    service = SceneService(load_task("lift"), placed.append).start()
    try:
        assert np.allclose(place_cube(service.url, "lift", (0.26, -0.12)), [0.26, -0.12, 0.015])
        assert np.allclose(placed[-1].cube_pos, [0.26, -0.12, 0.015]) and placed[-1].cube_yaw == 0.0
        body = json.dumps({"task": "lift", "seed": 0, "cube_xy": [0.2]}).encode()
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(urllib.request.Request(f"{service.url}/scene/restore", data=body, method="POST"))
        assert e.value.code == 400 and len(placed) == 1
    finally:
        service.stop()
