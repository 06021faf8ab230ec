"""Checkpoints that survive ``kill -9``: written to a temp dir, fsynced, renamed into place.

A checkpoint is the directory ``<run>/checkpoints/step_<N>/`` holding:

- ``agent.pt``    the agent's ``state_dict()`` (networks, optimizers, schedules);
- ``trainer.pt``  step counters, RNG states of python/numpy/torch, the env's RNG state, logger state;
- ``config.yaml`` the full training config, so ``evaluate`` and ``--resume`` need nothing else;
- ``replay/`` and ``demos/`` the buffers (``ReplayBuffer.save``), when saved.

``os.replace`` of a complete temp directory is atomic on POSIX, so a reader sees either the old
set of checkpoints or the old set plus one complete new one, never a half-written one. Temp
directories left by a killed writer start with a dot and are ignored (and removed on the next save).
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step_(\d+)$")


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


def resolve(path: str | Path) -> Path:
    """A checkpoint directory from either itself or its run directory (the latest one)."""
    path = Path(path)
    if (path / "agent.pt").is_file():
        return path
    found = list_checkpoints(path)
    if not found:
        raise FileNotFoundError(f"{path}: neither a checkpoint (no agent.pt) nor a run directory with "
                                f"checkpoints under {CHECKPOINT_DIR}/")
    return found[-1]


def save(run_dir: str | Path, step: int, agent_state: dict[str, Any], trainer_state: dict[str, Any],
         config: dict[str, Any], buffers: dict[str, Any] | None = None, keep_last: int = 3) -> Path:
    """Write ``step_<step>`` atomically and delete all but the newest ``keep_last`` checkpoints."""
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
    _fsync_tree(tmp)
    if final.exists():           # same step saved twice (e.g. final save right after a periodic one)
        shutil.rmtree(final)
    os.replace(tmp, final)
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    for old in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Agent state, trainer state and config of a checkpoint (or of the newest one in a run dir)."""
    ckpt = resolve(path)
    config = yaml.safe_load((ckpt / "config.yaml").read_text())
    # Tensors and plain containers only (no pickled objects): a checkpoint file cannot run code.
    agent = torch.load(ckpt / "agent.pt", map_location=map_location, weights_only=True)
    trainer = torch.load(ckpt / "trainer.pt", map_location="cpu", weights_only=True)
    return {"path": ckpt, "agent": agent, "trainer": trainer, "config": config}
