"""Whole-dataset views over the episode reader: consistency checks and summaries.

``se-robot dataset check`` and ``dataset info`` use these; every file is read through
``se_robot.data.episodes.load_episode`` (the one reader of episode files).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from se_robot.data.episodes import (DatasetError, DatasetMeta, episode_paths, is_obs_key, load_episode,
                                    read_dataset_meta)


def check_dataset(directory: str | Path) -> int:
    """Validate ``dataset.json`` and every episode, plus consistency across episodes.

    Returns the number of episodes; raises DatasetError naming the first bad file.
    """
    directory = Path(directory)
    read_dataset_meta(directory)
    shapes: dict[str, tuple] | None = None
    count = 0
    for path in episode_paths(directory):
        ep = load_episode(path)
        these = {k: v.shape[1:] for k, v in ep.arrays.items()
                 if k == "action" or is_obs_key(k)}
        if shapes is None:
            shapes, first = these, path
        elif these != shapes:
            key = next((k for k in sorted(set(these) | set(shapes)) if these.get(k) != shapes.get(k)))
            raise DatasetError(path, key, f"per-step shape {these.get(key)} differs from {shapes.get(key)} "
                               f"in {first.name}")
        count += 1
    return count


@dataclasses.dataclass
class DatasetInfo:
    """A summary of a dataset for ``se-robot dataset info`` and for loaders sizing buffers."""

    directory: Path
    meta: DatasetMeta
    num_episodes: int
    lengths: list[int]
    successes: list[bool]
    interventions: int
    size_bytes: int
    keys: dict[str, tuple[tuple[int, ...], str]]

    @property
    def num_steps(self) -> int:
        return int(sum(self.lengths))

    @property
    def success_rate(self) -> float:
        return float(np.mean(self.successes)) if self.successes else float("nan")

    @classmethod
    def from_dir(cls, directory: str | Path) -> "DatasetInfo":
        directory = Path(directory)
        meta = read_dataset_meta(directory)
        lengths, successes, interventions, keys, size = [], [], 0, {}, 0
        for path in episode_paths(directory):
            ep = load_episode(path)
            size += path.stat().st_size
            lengths.append(ep.length)
            successes.append(ep.success)
            interventions += int(np.sum(ep.arrays.get("intervention", 0)))
            if not keys:
                keys = {k: (tuple(v.shape[1:]), str(v.dtype)) for k, v in ep.arrays.items()
                        if k not in ("metadata", "success")}
        return cls(directory, meta, len(lengths), lengths, successes, interventions, size, keys)

    def summary(self) -> str:
        lines = [f"dataset      {self.directory}",
                 f"task         {self.meta.task}   arm {self.meta.arm}   camera {self.meta.camera}",
                 f"control rate {self.meta.control_hz:g} Hz   format v{self.meta.format_version}   "
                 f"created {self.meta.created}",
                 f"episodes     {self.num_episodes}   steps {self.num_steps}"]
        if self.lengths:
            lens = np.asarray(self.lengths)
            lines.append(f"length       min {lens.min()}  mean {lens.mean():.1f}  max {lens.max()} steps "
                         f"({lens.mean() / self.meta.control_hz:.1f} s mean)")
            lines.append(f"success      {sum(self.successes)}/{self.num_episodes} ({100 * self.success_rate:.1f}%)")
            share = 100 * self.interventions / max(self.num_steps, 1)
            lines.append(f"intervention {self.interventions} steps ({share:.1f}%)")
        lines.append(f"size         {self.size_bytes / 1e6:.2f} MB on disk")
        for k, (shape, dtype) in sorted(self.keys.items()):
            lines.append(f"  {k:<14s} {dtype:<8s} per step {shape}")
        return "\n".join(lines)
