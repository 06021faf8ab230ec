"""Episode dataset format: round trip, validation messages, crash safety, the CLI's info/check."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from se_robot.cli import main as cli_main
from se_robot.data.dataset import DatasetInfo, check_dataset
from se_robot.data.demos import dataset_slots, load_demos
from se_robot.data.episodes import DatasetError, episode_paths, iter_episodes, load_episode
from se_robot.data.writer import EpisodeWriter

pytestmark = pytest.mark.timeout(120)


def _obs(t: int, size: int = 8) -> dict:
    """An env observation of obs_mode both plus task features: raw frame, proprio, task."""
    return {"pixels": np.full((size, size, 3), t % 256, np.uint8), "state": np.arange(5, dtype=np.float64) + t,
            "task": np.array([0.1, 0.2, t], np.float32)}


def write_dataset(directory: Path, episodes: int = 3, steps: int = 5, success=lambda i: i % 2 == 0) -> EpisodeWriter:
    w = EpisodeWriter(directory, {"task": "push", "control_hz": 10.0})
    for e in range(episodes):
        w.start_episode(_obs(0), timestamp=0.0, metadata={"seed": e})
        for t in range(steps):
            w.add_step(np.full(4, 0.1 * t), _obs(t + 1), reward=float(t), terminated=t == steps - 1,
                       intervention=t == 1, timestamp=(t + 1) / 10.0)
        w.end_episode(success(e), metadata={"source": "test"})
    return w


def test_round_trip_has_the_documented_arrays(tmp_path):
    write_dataset(tmp_path, episodes=2, steps=5)
    eps = list(iter_episodes(tmp_path))
    assert [p.name for p in episode_paths(tmp_path)] == ["episode_000000.npz", "episode_000001.npz"]
    ep = eps[0]
    assert ep.length == 5 and ep.success and not eps[1].success
    assert ep["pixels"].shape == (6, 8, 8, 3) and ep["pixels"].dtype == np.uint8
    assert ep["state"].shape == (6, 5) and ep["state"].dtype == np.float32
    assert ep["task"].shape == (6, 3) and ep["task"].dtype == np.float32 and ep["task"][4, 2] == 4
    assert ep.obs_keys == ["pixels", "state", "task"]
    assert ep["action"].shape == (5, 4) and ep["action"].dtype == np.float32
    assert ep["reward"].tolist() == [0, 1, 2, 3, 4]
    assert ep["terminated"].tolist() == [False] * 4 + [True]
    assert ep["intervention"].tolist() == [False, True, False, False, False]
    assert ep["timestamp"].dtype == np.float64 and ep["timestamp"][-1] == pytest.approx(0.5)
    assert ep.metadata["task"] == "push" and ep.metadata["seed"] == 0 and ep.metadata["source"] == "test"
    np.testing.assert_array_equal(ep.observation(3)["pixels"], _obs(3)["pixels"])
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert meta["format_version"] == 1 and meta["task"] == "push" and meta["created"]


def test_discard_drops_the_episode_and_numbering_resumes(tmp_path):
    w = write_dataset(tmp_path, episodes=1)
    w.start_episode(_obs(0))
    w.add_step(np.zeros(4), _obs(1))
    w.discard()
    assert len(episode_paths(tmp_path)) == 1
    w2 = EpisodeWriter(tmp_path, {"task": "push", "control_hz": 10.0})  # resume in a new process
    assert w2.next_index == 1
    with pytest.raises(DatasetError, match="task"):
        EpisodeWriter(tmp_path, {"task": "lift", "control_hz": 10.0})


def test_info_summarises(tmp_path):
    write_dataset(tmp_path, episodes=3, steps=4)
    info = DatasetInfo.from_dir(tmp_path)
    assert info.num_episodes == 3 and info.lengths == [4, 4, 4]
    assert info.success_rate == pytest.approx(2 / 3)
    assert info.interventions == 3 and info.size_bytes > 0
    assert "control rate 10 Hz" in info.summary()


def _rewrite(path: Path, **changes) -> None:
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for k, v in changes.items():
        if v is None:
            del arrays[k]
        else:
            arrays[k] = v
    np.savez(path, **arrays)


@pytest.mark.parametrize("change,message", [
    ({"reward": None}, "reward: missing required key"),
    ({"reward": np.array([0, 1, np.nan, 3, 4], np.float32)}, "reward: contains NaN"),
    ({"task": np.zeros((6, 3), np.float64)}, "task: expected dtype float32"),
    ({"task": np.full((6, 3), np.inf, np.float32)}, "task: contains NaN"),
    ({"features": np.zeros((6, 3), np.float32)}, "features: not an episode key"),
    ({"action": np.zeros((5, 4), np.float64)}, "action: expected dtype float32"),
    ({"state": np.zeros((5, 5), np.float32)}, "state: length 5 does not match T+1 = 6"),
    ({"pixels": np.zeros((6, 8, 8), np.uint8)}, "pixels: expected shape"),
    ({"terminated": np.zeros(4, bool)}, "terminated: length 4 does not match T = 5"),
    ({"metadata": np.asarray("{not json")}, "metadata: not valid JSON"),
    ({"timestamp": np.array([0, 1, 2, 1, 3, 4], np.float64)}, "timestamp: timestamps go backwards"),
])
def test_validation_names_the_first_bad_file_and_key(tmp_path, change, message):
    write_dataset(tmp_path, episodes=3)
    bad = tmp_path / "episode_000001.npz"
    _rewrite(bad, **change)
    with pytest.raises(DatasetError) as err:
        check_dataset(tmp_path)
    assert str(bad) in str(err.value) and message in str(err.value)


def test_truncated_zip_is_named(tmp_path, capsys):
    write_dataset(tmp_path, episodes=3)
    bad = tmp_path / "episode_000002.npz"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="truncated or corrupt") as err:
        load_episode(bad)
    assert str(bad) in str(err.value)
    assert cli_main(["dataset", "check", str(tmp_path)]) == 1
    assert "episode_000002.npz" in capsys.readouterr().err
    sink = SimpleNamespace(add_first=lambda obs: None, add=lambda *transition: None)
    for read in (dataset_slots, lambda d: load_demos(d, sink, obs_keys=("state",))):   # the demo loaders too
        with pytest.raises(DatasetError, match="episode_000002.npz: <file>: not a readable"):
            read(tmp_path)


def test_pickled_member_is_refused_and_named(tmp_path):
    write_dataset(tmp_path, episodes=2)
    bad = tmp_path / "episode_000001.npz"
    _rewrite(bad, reward=np.array([0.0, 1.0, {"evil": 1}, 3.0, 4.0], dtype=object))
    with pytest.raises(DatasetError, match="pickled") as err:
        load_episode(bad)
    assert str(err.value).startswith(f"{bad}: reward:")
    with pytest.raises(DatasetError, match="episode_000001.npz: reward: holds a pickled object"):
        check_dataset(tmp_path)


def test_an_episode_holds_any_of_the_observation_keys(tmp_path):
    w = EpisodeWriter(tmp_path, {"task": "reach"})
    w.start_episode({"pixels": np.zeros((8, 8, 3), np.uint8)})     # obs_mode pixels: no state
    w.add_step(np.zeros(4), {"pixels": np.ones((8, 8, 3), np.uint8)}, terminated=True)
    ep = load_episode(w.end_episode(True))
    assert ep.obs_keys == ["pixels"] and ep.length == 1
    _rewrite(ep.path, pixels=None)
    with pytest.raises(DatasetError, match="no observation arrays"):
        load_episode(ep.path)


def test_the_writer_takes_env_dicts_with_raw_frames_only(tmp_path):
    w = EpisodeWriter(tmp_path, {"task": "reach"})
    with pytest.raises(TypeError, match="dicts"):
        w.start_episode(np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="PixelFrameStack"):            # a (3k, H, W) stack is not a frame
        w.start_episode({"pixels": np.zeros((9, 8, 8), np.uint8)})
    with pytest.raises(ValueError, match="encoder"):
        w.start_episode({"features": np.zeros(8, np.float32)})
    w.start_episode({"state": np.zeros(3)})
    w.add_step(np.zeros(2), {"state": np.full(3, np.nan)})
    with pytest.raises(DatasetError, match="state: contains NaN"):       # refused at record time
        w.end_episode(True)
    assert episode_paths(tmp_path) == []


def test_inconsistent_shapes_across_episodes(tmp_path):
    w = write_dataset(tmp_path, episodes=1)
    w.start_episode({"state": np.zeros(7), "pixels": np.zeros((8, 8, 3), np.uint8)})
    w.add_step(np.zeros(4), {"state": np.zeros(7), "pixels": np.zeros((8, 8, 3), np.uint8)})
    w.end_episode(False)
    with pytest.raises(DatasetError, match="episode_000001.npz: state: per-step shape"):
        check_dataset(tmp_path)


def test_cli_info_and_check_ok(tmp_path, capsys):
    write_dataset(tmp_path, episodes=2)
    assert cli_main(["dataset", "check", str(tmp_path)]) == 0
    assert "OK 2 episodes" in capsys.readouterr().out
    assert cli_main(["dataset", "info", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["episodes"] == 2 and out["success_rate"] == 0.5 and out["control_hz"] == 10.0


def test_exception_during_write_leaves_earlier_episodes(tmp_path, monkeypatch):
    w = write_dataset(tmp_path, episodes=2)
    w.start_episode(_obs(0))
    w.add_step(np.zeros(4), _obs(1))

    def exploding_save(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        w.end_episode(True)
    assert [p.name for p in episode_paths(tmp_path)] == ["episode_000000.npz", "episode_000001.npz"]
    assert sorted(os.listdir(tmp_path)) == ["dataset.json", "episode_000000.npz", "episode_000001.npz"]
    assert check_dataset(tmp_path) == 2


def test_kill_9_mid_recording_leaves_every_written_episode_readable(tmp_path):
    """A writer killed at an arbitrary moment: whatever is on disk under a final name is whole."""
    script = textwrap.dedent(f"""
        import numpy as np, sys
        from se_robot.data.writer import EpisodeWriter
        w = EpisodeWriter({str(tmp_path)!r}, {{"task": "push"}})
        rng = np.random.default_rng(0)
        while True:
            w.start_episode({{"pixels": rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), "state": np.zeros(3)}})
            for t in range(40):
                w.add_step(np.zeros(4), {{"pixels": rng.integers(0, 255, (64, 64, 3), dtype=np.uint8),
                                         "state": np.zeros(3)}})
            w.end_episode(True)
            print(w.next_index, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(3):  # wait until three episodes are written, then kill whatever it is doing
            assert proc.stdout.readline(), "writer exited early"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    n = check_dataset(tmp_path)
    assert n >= 3
    for ep in iter_episodes(tmp_path):
        assert ep.length == 40


# ------------------------------------------------------------------ files from someone else: limits, strays, races

def _npz_with_member(path: Path, key: str, header: dict, payload: bytes, compress: bool = False) -> None:
    """An episode file whose ``key`` member is written by hand: any header, any bytes behind it."""
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files if k != key}
    np.savez(path, **arrays)
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, header)
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "a", compression=method, allowZip64=True) as zf:
        with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
            f.write(head.getvalue())
            f.write(payload)


def _demo_readers(directory: Path) -> list:
    """Every path ``train --demos`` and ``dataset check`` read a dataset through."""
    sink = SimpleNamespace(add_first=lambda obs: None, add=lambda *transition: None)
    return [check_dataset, DatasetInfo.from_dir, dataset_slots,
            lambda d: load_demos(d, sink, obs_keys=("state",))]


def test_a_member_claiming_a_huge_array_is_refused_before_allocating(tmp_path):
    write_dataset(tmp_path, episodes=2)
    bad = tmp_path / "episode_000001.npz"
    shape = (3_000_000_000_000,)    # float64: 21.8 TiB, in a file of a few kB
    _npz_with_member(bad, "reward", {"descr": "<f8", "fortran_order": False, "shape": shape}, b"\0" * 40)
    with pytest.raises(DatasetError, match=r"reward: header claims a float64 array of shape \(3000000000000,\) "
                                           r"\(21.8 TiB\), but the member holds 40 bytes") as err:
        load_episode(bad)
    assert str(err.value).startswith(str(bad))
    for read in _demo_readers(tmp_path):
        with pytest.raises(DatasetError, match="episode_000001.npz: reward: header claims"):
            read(tmp_path)


def test_a_zip_bomb_is_refused_from_its_zip_directory_without_inflating(tmp_path):
    """The issue's bomb (1.5 MB inflating to GBs) made ``dataset check`` use 1.87 GB."""
    write_dataset(tmp_path, episodes=2)
    bad = tmp_path / "episode_000000.npz"
    frames = (6, 4096, 4096, 3)   # uint8 zeros: 302 MB that deflate to ~0.3 MB
    zeros = bytes(1 << 24)
    with np.load(bad) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "pixels"}
    np.savez(bad, **arrays)
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "|u1", "fortran_order": False, "shape": frames})
    with zipfile.ZipFile(bad, "a", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        with zf.open("pixels.npy", "w", force_zip64=True) as f:
            f.write(head.getvalue())
            for _ in range(int(np.prod(frames)) // len(zeros)):
                f.write(zeros)
    assert bad.stat().st_size < 2_000_000
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match=r"episode_000000.npz: pixels: inflates \d+x .* a zip bomb"):
            load_episode(bad)
        for read in _demo_readers(tmp_path):
            with pytest.raises(DatasetError, match="episode_000000.npz: pixels: inflates"):
                read(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"refusing the bomb allocated {peak / 2**20:.0f} MiB"
    assert cli_main(["dataset", "check", str(tmp_path)]) == 1


def test_a_stray_npz_is_refused_alike_by_check_and_by_the_demo_loaders(tmp_path, capsys):
    write_dataset(tmp_path, episodes=2)
    (tmp_path / "episode_000001.npz").rename(tmp_path / "episode_old.npz")
    for read in _demo_readers(tmp_path):
        with pytest.raises(DatasetError, match="episode_old.npz: <file>: not a numbered episode file"):
            read(tmp_path)
    assert cli_main(["dataset", "check", str(tmp_path)]) == 1
    assert "episode_old.npz" in capsys.readouterr().err
    with pytest.raises(DatasetError, match="episode_old.npz"):   # and no recorder appends past it unseen
        EpisodeWriter(tmp_path, {"task": "push", "control_hz": 10.0})


@pytest.mark.parametrize("damage", ["nan_reward", "truncated"])
def test_train_with_demos_stops_naming_the_bad_file(tmp_path, capsys, damage):
    data = tmp_path / "demos"
    write_dataset(data, episodes=2)
    bad = data / "episode_000001.npz"
    if damage == "nan_reward":
        _rewrite(bad, reward=np.array([0, 1, np.nan, 3, 4], np.float32))
    else:
        bad.write_bytes(bad.read_bytes()[:-200])
    assert cli_main(["train", "--task", "reach", "--algo", "sac", "--obs-mode", "state", "--demos", str(data),
                     "--steps", "10", "--out", str(tmp_path / "run"), "--no-progress",
                     "--set", "tensorboard=false", "--set", "device=cpu"]) == 1
    err = capsys.readouterr().err
    assert f"se-robot: dataset error: {bad}: " in err
    assert ("reward: contains NaN" if damage == "nan_reward" else "truncated or corrupt") in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_two_writers_opened_on_one_directory_keep_every_episode(tmp_path):
    a = EpisodeWriter(tmp_path, {"task": "push", "control_hz": 10.0})
    b = EpisodeWriter(tmp_path, {"task": "push", "control_hz": 10.0})
    written = []
    for i in range(6):
        for name, w in (("a", a), ("b", b)):
            w.start_episode(_obs(0), metadata={"writer": name, "i": i})
            w.add_step(np.zeros(4), _obs(1))
            written.append(w.end_episode(True))
    assert len(set(written)) == 12
    assert sorted((ep.metadata["writer"], ep.metadata["i"]) for ep in iter_episodes(tmp_path)) == \
        sorted((w, i) for i in range(6) for w in "ab")


def test_two_recorder_processes_on_one_directory_never_overwrite_each_other(tmp_path):
    """The issue's case (33 of 81 episodes lost): both pick their first index before either writes."""
    go = tmp_path / "go"
    script = textwrap.dedent(f"""
        import pathlib, sys, time
        import numpy as np
        from se_robot.data.writer import EpisodeWriter
        name = sys.argv[1]
        w = EpisodeWriter({str(tmp_path / "data")!r}, {{"task": "push"}})
        print("ready", flush=True)
        while not pathlib.Path({str(go)!r}).exists():
            time.sleep(0.01)
        for i in range(25):
            w.start_episode({{"state": np.zeros(3)}}, metadata={{"writer": name, "i": i}})
            w.add_step(np.zeros(4), {{"state": np.ones(3)}})
            w.end_episode(True)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, name], stdout=subprocess.PIPE, text=True)
             for name in "ab"]
    try:
        for proc in procs:   # both writers exist (and chose index 0) before either writes
            assert proc.stdout.readline() == "ready\n"
        go.touch()
        for proc in procs:
            assert proc.wait() == 0
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
            proc.stdout.close()
    kept = sorted((ep.metadata["writer"], ep.metadata["i"]) for ep in iter_episodes(tmp_path / "data"))
    assert kept == sorted((w, i) for i in range(25) for w in "ab")
    assert check_dataset(tmp_path / "data") == 50


def test_episode_files_get_the_usual_permissions(tmp_path):
    """Temp files are created exclusively, but with the umask's mode like any file (not mkstemp's 0600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    write_dataset(tmp_path, episodes=1)
    for name in ("dataset.json", "episode_000000.npz"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask


def test_demos_are_relabelled_by_the_learned_reward_they_will_be_mixed_with(tmp_path):
    """With a classifier as the reward, a demo's recorded dense reward (0, 1, 2, ...) would sit in
    the same batches as online 0/1 rewards: load_demos relabels it as the reward wrapper would."""
    write_dataset(tmp_path, episodes=2, steps=5)

    class Sink:
        def __init__(self):
            self.rows: list[tuple[float, bool, bool]] = []

        def add_first(self, obs):
            self.rows.append(("first", float(obs["pixels"].mean())))

        def add(self, action, reward, next_obs, terminated, truncated):
            self.rows.append((reward, terminated, truncated, float(next_obs["pixels"].mean())))

    sink = Sink()
    # the judge says success once a frame is bright enough: from the frame after the 3rd step on
    load_demos(tmp_path, sink, obs_keys=("pixels", "state"), success_fn=lambda frames: frames.mean(axis=(1, 2, 3)) >= 3)
    episode = [("first", 0.0), (0.0, False, False, 1.0), (0.0, False, False, 2.0), (1.0, True, False, 3.0)]
    assert sink.rows == episode + episode   # the episode ends at the judged success, as online

    sink = Sink()
    load_demos(tmp_path, sink, obs_keys=("pixels", "state"))   # without a judge: the recorded rewards
    assert [r[0] for r in sink.rows[1:6]] == [0.0, 1.0, 2.0, 3.0, 4.0]
