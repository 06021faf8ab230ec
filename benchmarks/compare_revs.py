"""``python -m benchmarks.compare_revs``: one benchmark on two source trees, interleaved, as ratios.

"Did anything get slower?" needs both revisions measured under the same machine load. On a shared
machine the load moves by several times within minutes, so a before run and an after run taken
apart compare the load, not the code. This runs ``python -m benchmarks NAME ARGS`` from the root
of tree A and of tree B in turn, round after round, in the order A B, B A, A B, ... (so neither
side always runs first, after the other has warmed the caches or while a neighbour's job starts),
parses the figures each run prints and reports, per figure, the median over rounds on each side,
the ratio B/A, both sides' ranges and the 1-minute load average each run started at.

Each tree imports its own ``se_robot`` (``PYTHONPATH`` is set to the tree). Give the same python
to both, and options that both revisions' benchmark accepts (``--a-args``/``--b-args`` add
per-tree ones). Every run's output is kept in ``--log-dir`` (one file per run, its first line
the load, tree and command), and ``--from-logs DIR`` summarizes such a directory again.

    python -m benchmarks.compare_revs --a /path/to/before --b . --rounds 3 --log-dir runs/cmp/bus \\
        bus -- --ticks 1000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

_NUM = r"(-?[\d.]+|nan)"


@dataclass(frozen=True)
class Figure:
    """One number a benchmark printed; ``higher_is_better`` orients "worse" (for a time: slower)."""

    value: float
    higher_is_better: bool


Parser = Callable[[str], dict[str, Figure]]


def _hi(v: str) -> Figure:
    return Figure(float(v), True)


def _lo(v: str) -> Figure:
    return Figure(float(v), False)


def parse_sim(text: str) -> dict[str, Figure]:
    """Both layouts: ``env state  rate  raw  ratio`` (7897b48) and ``... raw-moving ratio`` (later)."""
    out: dict[str, Figure] = {}
    for m in re.finditer(rf"^env (state|pixels)\s+{_NUM}\s+{_NUM}\s+{_NUM}(?:\s+{_NUM}\s+{_NUM})?", text, re.M):
        mode = m.group(1)
        out[f"env {mode} steps/s"] = _hi(m.group(2))
        out[f"raw {mode} at rest steps/s"] = _hi(m.group(3))
        out[f"env/raw {mode} at rest"] = _hi(m.group(4))
        if m.group(5) is not None:
            out[f"raw {mode} moving steps/s"] = _hi(m.group(5))
            out[f"env/raw {mode} moving"] = _hi(m.group(6))
    m = re.search(rf"^vector pixels x1 \w+\s+{_NUM}", text, re.M)
    if m:
        out["vector x1 steps/s"] = _hi(m.group(1))
    m = re.search(rf"^vector pixels x2 async\s+{_NUM}\s+scaling {_NUM}x", text, re.M)
    if m:
        out["vector x2 steps/s"] = _hi(m.group(1))
        out["vector scaling x2/x1"] = _hi(m.group(2))
    return out


def parse_bus(text: str) -> dict[str, Figure]:
    m = re.search(rf"median {_NUM} ms\s+p90 {_NUM} ms\s+p99 {_NUM} ms", text)
    if not m:
        return {}
    return {"tick median ms": _lo(m.group(1)), "tick p90 ms": _lo(m.group(2)), "tick p99 ms": _lo(m.group(3))}


def parse_camera(text: str) -> dict[str, Figure]:
    out: dict[str, Figure] = {}
    m = re.search(rf"frames read by the camera thread: \d+ \({_NUM} fps\)", text)
    if m:
        out["frames read fps"] = _hi(m.group(1))
    for label, name in (("frame age at read\\(\\)", "frame age"), ("wait in read_newer_than\\(now\\)", "wait newer"),
                        ("produce -> grab latency", "produce->grab")):
        m = re.search(rf"{label}:\s+p50\s+{_NUM} ms\s+p95\s+{_NUM} ms", text)
        if m:
            out[f"{name} p50 ms"] = _lo(m.group(1))
            out[f"{name} p95 ms"] = _lo(m.group(2))
    return out


def parse_learner(text: str) -> dict[str, Figure]:
    """Rows ``name image batch updates/s ms/update cpu-ms/upd n ...`` of either revision."""
    out: dict[str, Figure] = {}
    for m in re.finditer(rf"^(\S+)\s+\d+\s+\d+\s+{_NUM}\s+{_NUM}\s+{_NUM}\s+\d+\s", text, re.M):
        row = m.group(1)
        out[f"{row} updates/s"] = _hi(m.group(2))
        out[f"{row} ms/update"] = _lo(m.group(3))
        out[f"{row} cpu-ms/update"] = _lo(m.group(4))
    return out


# control-loop rows: 7897b48 prints 10 numbers, later revisions 15 (spin ms, stale frames, CPU, load)
_ROS_OLD = ("rate", "p50 ms", "p99 ms", "jitter p99-p50 ms", "std ms", "overhead p50 ms", "overhead p99 ms",
            "wait p50 ms", "overruns", "stale")
_ROS_NEW = ("rate", "spin", "p50 ms", "p99 ms", "jitter p99-p50 ms", "std ms", "overhead p50 ms",
            "overhead p99 ms", "wait p50 ms", "overruns", "stale", "stale frames", "client cpu ms/step",
            "node cpu %", "load")
_ROS_SKIP = {"rate", "spin", "load"}


def parse_ros(text: str) -> dict[str, Figure]:
    """The loop rows (one per rate; with several rows of a rate, e.g. ``--rounds``, the first),
    the direct step's time and the image latency rows."""
    out: dict[str, Figure] = {}
    loop = False
    for line in text.splitlines():
        if line.strip().startswith("rate"):
            loop = True
            continue
        words = line.split()
        if loop and words and all(re.fullmatch(_NUM, w) for w in words) and len(words) in (10, 15):
            names = _ROS_OLD if len(words) == 10 else _ROS_NEW
            rate = f"{float(words[0]):g} Hz"
            for name, word in zip(names, words):
                if name not in _ROS_SKIP and f"{rate} {name}" not in out:
                    out[f"{rate} {name}"] = _lo(word)
            continue
        loop = loop and bool(words)
    m = re.search(rf"direct ArmEnv\(TwinRobot\)\.step .*: p50 {_NUM} ms, p99 {_NUM} ms", text)
    if m:
        out["direct step p50 ms"] = _lo(m.group(1))
        out["direct step p99 ms"] = _lo(m.group(2))
    for m in re.finditer(rf"^\s+(\w+)\s+(\d+x\d+)\s+(\d+)\s+{_NUM}\s+{_NUM}\s+{_NUM}\s*$", text, re.M):
        if m.group(4) != "nan":
            out[f"image latency {m.group(1)} {m.group(2)} p50 ms"] = _lo(m.group(4))
            out[f"image latency {m.group(1)} {m.group(2)} p99 ms"] = _lo(m.group(5))
    return out


def parse_homing(text: str) -> dict[str, Figure]:
    m = re.search(rf"HomingPlan.target from \d+ clear poses: \d+ ticks, {_NUM} ms CPU per tick", text)
    if m:  # --clear-poses
        return {"target CPU ms per tick": _lo(m.group(1))}
    m = re.search(r"homed (\d+) of (\d+) sub-floor poses .* in (\d+) s", text)
    if not m:
        return {}
    out = {"poses homed": _hi(m.group(1)), "wall s": _lo(m.group(3))}
    goals = re.search(r"goals sent: (\d+)", text)  # printed from the revision after 7897b48 on
    if goals and int(goals.group(1)):
        out["goals sent"] = _lo(goals.group(1))
        out["wall ms per goal"] = _lo(str(1e3 * float(m.group(3)) / int(goals.group(1))))
    cpu = re.search(rf"CPU {_NUM} s, {_NUM} ms per goal sent; HomingPlan.target {_NUM} s of it, {_NUM} ms per call",
                    text)  # the cost line, where the benchmark prints one
    if cpu:
        out["CPU ms per goal"] = _lo(cpu.group(2))
        out["target CPU ms per call"] = _lo(cpu.group(4))
    return out


PARSERS: dict[str, Parser] = {"sim": parse_sim, "bus": parse_bus, "camera": parse_camera,
                              "learner": parse_learner, "ros": parse_ros, "homing": parse_homing}


@dataclass(frozen=True)
class Run:
    side: str  # "A" or "B"
    round: int
    load1: float
    figures: dict[str, Figure]


def renamed(figures: dict[str, Figure], renames: dict[str, str]) -> dict[str, Figure]:
    """Figures whose name starts with a key of ``renames`` (then a space) under the new prefix:
    the same thing under another row name in the other revision (e.g. ``paper+cl`` -> ``paper``)."""
    out = {}
    for name, fig in figures.items():
        head, sep, rest = name.partition(" ")
        out[renames.get(head, head) + sep + rest] = fig
    return out


def order(rounds: int) -> list[tuple[int, str]]:
    """A B, B A, A B, ...: each side runs first in every other round."""
    return [(r, s) for r in range(rounds) for s in (("A", "B") if r % 2 == 0 else ("B", "A"))]


@dataclass(frozen=True)
class Row:
    figure: str
    a: float
    b: float
    a_range: tuple[float, float]
    b_range: tuple[float, float]
    n: int
    higher_is_better: bool

    @property
    def ratio(self) -> float:
        """B over A (nan where A's median is 0)."""
        return self.b / self.a if self.a else float("nan")

    @property
    def verdict(self) -> str:
        """``worse``/``better`` where B's whole range lies on that side of A's (beyond the
        round-to-round noise; for a time, worse is slower); ``~`` where the ranges overlap."""
        (a_lo, a_hi), (b_lo, b_hi) = self.a_range, self.b_range
        if b_hi < a_lo:
            return "worse" if self.higher_is_better else "better"
        if b_lo > a_hi:
            return "better" if self.higher_is_better else "worse"
        return "~"


def summarize(runs: list[Run]) -> list[Row]:
    """Median and range per figure on each side, for figures both sides printed."""
    names: dict[str, None] = {}
    for run in runs:
        names.update(dict.fromkeys(run.figures))
    rows = []
    for name in names:
        a = [r.figures[name].value for r in runs if r.side == "A" and name in r.figures]
        b = [r.figures[name].value for r in runs if r.side == "B" and name in r.figures]
        a = [v for v in a if v == v]  # nan: a row with no samples
        b = [v for v in b if v == v]
        if not a or not b:
            continue
        better = next(r.figures[name].higher_is_better for r in runs if name in r.figures)
        rows.append(Row(name, statistics.median(a), statistics.median(b), (min(a), max(a)), (min(b), max(b)),
                        min(len(a), len(b)), better))
    return rows


def format_table(rows: list[Row], runs: list[Run], labels: tuple[str, str]) -> str:
    loads = {s: [r.load1 for r in runs if r.side == s] for s in "AB"}
    lines = [f"{'figure':<38}{labels[0]:>10}{labels[1]:>10}{'ratio':>8}  {'range ' + labels[0]:>17}"
             f"  {'range ' + labels[1]:>17}{'n':>3}  verdict"]
    for row in rows:
        rng = [f"{lo:.4g}-{hi:.4g}" for lo, hi in (row.a_range, row.b_range)]
        lines.append(f"{row.figure:<38}{row.a:>10.4g}{row.b:>10.4g}{row.ratio:>8.3f}  {rng[0]:>17}  {rng[1]:>17}"
                     f"{row.n:>3}  {row.verdict} ({'higher' if row.higher_is_better else 'lower'} is better)")
    for side, label in zip("AB", labels):
        if loads[side]:
            lines.append(f"load average (1 min) at the start of {label}'s runs: "
                         + ", ".join(f"{x:.1f}" for x in loads[side]))
    return "\n".join(lines)


def _header(load1: float, tree: Path, command: list[str], side: str, rnd: int) -> str:
    return json.dumps({"load1": load1, "tree": str(tree), "command": command, "side": side, "round": rnd})


def run_rounds(trees: dict[str, Path], benchmark: str, bench_args: list[str], extra: dict[str, list[str]],
               rounds: int, python: str, log_dir: Path | None, timeout_s: float,
               renames: dict[str, dict[str, str]] | None = None) -> list[Run]:
    parser = PARSERS[benchmark]
    runs = []
    for rnd, side in order(rounds):
        tree = trees[side]
        command = [python, "-m", "benchmarks", benchmark, *bench_args, *extra[side]]
        env = dict(os.environ, PYTHONPATH=str(tree), MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
        load1 = os.getloadavg()[0]
        t0 = time.perf_counter()
        proc = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout_s)
        text = proc.stdout + proc.stderr
        print(f"round {rnd} {side} ({tree}): exit {proc.returncode}, {time.perf_counter() - t0:.0f} s, "
              f"load {load1:.1f}", flush=True)
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            (log_dir / f"r{rnd}_{side}.txt").write_text(_header(load1, tree, command, side, rnd) + "\n" + text)
        if proc.returncode != 0:
            print(text[-2000:], file=sys.stderr)
        runs.append(Run(side, rnd, load1, renamed(parser(text), (renames or {}).get(side, {}))))
    return runs


def runs_from_logs(log_dir: Path, benchmark: str, renames: dict[str, dict[str, str]] | None = None) -> list[Run]:
    runs = []
    for path in sorted(log_dir.glob("r*_[AB].txt")):
        head, _, text = path.read_text().partition("\n")
        meta = json.loads(head)
        figures = renamed(PARSERS[benchmark](text), (renames or {}).get(meta["side"], {}))
        runs.append(Run(meta["side"], meta["round"], meta["load1"], figures))
    return runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.compare_revs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("benchmark", choices=sorted(PARSERS))
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="after '--': the benchmark's options")
    p.add_argument("--a", type=Path, help="tree A's root (the 'before' checkout)")
    p.add_argument("--b", type=Path, help="tree B's root (the 'after' checkout)")
    p.add_argument("--labels", default="before,after", help="names of A and B in the table")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--a-args", default="", help="options for tree A's run only (one string)")
    p.add_argument("--b-args", default="", help="options for tree B's run only (one string)")
    p.add_argument("--a-rename", action="append", default=[], metavar="OLD=NEW",
                   help="compare tree A's row OLD (a figure name's first word) with B's row NEW")
    p.add_argument("--python", default=sys.executable, help="the interpreter for both trees")
    p.add_argument("--log-dir", type=Path, help="keep every run's output here")
    p.add_argument("--from-logs", type=Path, help="summarize a --log-dir of an earlier comparison, run nothing")
    p.add_argument("--timeout-s", type=float, default=900.0, help="per run")
    p.add_argument("--json", type=Path, help="write the summary rows here")
    args = p.parse_args(argv)
    labels = tuple(args.labels.split(","))
    if len(labels) != 2:
        p.error("--labels takes two names")
    renames = {"A": dict(r.split("=", 1) for r in args.a_rename)}
    if args.from_logs:
        runs = runs_from_logs(args.from_logs, args.benchmark, renames)
    else:
        if args.a is None or args.b is None:
            p.error("--a and --b are required (or --from-logs)")
        bench_args = args.bench_args[1:] if args.bench_args[:1] == ["--"] else args.bench_args
        runs = run_rounds({"A": args.a.resolve(), "B": args.b.resolve()}, args.benchmark, bench_args,
                          {"A": args.a_args.split(), "B": args.b_args.split()}, args.rounds, args.python,
                          args.log_dir, args.timeout_s, renames)
    rows = summarize(runs)
    print(format_table(rows, runs, labels))
    if args.json:
        args.json.write_text(json.dumps([dict(figure=r.figure, a=r.a, b=r.b, ratio=r.ratio, n=r.n,
                                              a_range=r.a_range, b_range=r.b_range, verdict=r.verdict)
                                         for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
