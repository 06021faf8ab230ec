"""Where metrics go: TensorBoard, a CSV per namespace, and the progress bar.

Agents and the loop produce flat dicts with namespaced keys (``loss/critic``, ``eval/success``);
only this module decides where they are written. CSV rows are written whole and flushed, so a
killed run leaves readable files; on resume ``truncate_after(step)`` drops rows logged after the
checkpoint, so the files read as if the run had never stopped.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any


class Logger:
    """``log(metrics, step)`` to ``<run>/<namespace>.csv`` (one file per first key part) and TensorBoard."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, resume_step: int | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._writer = None
        self._headers: dict[Path, list[str]] = {}
        if resume_step is not None:
            self.truncate_after(resume_step)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ImportError("TensorBoard logging needs `pip install tensorboard` "
                                  "(or set logging.tensorboard: false)") from e
            # purge_step hides events logged after the checkpoint we resumed from.
            self._writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=resume_step)

    def _csv_path(self, namespace: str) -> Path:
        return self.run_dir / f"{namespace}.csv"

    def log(self, metrics: dict[str, Any], step: int) -> None:
        by_ns: dict[str, dict[str, float]] = {}
        for key, value in metrics.items():
            value = float(value)
            ns = key.split("/", 1)[0] if "/" in key else "misc"
            by_ns.setdefault(ns, {})[key] = value
            if self._writer is not None and math.isfinite(value):
                self._writer.add_scalar(key, value, step)
        for ns, row in by_ns.items():
            self._append(self._csv_path(ns), {"step": step, **row})

    def _append(self, path: Path, row: dict[str, float]) -> None:
        header = self._headers.get(path)
        if header is None and path.exists():
            with open(path, newline="") as f:
                header = next(csv.reader(f), None)
        keys = list(row)
        if header is not None and set(keys) - set(header):
            # New keys: rewrite the file with the wider header (rare: first logs of a namespace).
            rows = self.read(path)
            header = header + [k for k in keys if k not in header]
            self._rewrite(path, header, rows)
        if header is None:
            header = keys
            self._rewrite(path, header, [])
        self._headers[path] = header
        buf = io.StringIO()
        csv.DictWriter(buf, fieldnames=header, restval="").writerow({k: _fmt(v) for k, v in row.items()})
        with open(path, "a", newline="") as f:
            f.write(buf.getvalue())      # one write call per row: a kill leaves whole rows
            f.flush()

    @staticmethod
    def _rewrite(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=header, restval="", extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @staticmethod
    def read(path: str | Path) -> list[dict[str, str]]:
        """Complete rows of a CSV written by this logger (a torn last line is dropped)."""
        path = Path(path)
        text = path.read_text() if path.exists() else ""
        if text and not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]
        rows = list(csv.DictReader(io.StringIO(text)))
        return [r for r in rows if None not in r and None not in r.values()]

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step`` (what a resumed run will log again)."""
        for path in self.run_dir.glob("*.csv"):
            with open(path, newline="") as f:
                header = next(csv.reader(f), None)
            if header is None:
                continue
            rows = [r for r in self.read(path) if int(float(r["step"])) <= step]
            self._rewrite(path, header, rows)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)
