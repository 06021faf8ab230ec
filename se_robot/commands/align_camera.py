"""`se-robot align-camera`: fit the twin's scene camera to your camera and write the camera config.

The twin, the policies trained in it and the colour detector all assume the twin's camera pose and
field of view. This command measures where your camera really is, from correspondences between
known base-frame points and their pixels in your camera's image:

* detected (``--scene-url``): the cube is put on a ``--grid`` x ``--grid`` grid of table spots
  (``--x-range``, ``--y-range``) by the scene service (the emulator's ``--scene-port``, or any
  service answering ``POST /scene/restore`` with ``cube_xy``); at each, a fresh frame is grabbed
  from the camera of ``--camera`` and the cube's colour blob is found. Spread matters: points over
  a small patch of one plane leave the camera's distance and field of view trading off;
* clicked (``--points FILE``): a YAML of ``{image_width, image_height, points: [{xyz: [x, y, z],
  pixel: [u, v]}, ...]}`` you wrote with any image viewer (cube or link centres at known spots).

It fits the camera's position offset, rotation offset and field of view through the twin's own
projection (``se_robot.envs.camera_fit``) and writes ``--out``: the ``camera`` section of
``--camera`` unchanged, a ``detector`` section with the fitted ``projection`` and ``homography``
(in place of ``mujoco_camera``), and a ``twin_camera`` section of offsets that
``se_robot.envs.camera_fit.apply_camera`` applies to a twin. ``--overlay PNG`` saves the twin's
render through the fitted camera blended 50/50 with the live frame, to check by eye.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("align-camera", help="fit the twin's camera pose and field of view to your camera",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--camera", default="twin_scene", help="camera config: name in config/cameras or a YAML path")
    p.add_argument("--source", default=None,
                   help="camera source in place of the config's (e.g. the emulator's stream URL)")
    p.add_argument("--task", default="lift", help="the scene service's task (reach | push | lift)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--scene-url", default=None, help="scene service that places the cube (http://HOST:PORT)")
    src.add_argument("--points", default=None, help="YAML of clicked {xyz, pixel} correspondences")
    p.add_argument("--grid", type=int, default=4, help="cube spots per axis (default: 4, 16 spots)")
    p.add_argument("--x-range", type=float, nargs=2, default=(0.11, 0.26), metavar=("LO", "HI"),
                   help="cube spots' x span in the base frame (m; default: 0.11 0.26)")
    p.add_argument("--y-range", type=float, nargs=2, default=(-0.12, 0.08), metavar=("LO", "HI"),
                   help="cube spots' y span (m; default: -0.12 0.08, clear of the arm at home)")
    p.add_argument("--arm", default="so101", help="arm whose twin scene holds the camera (default: so101)")
    p.add_argument("--out", required=True, help="camera config YAML to write")
    p.add_argument("--overlay", default=None, help="also save the twin render blended with the live frame (PNG)")
    p.set_defaults(func=run)


def place_cube(scene_url: str, task: str, cube_xy, timeout_s: float = 30.0) -> np.ndarray:
    """Ask the scene service to put the cube at ``cube_xy`` on the table; its centre (base frame, m)."""
    from se_robot.envs.operator import post_scene_restore

    answer = post_scene_restore(scene_url, {"task": task, "seed": 0, "cube_xy": [float(v) for v in cube_xy]},
                                timeout_s)
    if not answer.get("restored"):
        raise RuntimeError(f"the scene service at {scene_url} declined to place the cube at {cube_xy}")
    return np.asarray(answer["cube_pos"], dtype=np.float64)


def grid_spots(x_range, y_range, n: int) -> list[tuple[float, float]]:
    """``n`` x ``n`` table spots spanning the ranges (corners included)."""
    return [(float(x), float(y)) for x in np.linspace(*x_range, n) for y in np.linspace(*y_range, n)]


def detect_correspondences(camera, detector, scene_url: str, task: str, spots, settle_s: float = 0.3,
                           border_px: float = 12.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cube centres and their blob pixels (in the detector's image size, continuous coordinates:
    a pixel's centre is at +0.5) over ``spots``, and the last frame. A spot whose cube is not found,
    or is found within ``border_px`` of the image edge (maybe cut off), is skipped and said."""
    cal = detector.calibration
    points, pixels, frame, last = [], [], None, None
    size = np.array([cal.image_width, cal.image_height])
    for xy in spots:
        xyz = place_cube(scene_url, task, xy)
        time.sleep(settle_s)   # the cube settles and the frames in flight drain
        uv, frame = _settled_cube(camera, detector, size, last)
        if uv is None or np.any(uv < border_px) or np.any(uv > size - border_px):
            print(f"  cube at {np.round(xyz, 3).tolist()} not seen still, clear of the image edge; skipped")
            continue
        points.append(xyz)
        pixels.append(uv)
        last = uv
    return np.array(points).reshape(-1, 3), np.array(pixels).reshape(-1, 2), frame


def _settled_cube(camera, detector, size: np.ndarray, previous: np.ndarray | None, tries: int = 20,
                  still_px: float = 0.5, moved_px: float = 2.0) -> tuple[np.ndarray | None, np.ndarray]:
    """The cube's pixel once two frames in a row agree on it and, after a first spot, it has left
    the previous spot: a camera that delivers late (a slow link, a loaded machine) still shows the
    cube where it was, and such a frame would pair the new spot with the old pixel."""
    uv = None
    for _ in range(tries):
        frame, _ = camera.read_newer_than(time.monotonic(), timeout_s=10.0)
        blob = detector.detect(frame).cube
        seen = None if blob is None else (np.asarray(blob.pixel) + 0.5) * size / [frame.shape[1], frame.shape[0]]
        if seen is not None and uv is not None and np.linalg.norm(seen - uv) <= still_px and (
                previous is None or np.linalg.norm(seen - previous) > moved_px):
            return seen, frame
        uv = seen
    return None, frame


def camera_config(source: Path, fit, plane_z_m: float) -> dict:
    """``source``'s sections with the detector's mapping replaced by the fit's, and the twin offsets."""
    from se_robot.config import read_yaml
    from se_robot.envs.detector import homography_for_plane

    data = dict(read_yaml(source))
    detector = {k: v for k, v in dict(data.get("detector", {})).items() if k not in ("mujoco_camera", "mujoco_arm")}
    detector.update(image_width=fit.image_width, image_height=fit.image_height,
                    homography=[[float(v) for v in row] for row in homography_for_plane(fit.projection, plane_z_m)],
                    projection=[[float(v) for v in row] for row in fit.projection])
    data["detector"] = detector
    data["twin_camera"] = fit.twin_camera()
    return data


def overlay_image(arm, task: str, fit, frame: np.ndarray, cube_xyz: np.ndarray | None) -> np.ndarray:
    """The twin rendered through the fitted camera (cube at ``cube_xyz``) blended 50/50 with ``frame``."""
    import cv2
    import mujoco

    from se_robot.envs.camera_fit import apply_camera
    from se_robot.sim.twin import ArmTwin
    from se_robot.tasks import ResetSample

    twin = ArmTwin(arm, task)
    try:
        apply_camera(twin.model, fit.camera, fit.pos_offset_m, fit.rot_offset_rad, fit.fovy_offset_deg)
        sample = twin.reset(np.random.default_rng(0))
        if cube_xyz is not None:
            twin.place_objects(ResetSample(cube_xyz, 0.0, sample.target_pos))
        mujoco.mj_forward(twin.model, twin.data)
        render = twin.render(fit.camera, frame.shape[1], frame.shape[0])
    finally:
        twin.close()
    return cv2.addWeighted(render, 0.5, frame, 0.5, 0.0)


def run(args: argparse.Namespace) -> int:
    import cv2
    import yaml

    from se_robot.arm import load_arm
    from se_robot.config import named_config
    from se_robot.envs.detector import ColorDetector, load_calibration
    from se_robot.hardware.camera import OpenCVCamera, load_camera_config
    from se_robot.envs.camera_fit import FitError, fit_camera, load_points
    from se_robot.sim.mjcf import build_model

    arm = load_arm(args.arm)
    model = build_model(arm, scene=True)
    source = named_config("cameras", args.camera)
    calibration = load_calibration(source, model)   # nominal: the twin's camera; HSV ranges, image size
    frame, cube_xyz = None, None
    camera = None
    if args.scene_url or args.overlay:
        cfg = load_camera_config(source)
        camera = OpenCVCamera(args.source or cfg.source, width=cfg.width, height=cfg.height, fps=cfg.fps,
                              fourcc=cfg.fourcc, open_timeout_s=cfg.open_timeout_s, max_backoff_s=cfg.max_backoff_s)
    try:
        if args.points:
            points, pixels, (width, height) = load_points(args.points)
        else:
            with camera:
                points, pixels, frame = detect_correspondences(
                    camera, ColorDetector(calibration), args.scene_url, args.task,
                    grid_spots(args.x_range, args.y_range, args.grid))
            cube_xyz = points[-1] if len(points) else None
            width, height = calibration.image_width, calibration.image_height
        print(f"{len(points)} correspondences")
        try:
            fit = fit_camera(model, points, pixels, width, height)
        except FitError as e:
            print(f"se-robot align-camera: {e}", file=sys.stderr)
            return 1
        if args.overlay and frame is None:
            with camera:
                frame, _ = camera.read(timeout_s=10.0)
    finally:
        if camera is not None:
            camera.disconnect()
    print(f"fitted camera {fit.camera!r}: moved {np.round(fit.pos_offset_m, 4).tolist()} m, rotated "
          f"{np.round(np.rad2deg(fit.rot_offset_rad), 2).tolist()} deg (own axes), fovy "
          f"{fit.fovy_deg:.2f} deg ({fit.fovy_offset_deg:+.2f}); reprojection RMS {fit.rms_px:.2f} px, "
          f"max {fit.max_px:.2f} px over {fit.n_points} points")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(camera_config(source, fit, calibration.plane_z_m), sort_keys=False,
                                  default_flow_style=None))
    print(f"wrote {out}")
    if args.overlay:
        image = overlay_image(arm, args.task, fit, frame, cube_xyz)
        cv2.imwrite(str(args.overlay), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        print(f"wrote {args.overlay}")
    return 0
