"""Episode datasets round-trip through LeRobot's own LeRobotDataset (v3.0), and LeRobot recordings
import as demonstrations.

LeRobot runs in its own venv (it pins torch<2.11; see se_robot.data.lerobot_io): the LeRobot side
of each check is a script run by that interpreter (tests/support/lerobot_runner.py: skipped without
one, run in CI).
"""

from __future__ import annotations

import numpy as np
import pytest

from se_robot.cli import main
from se_robot.data.demos import dataset_slots, load_demos
from se_robot.data.episodes import iter_episodes, read_dataset_meta
from se_robot.data.writer import EpisodeWriter
from tests.support.lerobot_runner import run_lerobot

pytestmark = pytest.mark.timeout(600)


LOAD = r"""
import json, sys
import torch
from lerobot.datasets.lerobot_dataset import LeRobotDataset

ds = LeRobotDataset(sys.argv[2], root=sys.argv[1])
batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=len(ds), shuffle=False)))
print(json.dumps({
    "version": ds.meta.info["codebase_version"], "fps": ds.fps, "robot_type": ds.meta.robot_type,
    "episodes": ds.num_episodes, "frames": ds.num_frames, "tasks": list(ds.meta.tasks.index),
    "features": {k: v["dtype"] for k, v in ds.features.items()},
    "state_names": ds.features["observation.state"]["names"],
    "columns": {k: v.tolist() for k, v in batch.items() if isinstance(v, torch.Tensor) and k != "observation.images.scene"},
    "scene": (batch["observation.images.scene"] * 255).round().to(torch.uint8).permute(0, 2, 3, 1).tolist(),
}))
"""

#: an SO-101 teleoperation recording as LeRobot's ``lerobot-record`` lays it out: joint positions in
#: LeRobot's units, two cameras, no reward or done features
RECORD = r"""
import json, sys
import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset

joints = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
vec = {"dtype": "float32", "shape": (6,), "names": [f"{j}.pos" for j in joints]}
img = {"dtype": "image", "shape": (24, 32, 3), "names": ["height", "width", "channels"]}
features = {"action": vec, "observation.state": vec, "observation.images.front": img, "observation.images.wrist": img}
ds = LeRobotDataset.create(sys.argv[2], 30, features, root=sys.argv[1], robot_type="so101_follower", use_videos=False)
rng = np.random.default_rng(0)
for length in (4, 6):
    for _ in range(length):
        ds.add_frame({"action": rng.uniform(-100, 100, 6).astype(np.float32),
                      "observation.state": rng.uniform(-100, 100, 6).astype(np.float32),
                      "observation.images.front": rng.integers(0, 256, (24, 32, 3), dtype=np.uint8),
                      "observation.images.wrist": np.full((24, 32, 3), 7, dtype=np.uint8),
                      "task": "Pick up the cube"})
    ds.save_episode()
ds.finalize()
ds = LeRobotDataset(sys.argv[2], root=sys.argv[1])
print(json.dumps({k: np.stack([np.asarray(ds[i][k]) for i in range(len(ds))]).tolist()
                  for k in ("action", "observation.state", "observation.images.front")}))
"""


def write_source(directory, frame_hw=(16, 20)) -> list:
    """Two episodes with every kind of key: state, task, two cameras, a takeover, a failure."""
    rng = np.random.default_rng(1)
    writer = EpisodeWriter(directory, {"task": "push", "arm": "so101", "control_hz": 10.0, "camera": "scene"})

    def obs():
        return {"state": rng.normal(size=12).astype(np.float32), "task": rng.normal(size=5).astype(np.float32),
                "pixels": rng.integers(0, 256, (*frame_hw, 3), dtype=np.uint8),
                "pixels_wrist": np.full((*frame_hw, 3), 90, dtype=np.uint8)}

    for length, success in ((3, True), (5, False)):
        writer.start_episode(obs(), timestamp=0.0)
        for t in range(length):
            writer.add_step(rng.uniform(-1, 1, 4).astype(np.float32), obs(), reward=float(t), intervention=t == 1,
                            terminated=success and t == length - 1, truncated=not success and t == length - 1,
                            timestamp=0.1 * (t + 1))
        writer.end_episode(success)
    return list(iter_episodes(directory))


class ListSink:
    def __init__(self):
        self.firsts, self.steps = 0, []

    def add_first(self, obs):
        self.firsts += 1

    def add(self, action, reward, next_obs, terminated, truncated):
        self.steps.append((action, reward, terminated, truncated))


def test_export_loads_in_lerobot_and_imports_back_unchanged(tmp_path, capsys):
    source = write_source(tmp_path / "src")
    root = tmp_path / "lerobot" / "push"
    assert main(["dataset", "export", str(tmp_path / "src"), "--format", "lerobot", "--out", str(root),
                 "--repo-id", "me/push"]) == 0
    got = run_lerobot(LOAD, str(root), "me/push")
    assert (got["version"], got["fps"], got["robot_type"], got["tasks"]) == ("v3.0", 10, "so101", ["push"])
    assert (got["episodes"], got["frames"]) == (2, 4 + 6)
    assert got["features"]["observation.images.wrist"] == "image"
    assert got["state_names"][:2] == ["shoulder_pan.pos", "shoulder_lift.pos"]
    cols = got["columns"]
    frame = 0
    for ep in source:   # frame i holds observation i and the step taken from it; the last, a zero action
        rows = slice(frame, frame + ep.length + 1)
        assert np.allclose(cols["observation.state"][rows], ep["state"])
        assert np.allclose(cols["observation.environment_state"][rows], ep["task"])
        assert np.array_equal(np.array(got["scene"][rows], dtype=np.uint8), ep["pixels"])
        assert np.allclose(cols["action"][rows], np.vstack([ep["action"], np.zeros((1, 4))]))
        assert np.allclose(np.ravel(cols["next.reward"][rows])[:-1], ep["reward"])
        assert np.ravel(cols["intervention"][rows])[:-1].tolist() == ep["intervention"].tolist()
        assert np.ravel(cols["next.done"][rows])[:-1].tolist() == ep["terminated"].tolist()
        assert any(np.ravel(cols["next.success"][rows])) == ep.success
        assert np.allclose(cols["timestamp"][rows], np.arange(ep.length + 1) / 10)
        frame += ep.length + 1

    back = tmp_path / "back"
    assert main(["dataset", "import", str(root), "--format", "lerobot", "--out", str(back), "--repo-id", "me/push"]) == 0
    assert read_dataset_meta(back).task == "push"
    imported = list(iter_episodes(back))
    assert len(imported) == 2
    for a, b in zip(source, imported):
        assert sorted(a.arrays) == sorted(b.arrays)
        for key in a.arrays:
            if key not in ("metadata", "timestamp"):
                assert np.array_equal(a[key], b[key]), key
        assert np.allclose(a["timestamp"], b["timestamp"], atol=1e-6)
    # and `train --demos` takes it: every step reaches the demo buffer
    sink = ListSink()
    assert load_demos(back, sink, obs_keys=("state", "pixels")) == 2
    assert (sink.firsts, len(sink.steps), dataset_slots(back)) == (2, 3 + 5, 4 + 6)
    assert main(["dataset", "export", str(tmp_path / "src"), "--format", "lerobot", "--out", str(root)]) == 1
    assert "exists already" in capsys.readouterr().err


def test_a_lerobot_recording_imports_as_demonstrations(tmp_path):
    root = tmp_path / "so101_pick"
    recorded = run_lerobot(RECORD, str(root), "me/so101_pick")
    out = tmp_path / "demos"
    assert main(["dataset", "import", str(root), "--out", str(out), "--camera", "wrist", "--task", "lift"]) == 0
    meta = read_dataset_meta(out)
    assert (meta.task, meta.control_hz, meta.camera, meta.extra["lerobot_robot_type"]) == \
        ("lift", 30.0, "wrist", "so101_follower")
    episodes = list(iter_episodes(out))
    assert [ep.length for ep in episodes] == [3, 5]   # N frames: N observations, N-1 steps
    action, state = np.array(recorded["action"]), np.array(recorded["observation.state"])
    front = np.array(recorded["observation.images.front"])   # LeRobot's (3, H, W) floats in [0, 1]
    start = 0
    for ep in episodes:
        n = ep.length + 1
        assert np.allclose(ep["state"], state[start:start + n])
        assert np.allclose(ep["action"], action[start:start + n - 1])
        assert np.array_equal(ep["pixels_front"], np.rint(front[start:start + n] * 255).astype(np.uint8)
                              .transpose(0, 2, 3, 1))
        assert (ep["pixels"] == 7).all() and ep["pixels"].shape == (n, 24, 32, 3)
        # what a teleoperated recording without reward features means
        assert ep.success and not ep["reward"].any() and not ep["terminated"].any()
        assert ep["truncated"].tolist() == [False] * (n - 2) + [True]
        start += n


def test_video_export_imports_back_through_lerobots_decoder(tmp_path, capfd):
    write_source(tmp_path / "tiny")   # 16 x 20 frames: SVT-AV1 dies on them, so they are refused first
    assert main(["dataset", "export", str(tmp_path / "tiny"), "--format", "lerobot", "--out", str(tmp_path / "no"),
                 "--video"]) == 1
    assert "too small for LeRobot's AV1 encoder" in capfd.readouterr().err
    source = write_source(tmp_path / "src", frame_hw=(32, 40))
    root, back = tmp_path / "video", tmp_path / "back"
    assert main(["dataset", "export", str(tmp_path / "src"), "--format", "lerobot", "--out", str(root), "--video"]) == 0
    assert sorted(p.parent.parent.name for p in root.glob("videos/*/*/*.mp4")) == \
        ["observation.images.scene", "observation.images.wrist"]
    assert main(["dataset", "import", str(root), "--out", str(back)]) == 0
    for a, b in zip(source, iter_episodes(back), strict=True):
        assert np.array_equal(a["action"], b["action"]) and np.array_equal(a["state"], b["state"])
        assert b["pixels"].shape == a["pixels"].shape
        # AV1 is lossy: a flat frame comes back close, not bit-exact
        assert np.abs(b["pixels_wrist"].astype(int) - 90).max() <= 3
