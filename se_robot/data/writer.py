"""Writes episode datasets: `EpisodeWriter` appends one ``.npz`` per episode, each atomically.

The layout is defined, and every episode validated, by `se_robot.data.episodes` (the one reader):
an episode that would not load fails here, at record time, not at training. Each file is written
to a hidden temporary name in the same directory, flushed with ``fsync`` and then hard-linked to its
final name, which fails if that name exists: a crash or a ``kill -9`` mid-write never leaves a
partial episode under a final name, and two recorders writing one directory never overwrite each
other (the second to claim an index takes the next free one). The directory must be on a file
system with hard links (any local POSIX one).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from se_robot.data.episodes import (DATASET_FILE, TMP_SUFFIX, DatasetError, DatasetMeta, episode_filename,
                                    is_obs_key, is_pixel_key, numbered_episode_files, read_dataset_meta,
                                    validate_arrays)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_temp(path: Path, write: Any) -> Path:
    """Write via ``write(fileobj)`` to a new hidden temp file next to ``path``, fsynced; returns its path."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")   # unique per write
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)   # the umask applies, as for open()
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink()
        raise
    return tmp


def _link_new(tmp: Path, path: Path) -> bool:
    """Give the complete file ``tmp`` the name ``path`` too, unless that name exists (atomic, never overwrites)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    _fsync_dir(path.parent)
    return True


def write_dataset_meta(directory: str | Path, meta: DatasetMeta) -> bool:
    """Create ``dataset.json`` unless another writer already did; returns whether this call created it."""
    path = Path(directory) / DATASET_FILE
    payload = json.dumps(meta.to_json(), indent=2, sort_keys=True).encode() + b"\n"
    tmp = _write_temp(path, lambda f: f.write(payload))
    try:
        return _link_new(tmp, path)
    finally:
        tmp.unlink()


def _obs_arrays(obs: Any) -> dict[str, np.ndarray]:
    """The observation keys of an env observation dict, checked against the episode layout."""
    if not isinstance(obs, Mapping):
        raise TypeError(f"observations are dicts (state, task, pixels), got {type(obs).__name__}")
    unknown = [k for k in obs if not is_obs_key(k)]
    if unknown or not obs:
        raise ValueError(f"episodes store the env's state, task and pixels* keys; got {sorted(obs)} "
                         "(record the env without encoder wrappers)")
    out = {k: np.asarray(v) for k, v in obs.items()}
    for k, v in out.items():
        if is_pixel_key(k) and (v.dtype != np.uint8 or v.ndim != 3 or v.shape[-1] != 3):
            raise ValueError(f"{k}: episodes store the camera's raw uint8 (H, W, 3) frames, got {v.dtype} "
                             f"{v.shape} (record the env without PixelFrameStack)")
    return out


class EpisodeWriter:
    """Appends episodes to a dataset directory, each one atomically.

    Use: ``start_episode(obs)``, then ``add_step(action, obs, reward, ...)`` once per env step
    with the observation *after* the action, then ``end_episode(success)`` to write the file or
    ``discard()`` to drop it (the operator's re-record). Episodes are numbered after the highest
    existing one, so recording can resume into the same directory.
    """

    def __init__(self, directory: str | Path, dataset_meta: DatasetMeta | Mapping[str, Any],
                 compress: bool = True):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        meta = (dataset_meta if isinstance(dataset_meta, DatasetMeta)
                else DatasetMeta.from_json(dataset_meta, "<dataset_meta>"))
        if not meta.created:
            meta = dataclasses.replace(meta, created=datetime.datetime.now(datetime.timezone.utc).isoformat())
        existing = self.directory / DATASET_FILE
        if existing.exists() or not write_dataset_meta(self.directory, meta):
            old = read_dataset_meta(self.directory)
            for key in ("task", "arm", "control_hz", "camera"):
                if getattr(old, key) != getattr(meta, key):
                    raise DatasetError(existing, key, f"dataset has {getattr(old, key)!r}, "
                                       f"new episodes would have {getattr(meta, key)!r}; use another directory")
            meta = old
        self.meta = meta
        self.compress = compress
        self.next_index = self._first_free_index()
        self._steps: dict[str, list] | None = None
        self._episode_meta: dict[str, Any] = {}

    def _first_free_index(self) -> int:
        return max((i for i, _ in numbered_episode_files(self.directory)), default=-1) + 1

    @property
    def recording(self) -> bool:
        return self._steps is not None

    @property
    def num_steps(self) -> int:
        return 0 if self._steps is None else len(self._steps["action"])

    def start_episode(self, obs: Any, timestamp: float | None = None,
                      metadata: Mapping[str, Any] | None = None) -> None:
        """Begin an episode with the observation from ``env.reset``; drops any unfinished one."""
        first = _obs_arrays(obs)
        self._steps = {k: [v.copy()] for k, v in first.items()}
        self._steps.update(action=[], reward=[], terminated=[], truncated=[], intervention=[],
                           timestamp=[time.time() if timestamp is None else float(timestamp)])
        self._obs_keys = tuple(first)
        self._episode_meta = dict(metadata or {})

    def add_step(self, action: Any, obs: Any, reward: float = 0.0, terminated: bool = False,
                 truncated: bool = False, intervention: bool = False, timestamp: float | None = None) -> None:
        """Record one transition: ``action`` taken, then ``obs`` observed and ``reward`` received."""
        if self._steps is None:
            raise RuntimeError("add_step before start_episode")
        nxt = _obs_arrays(obs)
        if tuple(nxt) != self._obs_keys:
            raise ValueError(f"observation keys changed within an episode: {self._obs_keys} -> {tuple(nxt)}")
        for k, v in nxt.items():
            self._steps[k].append(v.copy())
        self._steps["action"].append(np.asarray(action, dtype=np.float32).reshape(-1))
        self._steps["reward"].append(float(reward))
        self._steps["terminated"].append(bool(terminated))
        self._steps["truncated"].append(bool(truncated))
        self._steps["intervention"].append(bool(intervention))
        self._steps["timestamp"].append(time.time() if timestamp is None else float(timestamp))

    def discard(self) -> None:
        """Drop the episode in progress without writing anything (re-record)."""
        self._steps = None
        self._episode_meta = {}

    def end_episode(self, success: bool, metadata: Mapping[str, Any] | None = None) -> Path:
        """Write the episode in progress atomically and return its path."""
        if self._steps is None:
            raise RuntimeError("end_episode without an episode in progress")
        if not self._steps["action"]:
            raise ValueError("cannot write an episode with no steps; call discard() instead")
        s = self._steps
        arrays: dict[str, np.ndarray] = {}
        for k in self._obs_keys:
            stacked = np.stack(s[k])
            if is_pixel_key(k):
                arrays[k] = stacked.astype(np.uint8)
            else:
                arrays[k] = stacked.astype(np.float32).reshape(len(stacked), -1)
        arrays["action"] = np.stack(s["action"]).astype(np.float32)
        arrays["reward"] = np.asarray(s["reward"], dtype=np.float32)
        for k in ("terminated", "truncated", "intervention"):
            arrays[k] = np.asarray(s[k], dtype=bool)
        arrays["timestamp"] = np.asarray(s["timestamp"], dtype=np.float64)
        arrays["success"] = np.asarray(bool(success))
        meta = {"task": self.meta.task, "arm": self.meta.arm, "camera": self.meta.camera,
                "control_hz": self.meta.control_hz, **self._episode_meta, **(metadata or {})}
        arrays["metadata"] = np.asarray(json.dumps(meta, sort_keys=True, default=_json_default))
        path = self.directory / episode_filename(self.next_index)
        validate_arrays(arrays, path)   # a bad episode fails here, at record time, not at training
        save = np.savez_compressed if self.compress else np.savez
        tmp = _write_temp(path, lambda f: save(f, **arrays))
        try:
            while not _link_new(tmp, path):   # another recorder took this index: take the next free one
                self.next_index = max(self.next_index + 1, self._first_free_index())
                path = self.directory / episode_filename(self.next_index)
        finally:
            tmp.unlink()
        self.next_index += 1
        self.discard()
        return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"metadata value of type {type(value).__name__} is not JSON-serialisable")
