"""Episode datasets to and from LeRobotDataset (format v3.0), written and read by LeRobot itself.

The conversion calls the ``lerobot`` package's own ``LeRobotDataset.create / add_frame /
save_episode / finalize`` to write and ``LeRobotDataset(repo_id, root=...)`` to read, so the files
are LeRobot's format, not a copy of it. On Python 3.11 the newest LeRobot is 0.4.4, which pins
``torch<2.11``; se_robot's venv has torch 2.13, so LeRobot lives in a venv of its own
(``LEROBOT_VENV=.venv-lerobot bash scripts/install.sh``). The ``se-robot`` commands run this module
with that interpreter (``$SE_ROBOT_LEROBOT_PYTHON``, else ``.venv-lerobot`` beside a source
checkout), importing this se_robot's own code there; in a venv that has lerobot, in-process.

One se_robot episode of T steps becomes T+1 LeRobot frames (frame i: the observation i and the
action taken from it); the last frame, the final observation, has a zero action (se_robot's
actions are deltas: zero holds still) and no reward. Features::

    observation.state               state   float32 (D,)   names: the arm's joints where they fit
    observation.environment_state   task    float32 (F,)
    observation.images.<camera>     pixels, pixels_<camera>  image (or video with --video), (H, W, 3)
    action                          action  float32 (A,)
    next.reward / next.done / next.truncated   reward, terminated, truncated of the step from frame i
    next.success                    True on the last step of a successful episode
    intervention                    True where a human drove

fps is the dataset's control rate, the task string its task, robot_type its arm. Importing reverses
this: N frames give an episode of N-1 steps (the last frame's action is dropped, as an episode's
final observation has none); features a foreign dataset lacks default to what a teleoperated
recording means: reward 0, no termination but a truncated last step, no intervention, success.
Images come back as uint8 exactly from PNG frames; video frames as their lossy codec decodes them
(torchcodec where FFmpeg's libraries are installed, else PyAV).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from se_robot.data.episodes import DatasetError, DatasetMeta, iter_episodes, read_dataset_meta

LEROBOT_VERSION = "0.4.4"
PYTHON_ENV = "SE_ROBOT_LEROBOT_PYTHON"
IMAGE_PREFIX = "observation.images."
#: se_robot episode key -> LeRobot feature of the same meaning (images: IMAGE_PREFIX + camera)
VECTOR_FEATURES = {"state": "observation.state", "task": "observation.environment_state", "action": "action"}
STEP_FEATURES = {"reward": ("next.reward", "float32"), "terminated": ("next.done", "bool"),
                 "truncated": ("next.truncated", "bool"), "intervention": ("intervention", "bool")}
SUCCESS_FEATURE = "next.success"
#: smallest frame side exported as video: SVT-AV1 (LeRobot's codec) died of SIGFPE on 16x24 frames
MIN_VIDEO_SIDE = 32


class LeRobotMissing(RuntimeError):
    """No Python with the lerobot package was found; the message says how to install one."""


def lerobot_python() -> str:
    """The interpreter that has lerobot: ``$SE_ROBOT_LEROBOT_PYTHON``, else ``.venv-lerobot`` of the checkout."""
    if os.environ.get(PYTHON_ENV):
        return os.environ[PYTHON_ENV]
    candidate = Path(__file__).resolve().parents[2] / ".venv-lerobot" / "bin" / "python"
    if candidate.exists():
        return str(candidate)
    raise LeRobotMissing(
        f"LeRobot interop needs the lerobot package ({LEROBOT_VERSION} on Python 3.11; it pins torch<2.11, "
        "so it gets a venv of its own). Build it with `LEROBOT_VENV=.venv-lerobot bash scripts/install.sh` "
        f"in the se_robot checkout, or set {PYTHON_ENV} to a Python that has `pip install lerobot=={LEROBOT_VERSION}`.")


def run_with_lerobot(argv: list[str]) -> int:
    """Run ``main(argv)`` here if lerobot imports, else in the lerobot interpreter on this se_robot's code."""
    if importlib.util.find_spec("lerobot") is not None:
        return main(argv)
    python = lerobot_python()
    with tempfile.TemporaryDirectory() as tmp:
        # only se_robot itself goes on the path: the caller's site-packages (torch 2.13) must not
        os.symlink(Path(__file__).resolve().parents[1], Path(tmp) / "se_robot")
        env = {**os.environ, "PYTHONPATH": tmp}
        return subprocess.run([python, "-m", "se_robot.data.lerobot_io", *argv], env=env).returncode


def _state_names(arm_name: str, dim: int) -> list[str]:
    """Joint names for a state of joint positions (and velocities), else ``state_<i>``."""
    from se_robot.arm import load_arm
    from se_robot.config import ConfigError

    try:
        joints = load_arm(arm_name).joint_names
    except (ConfigError, FileNotFoundError):
        joints = []
    if joints and dim == len(joints):
        return [f"{j}.pos" for j in joints]
    if joints and dim == 2 * len(joints):
        return [f"{j}.pos" for j in joints] + [f"{j}.vel" for j in joints]
    return [f"state_{i}" for i in range(dim)]


def _camera_name(key: str, default_camera: str) -> str:
    return default_camera if key == "pixels" else key.removeprefix("pixels_")


def _features(first: Any, meta: DatasetMeta, video: bool) -> dict[str, dict[str, Any]]:
    features: dict[str, dict[str, Any]] = {}
    for key, name in VECTOR_FEATURES.items():
        if key in first:
            dim = first[key].shape[1]
            names = _state_names(meta.arm, dim) if key == "state" else [f"{key}_{i}" for i in range(dim)]
            features[name] = {"dtype": "float32", "shape": (dim,), "names": names}
    for key in first.pixel_keys:
        features[IMAGE_PREFIX + _camera_name(key, meta.camera)] = {
            "dtype": "video" if video else "image", "shape": first[key].shape[1:],
            "names": ["height", "width", "channels"]}
    for name, dtype in [*STEP_FEATURES.values(), (SUCCESS_FEATURE, "bool")]:
        features[name] = {"dtype": dtype, "shape": (1,), "names": None}
    return features


def export_lerobot(directory: str | Path, root: str | Path, repo_id: str, video: bool = False) -> tuple[int, int]:
    """Write the episode dataset at ``directory`` as a LeRobotDataset at ``root``; returns (episodes, frames)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    meta = read_dataset_meta(directory)
    fps = int(round(meta.control_hz))
    if abs(fps - meta.control_hz) > 1e-6:
        raise DatasetError(directory, "control_hz", f"{meta.control_hz} Hz: LeRobotDataset needs a whole fps")
    episodes = iter_episodes(directory)
    first = next(episodes, None)
    if first is None:
        raise DatasetError(directory, "<dir>", "no episode_*.npz files in the dataset")
    small = [k for k in first.pixel_keys if video and min(first[k].shape[1:3]) < MIN_VIDEO_SIDE]
    if small:
        raise DatasetError(first.path, small[0], f"frames of {first[small[0]].shape[1:3]} are too small for "
                           f"LeRobot's AV1 encoder (SVT-AV1 crashed below {MIN_VIDEO_SIDE} px here); export without --video")
    features = _features(first, meta, video)
    out = LeRobotDataset.create(repo_id, fps, features, root=root, robot_type=meta.arm, use_videos=video)
    count = frames = 0
    for ep in [first, *episodes]:
        T = ep.length
        for i in range(T + 1):
            step = i < T
            frame: dict[str, Any] = {"task": meta.task}
            for key, name in VECTOR_FEATURES.items():
                if name in features:
                    frame[name] = ep[key][i] if step or key != "action" else np.zeros_like(ep[key][0])
            for key in ep.pixel_keys:
                frame[IMAGE_PREFIX + _camera_name(key, meta.camera)] = ep[key][i]
            for key, (name, dtype) in STEP_FEATURES.items():
                frame[name] = np.array([ep[key][i] if step else 0], dtype=dtype)
            frame[SUCCESS_FEATURE] = np.array([ep.success and i == T - 1])
            out.add_frame(frame)
        out.save_episode()
        count, frames = count + 1, frames + T + 1
    out.finalize()
    return count, frames


def _uint8_image(value: Any) -> np.ndarray:
    """LeRobot's (3, H, W) float frame in [0, 1] back to se_robot's (H, W, 3) uint8."""
    return np.clip(np.rint(np.asarray(value, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def _video_backend() -> str:
    """LeRobot's default decoder, torchcodec, where it loads (it needs FFmpeg's shared libraries),
    else PyAV, which LeRobot also reads videos with."""
    try:
        import torchcodec.decoders  # noqa: F401
    except (ImportError, OSError, RuntimeError):
        return "pyav"
    return "torchcodec"


def _column(rows: list[dict[str, Any]], features: dict[str, Any], name: str, default: Any) -> np.ndarray:
    """One scalar feature over an episode's frames; ``default`` where the dataset has no such feature."""
    if name not in features:
        return np.full(len(rows), default)
    return np.stack([np.asarray(r[name]).reshape(-1)[0] for r in rows])


def _observation(row: dict[str, Any], features: dict[str, Any], pixel_key: dict[str, str]) -> dict[str, np.ndarray]:
    """se_robot's observation dict from one LeRobot frame (``pixel_key``: camera -> pixels key)."""
    obs = {key: np.asarray(row[name], dtype=np.float32).reshape(-1)
           for key, name in VECTOR_FEATURES.items() if key != "action" and name in features}
    obs.update({key: _uint8_image(row[IMAGE_PREFIX + camera]) for camera, key in pixel_key.items()})
    return obs


def import_lerobot(root: str | Path | None, repo_id: str, out: str | Path, camera: str | None = None,
                   task: str | None = None, arm: str = "so101") -> int:
    """Convert a LeRobotDataset (read by LeRobot) into an se_robot episode dataset at ``out``; returns episodes.

    ``camera``: the LeRobot camera that becomes ``pixels`` (default: the first); the others become
    ``pixels_<camera>``. ``task``: se_robot's task name (default: LeRobot's first task string).
    """
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from se_robot.data.writer import EpisodeWriter

    ds = LeRobotDataset(repo_id, root=root, video_backend=_video_backend())
    cameras = [k.removeprefix(IMAGE_PREFIX) for k in ds.meta.camera_keys]
    if camera is not None and camera not in cameras:
        raise DatasetError(ds.root, "camera", f"{camera!r} is not one of the dataset's cameras {cameras}")
    main_camera = camera or (cameras[0] if cameras else "scene")
    pixel_key = {c: "pixels" if c == main_camera else f"pixels_{c}" for c in cameras}
    if "action" not in ds.features:
        raise DatasetError(ds.root, "action", "the dataset has no action feature")
    tasks = list(ds.meta.tasks.index)
    meta = DatasetMeta(task=task or (tasks[0] if tasks else "lerobot"), arm=arm, control_hz=float(ds.fps),
                       camera=main_camera, extra={"source": "lerobot", "lerobot_repo_id": repo_id,
                                                  "lerobot_robot_type": ds.meta.robot_type})
    writer = EpisodeWriter(out, meta)
    episodes, written = ds.meta.episodes, 0
    for e in range(ds.meta.total_episodes):
        start, stop = int(episodes["dataset_from_index"][e]), int(episodes["dataset_to_index"][e])
        if stop - start < 2:
            continue   # one frame is an observation without a step
        rows = [ds[i] for i in range(start, stop)]
        reward = _column(rows, ds.features, "next.reward", 0.0)
        done = _column(rows, ds.features, "next.done", False).astype(bool)
        truncated = _column(rows, ds.features, "next.truncated", False).astype(bool)
        if "next.truncated" not in ds.features and not done[-2:].any():
            truncated[-2] = True   # a recording that ended without termination was cut short
        success = bool(_column(rows, ds.features, SUCCESS_FEATURE, True).any())
        intervention = _column(rows, ds.features, "intervention", False).astype(bool)
        writer.start_episode(_observation(rows[0], ds.features, pixel_key), timestamp=float(rows[0]["timestamp"]),
                             metadata={"lerobot_episode_index": e})
        for i, r in enumerate(rows[1:]):
            last = i == len(rows) - 2
            writer.add_step(np.asarray(rows[i]["action"], dtype=np.float32), _observation(r, ds.features, pixel_key),
                            float(reward[i]),
                            bool(done[i] or (last and done[-1])), bool(truncated[i]), bool(intervention[i]),
                            timestamp=float(r["timestamp"]))
        writer.end_episode(success)
        written += 1
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m se_robot.data.lerobot_io export|import ...``: what the se-robot commands run with lerobot."""
    parser = argparse.ArgumentParser(prog="python -m se_robot.data.lerobot_io", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    exp = sub.add_parser("export")
    exp.add_argument("directory")
    exp.add_argument("--root", required=True)
    exp.add_argument("--repo-id", required=True)
    exp.add_argument("--video", action="store_true")
    imp = sub.add_parser("import")
    imp.add_argument("--root", default=None)
    imp.add_argument("--repo-id", required=True)
    imp.add_argument("--out", required=True)
    imp.add_argument("--camera", default=None)
    imp.add_argument("--task", default=None)
    imp.add_argument("--arm", default="so101")
    args = parser.parse_args(argv)
    try:
        if args.what == "export":
            episodes, frames = export_lerobot(args.directory, args.root, args.repo_id, video=args.video)
            print(f"wrote a LeRobotDataset of {episodes} episodes, {frames} frames to {args.root} "
                  f"(LeRobotDataset({args.repo_id!r}, root={str(args.root)!r}))")
        else:
            episodes = import_lerobot(args.root, args.repo_id, args.out, args.camera, args.task, args.arm)
            print(f"wrote {episodes} episodes to {args.out} (se-robot train --demos {args.out})")
    except (DatasetError, FileExistsError, ValueError) as e:
        print(f"lerobot: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
