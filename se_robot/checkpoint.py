"""Checkpoints that survive ``kill -9`` and refuse to load when damaged.

A checkpoint is the directory ``<run>/checkpoints/step_<N>/`` holding:

- ``agent.pt``    the agent's ``state_dict()`` (networks, optimizers, schedules);
- ``trainer.pt``  step counters, RNG states of python/numpy/torch, the env's RNG state, logger state;
- ``config.yaml`` the full training config, so ``evaluate`` and ``--resume`` need nothing else;
- ``replay/`` and ``demos/`` the buffers (``ReplayBuffer.save``), when saved;
- ``manifest.json`` the size and sha256 of every other file, written last.

Writing: everything goes to a temp dir, the manifest last, all fsynced, then ``os.replace`` renames
the directory into place (atomic on POSIX), so a reader sees either the old set of checkpoints or
the old set plus one complete new one. Temp directories left by a killed writer start with a dot
and are ignored (and removed on the next save).

Reading: a disk that flips bits or a copy cut short would otherwise load silently (flipped bytes in
``agent.pt`` become NaN optimizer state). `resolve` verifies the manifest and, given a run directory,
skips a damaged newest checkpoint for the newest intact one with a `CheckpointWarning` naming the bad
file. A checkpoint without a manifest (written before checkpoints carried checksums, or one whose
manifest was lost) counts as damaged until its owner vouches for it: `seal` (``se-robot checkpoint
seal``) loads its files as tensors only, checks every float is finite and writes the manifest. Files are loaded with ``weights_only=True``: tensors and plain containers only, so
a planted pickle cannot run code even with a matching manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

CHECKPOINT_DIR = "checkpoints"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
REQUIRED_FILES = ("agent.pt", "trainer.pt", "config.yaml")
_NAME = re.compile(r"^step_(\d+)$")


class CheckpointError(FileNotFoundError):
    """No usable checkpoint where one was asked for: missing, corrupt, or holding more than tensors.

    A ``FileNotFoundError`` so that callers which already turn "no checkpoint here" into a clear
    message (``train --resume``, ``evaluate --checkpoint``) do the same for "no intact one here".
    """


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped because it failed verification; an older one was used instead."""


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        fd = os.open(dirpath, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def rng_state() -> dict[str, Any]:
    """The global RNGs the loop and the agents draw from."""
    legacy = np.random.get_state(legacy=False)   # plain containers, so checkpoints load with weights_only
    legacy["state"]["key"] = legacy["state"]["key"].tolist()
    return {"python": random.getstate(), "numpy": legacy,
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _files(ckpt: Path) -> list[str]:
    """Every file under ``ckpt`` but the manifest, as sorted POSIX paths relative to it."""
    return sorted(p.relative_to(ckpt).as_posix() for p in ckpt.rglob("*") if p.is_file() and p.name != MANIFEST)


def _write_manifest(ckpt: Path) -> None:
    files = {name: {"bytes": (ckpt / name).stat().st_size, "sha256": _sha256(ckpt / name)}
             for name in _files(ckpt)}
    tmp = ckpt / f".{MANIFEST}.tmp"
    with open(tmp, "w") as f:
        json.dump({"format": MANIFEST_FORMAT, "files": files}, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, ckpt / MANIFEST)


def verify(ckpt: str | Path) -> None:
    """Check every file of a checkpoint against its manifest; raise CheckpointError naming the first bad one."""
    ckpt = Path(ckpt)
    try:
        manifest = json.loads((ckpt / MANIFEST).read_text())
        files = manifest["files"]
        if manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict):
            raise ValueError(f"format {manifest.get('format')!r}, this code reads {MANIFEST_FORMAT}")
    except FileNotFoundError:
        raise CheckpointError(f"{ckpt / MANIFEST}: missing (written before checkpoints carried checksums, "
                              f"or the manifest was lost); if you trust it: se-robot checkpoint seal {ckpt}") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{ckpt / MANIFEST}: unreadable ({e})") from None
    for name in REQUIRED_FILES:
        if name not in files:
            raise CheckpointError(f"{ckpt / name}: not listed in {MANIFEST}")
    present = _files(ckpt)
    unlisted = sorted(set(present) - set(files))
    if unlisted:
        raise CheckpointError(f"{ckpt / unlisted[0]}: not listed in {MANIFEST} "
                              "(added after the checkpoint was written)")
    for name, entry in sorted(files.items()):
        path = ckpt / name
        if name not in present:
            raise CheckpointError(f"{path}: missing (listed in {MANIFEST})")
        try:
            size, digest = int(entry["bytes"]), str(entry["sha256"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{ckpt / MANIFEST}: entry for {name} is malformed") from None
        actual = path.stat().st_size
        if actual != size:
            raise CheckpointError(f"{path}: {actual} bytes, the manifest says {size} (truncated or overwritten)")
        if _sha256(path) != digest:
            raise CheckpointError(f"{path}: sha256 does not match the manifest (the file is corrupt)")


def resolve(path: str | Path) -> Path:
    """An intact checkpoint directory from either itself or its run directory.

    Given a checkpoint directory, it is verified and returned, or CheckpointError names the bad
    file. Given a run directory, the newest checkpoint that verifies is returned; each newer damaged
    one is skipped with a CheckpointWarning naming its bad file. Nothing intact: CheckpointError
    listing every checkpoint tried and why it failed.
    """
    path = Path(path)
    if _NAME.match(path.name) or (path / "agent.pt").is_file() or (path / MANIFEST).is_file():
        if not path.is_dir():
            raise CheckpointError(f"{path}: no such checkpoint directory")
        verify(path)
        return path
    found = list_checkpoints(path)
    if not found:
        raise CheckpointError(f"{path}: neither a checkpoint (no agent.pt) nor a run directory with "
                              f"checkpoints under {CHECKPOINT_DIR}/")
    tried = []
    for ckpt in reversed(found):
        try:
            verify(ckpt)
        except CheckpointError as e:
            tried.append(str(e))
            continue
        for problem in tried:
            warnings.warn(f"skipping a damaged checkpoint: {problem}; using {ckpt}", CheckpointWarning, stacklevel=2)
        return ckpt
    raise CheckpointError(f"{path}: no intact checkpoint; tried, newest first:\n  " + "\n  ".join(tried))


def save(run_dir: str | Path, step: int, agent_state: dict[str, Any], trainer_state: dict[str, Any],
         config: dict[str, Any], buffers: dict[str, Any] | None = None, keep_last: int = 3) -> Path:
    """Write ``step_<step>`` atomically with its manifest; keep it and the ``keep_last - 1`` newest older ones."""
    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"step_{step:09d}"
    tmp = root / f".tmp-step_{step:09d}-{os.getpid()}"
    tmp.mkdir()
    torch.save(agent_state, tmp / "agent.pt")
    torch.save(trainer_state, tmp / "trainer.pt")
    (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for name, buffer in (buffers or {}).items():
        if buffer is not None:
            buffer.save(tmp / name)
    _write_manifest(tmp)         # last: its presence means every file it lists was written
    _fsync_tree(tmp)
    if final.exists():           # same step saved twice (e.g. final save right after a periodic one)
        shutil.rmtree(final)
    os.replace(tmp, final)
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    # Only older steps count: newer ones are left from a run that resumed past a damaged newest
    # checkpoint, and counting them could delete every intact one.
    older = [c for c in list_checkpoints(run_dir) if int(_NAME.match(c.name).group(1)) < step]
    for old in older[:len(older) - (keep_last - 1)] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _load_tensors(path: Path, map_location: str | torch.device) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:   # torch's own message suggests loading it unsafely: not ours to repeat
        raise CheckpointError(f"{path}: not only tensors and plain containers (corrupt, or pickled Python "
                              "objects, refused since loading them would run code)") from None
    except Exception as e:  # torch raises several unrelated types for a truncated or corrupt file
        raise CheckpointError(f"{path}: cannot be read: {type(e).__name__}: {e}") from None


def _first_nonfinite(tree: Any, where: str) -> str | None:
    if isinstance(tree, torch.Tensor):
        return where if tree.is_floating_point() and not bool(torch.isfinite(tree).all()) else None
    if isinstance(tree, np.ndarray):
        return where if tree.dtype.kind == "f" and not bool(np.isfinite(tree).all()) else None
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    return next((bad for k, v in items if (bad := _first_nonfinite(v, f"{where}/{k}")) is not None), None)


def seal(ckpt: str | Path) -> Path:
    """Write the manifest of a checkpoint that has none (one written before checkpoints carried
    checksums), after checking what can be checked without one: the required files are there,
    ``agent.pt`` and ``trainer.pt`` load as tensors only, every float in them is finite and
    ``config.yaml`` parses. The owner vouches for the rest; a checkpoint with a manifest is refused."""
    ckpt = Path(ckpt)
    if not (ckpt / "agent.pt").is_file():
        raise CheckpointError(f"{ckpt}: not a checkpoint directory (no agent.pt)")
    if (ckpt / MANIFEST).exists():
        raise CheckpointError(f"{ckpt / MANIFEST}: already there; nothing to seal (se-robot checkpoint "
                              "verifies on every load)")
    for name in REQUIRED_FILES:
        if not (ckpt / name).is_file():
            raise CheckpointError(f"{ckpt / name}: missing")
    for name in ("agent.pt", "trainer.pt"):
        bad = _first_nonfinite(_load_tensors(ckpt / name, "cpu"), name)
        if bad is not None:
            raise CheckpointError(f"{ckpt / name}: NaN or inf at {bad} (a damaged file); not sealed")
    try:
        yaml.safe_load((ckpt / "config.yaml").read_text())
    except yaml.YAMLError as e:
        raise CheckpointError(f"{ckpt / 'config.yaml'}: not valid YAML ({e})") from None
    _write_manifest(ckpt)
    return ckpt


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Agent state, trainer state and config of an intact checkpoint (see `resolve`)."""
    ckpt = resolve(path)
    try:
        config = yaml.safe_load((ckpt / "config.yaml").read_text())
    except yaml.YAMLError as e:
        raise CheckpointError(f"{ckpt / 'config.yaml'}: not valid YAML ({e})") from None
    return {"path": ckpt, "agent": _load_tensors(ckpt / "agent.pt", map_location),
            "trainer": _load_tensors(ckpt / "trainer.pt", "cpu"), "config": config}
