"""Saving and loading a replay buffer: plain arrays and JSON, every array checked before use.

A saved buffer may come from another machine (a run directory someone shares), so loading trusts
nothing in it: no pickles, only the array names ``save_replay`` writes, each memory-mapped first so
a header claiming more than its file holds is refused without allocating, then checked for length,
dtype and finiteness; a capacity larger than this machine's memory is refused before allocating.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np

from se_robot.agents.replay import FORMAT_VERSION, ReplayBuffer, ReplayConfig

PER_SLOT = ReplayBuffer._PER_SLOT


def save_replay(buf: ReplayBuffer, directory: str | Path) -> None:
    """Write ``buf`` to ``directory`` atomically (temp dir, then rename into place)."""
    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n = len(buf)
    arrays = {f"obs.{k}": v[:n] for k, v in buf._arrays.items()}
    arrays.update({name.lstrip("_"): getattr(buf, name)[:n] for name in PER_SLOT})
    if buf._action is not None:
        arrays["action"] = buf._action[:n]
    if buf._tree is not None:
        arrays["priority"] = buf._tree.state()[:n]
    for name, value in arrays.items():
        with open(tmp / f"{name}.npy", "wb") as f:
            np.save(f, value)
            f.flush()
            os.fsync(f.fileno())
    meta = {"format_version": FORMAT_VERSION, "config": dataclasses.asdict(buf.cfg),
            "written": buf.written, "transitions": buf.transitions, "episodes": buf.episodes,
            "open": buf._open, "image_keys": buf._image_keys, "max_priority": buf._max_priority,
            "rng": buf.rng.bit_generator.state}
    (tmp / "meta.json").write_text(json.dumps(meta))
    old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def load_replay(directory: str | Path, cls: type[ReplayBuffer] = ReplayBuffer,
                grow_by: int = 0) -> ReplayBuffer:
    """A buffer written by ``save_replay`` (``cls``: ReplayBuffer or a subclass); see the module
    docstring for what is checked. Errors name the file. ``grow_by`` slots more than the saved
    capacity give a buffer that never wrapped room to take more episodes (demos added on resume)."""
    directory = Path(directory)
    try:
        meta = json.loads((directory / "meta.json").read_text())
        version = meta.get("format_version")
        buf_cfg = ReplayConfig(**meta["config"])
        written = int(meta["written"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{directory}: not a saved replay buffer ({e})") from None
    if version != FORMAT_VERSION:
        raise ValueError(f"{directory}/meta.json: format_version {version!r}, this code reads {FORMAT_VERSION}")
    if grow_by > 0:
        if written > buf_cfg.capacity:   # its slots are no longer in write order
            raise ValueError(f"{directory}: the buffer has wrapped around its capacity; it cannot grow")
        buf_cfg = dataclasses.replace(buf_cfg, capacity=buf_cfg.capacity + grow_by)
    arrays = {path.stem: _mapped_array(path, min(written, buf_cfg.capacity))
              for path in sorted(directory.glob("*.npy"))}
    row_bytes = sum(v[:1].nbytes for v in arrays.values())
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if buf_cfg.capacity * row_bytes > memory:
        raise ValueError(f"{directory}/meta.json: capacity {buf_cfg.capacity} needs "
                         f"{buf_cfg.capacity * row_bytes / 2**30:.1f} GiB, more than this machine's "
                         f"{memory / 2**30:.1f} GiB")
    buf = cls(buf_cfg)
    n = min(written, buf.capacity)
    per_slot = {name.lstrip("_"): getattr(buf, name).dtype for name in PER_SLOT}
    for name, value in arrays.items():
        path = directory / f"{name}.npy"
        want = {"action": np.dtype(np.float32), "priority": np.dtype(np.float64)}.get(name, per_slot.get(name))
        if want is None and not name.startswith("obs."):
            raise ValueError(f"{path}: not an array a replay buffer saves")
        if want is not None and value.dtype != want:
            raise ValueError(f"{path}: expected dtype {want}, got {value.dtype}")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ValueError(f"{path}: contains NaN or infinite values")
        if name.startswith("obs."):
            key = name[4:]
            buf._arrays[key] = np.zeros((buf.capacity, *value.shape[1:]), value.dtype)
            buf._arrays[key][:n] = value
        elif name == "action":
            if value.ndim != 2:
                raise ValueError(f"{path}: expected shape (N, A), got {value.shape}")
            buf._action = np.zeros((buf.capacity, value.shape[1]), np.float32)
            buf._action[:n] = value
        elif name == "priority":
            if buf._tree is None:
                raise ValueError(f"{path}: priorities saved for a buffer whose config is not prioritized")
            leaves = np.zeros(buf.capacity)
            leaves[:n] = value
            buf._tree.load(leaves)
        else:
            getattr(buf, "_" + name)[:n] = value
    buf._image_keys = list(meta["image_keys"])
    buf.written, buf.transitions, buf.episodes = written, meta["transitions"], meta["episodes"]
    buf._open, buf._max_priority = meta["open"], meta["max_priority"]
    buf.rng.bit_generator.state = meta["rng"]
    return buf


def _mapped_array(path: Path, rows: int) -> np.ndarray:
    """A saved array memory-mapped read-only (nothing read yet), refused unless it holds ``rows`` rows."""
    try:
        value = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:   # a pickled dtype, a header claiming more than the file holds
        raise ValueError(f"{path}: not a plain saved array ({e})") from None
    if value.ndim < 1 or value.shape[0] != rows:
        raise ValueError(f"{path}: shape {value.shape}, expected {rows} saved rows (meta.json)")
    return value
