"""``python -m benchmarks async-learner``: the single-process loop with its learner in turn (sync) or in
a background thread (``async_learner``), on a twin paced like a robot.

The training env sleeps to a ``ControlClock`` at ``--rate-hz`` (20 Hz: the arm's control rate; a step
that comes late is an overrun and is not waited for), as ``ArmEnv`` paces a real-time robot; the
evaluation env is not paced (it scores the policy, the robot's time is not the question there).
For each mode, in one invocation, one after the other on the same seed and recipe, it prints:

- updates per env step: ``agent.update`` calls (each the recipe's ``utd_ratio`` gradient steps)
  over the env steps from ``learning_starts`` on; the synchronous loop makes 1.0 by construction;
- learner updates/s: those calls over the wall time they had (whether a thread on this CPU gives the
  learner the time it would have alone: the GIL and the acting thread share it);
- the control period p50/p99 (ms), its jitter (p99 - p50) and the share of overruns (> 1.1
  periods), over the training steps from ``learning_starts`` on, resets and evaluations left out;
- env steps to ``--threshold`` eval success (greedy episodes every ``--eval-every`` steps) and wall s;

then each async figure as a ratio to the synchronous one. Modes: ``sync``, ``async`` (acts at the
rate whatever the learner does) and ``async-wait`` (``async_max_backlog``: episodes wait at their
end while the learner owes more than ``--max-backlog`` updates); ``act-only`` (no updates at all: the
control period this machine gives the paced loop alone, the floor for the others). The load average
is printed with the figures: the machine is shared.

Each task trains its own recipe (``--recipe``; by default reach ``reach_mbpo_quick``, lift
``lift_sac_demos`` as in ``benchmarks actors``). A task that learns from demos (lift: 20 by
default, ``--demo-episodes``) gets them recorded once by the scripted expert into
``<out>/demos_<task>_<N>`` (``benchmarks.actors.record_demos``, seed ``--seed`` + 50,000 as there),
or takes ``--demos DIR``, and every mode trains with that same dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

MODES = ("sync", "async", "async-wait", "act-only")
RT = "+rt"   # a mode with this suffix runs its acting thread under SCHED_FIFO (rt_priority)
DEFAULT_RECIPE = "reach_mbpo_quick"   # tasks without an entry in actors.TASK_RECIPES
DEMO_EPISODES = {"lift": 20}   # --demo-episodes' default per task (others: none)
DEMO_SEED_OFFSET = 50_000   # demos are recorded on seeds no training or eval episode uses (as actors)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("async-learner", help="sync vs background learner at a robot's control rate",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="reach", help="comma list of sim tasks (reach, push, lift)")
    p.add_argument("--recipe", default=None,
                   help=f"training recipe (config/recipes/NAME.yaml) of every task (default per task: lift "
                        f"lift_sac_demos, others {DEFAULT_RECIPE})")
    p.add_argument("--demo-episodes", type=int, default=None,
                   help="scripted demos recorded once into <out>/demos_<task>_<N> and given to every mode "
                        f"(default: {', '.join(f'{t} {n}' for t, n in DEMO_EPISODES.items())}, others 0)")
    p.add_argument("--demos", metavar="DIR", default=None,
                   help="use this episode dataset (recorded as the agent observes) instead of recording demos")
    p.add_argument("--modes", default="sync,async,async-wait", help=f"comma list of {', '.join(MODES)}; a background-learner mode with "
                        f"the suffix {RT} runs its acting thread under SCHED_FIFO (rt_priority, --rt-priority)")
    p.add_argument("--rate-hz", type=float, default=20.0, help="control rate the training env is paced at")
    p.add_argument("--steps", type=int, default=3000, help="env step budget of the sync run")
    p.add_argument("--async-steps", type=int, default=8000, help="env step budget of the async runs")
    p.add_argument("--max-backlog", type=int, default=50, help="async-wait's async_max_backlog")
    p.add_argument("--rt-priority", type=int, default=10, help=f"the {RT} modes' rt_priority (SCHED_FIFO, 1-99)")
    p.add_argument("--eval-every", type=int, default=250, help="env steps between evaluations")
    p.add_argument("--eval-episodes", type=int, default=10, help="episodes per evaluation")
    p.add_argument("--threshold", type=float, default=0.9, help="eval success that ends a run (solved)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more config overrides")
    p.add_argument("--jobs", type=int, default=1,
                   help="modes trained at once, each in its own process (the same load then hits each; "
                        "on a 2-core machine they also take CPU from each other)")
    p.add_argument("--out", default="runs/bench_async_learner", help="directory for runs and results.json")
    p.set_defaults(func=run)


def _paced_env(env: Any, rate_hz: float, learning_starts: int, periods: list[float]) -> Any:
    """``env`` stepping no faster than ``rate_hz``; appends each control period (s) past ``learning_starts``."""
    import gymnasium as gym

    from se_robot.robot import ControlClock

    class Paced(gym.Wrapper):
        def __init__(self, inner: Any):
            super().__init__(inner)
            self.clock = ControlClock(1.0 / rate_hz)
            self.steps = 0
            self.last: float | None = None   # when the previous step began

        def reset(self, **kwargs: Any) -> Any:
            self.last = None   # a reset (and what the loop did before it) is no control period
            out = self.env.reset(**kwargs)
            self.clock.restart()
            return out

        def step(self, action: Any) -> Any:
            self.clock.wait()
            now = time.perf_counter()
            if self.last is not None and self.steps >= learning_starts:
                periods.append(now - self.last)
            self.last, self.steps = now, self.steps + 1
            return self.env.step(action)

        def skip_period(self) -> None:
            self.last = None

    return Paced(env)


def _recipe(task: str, args: argparse.Namespace) -> str:
    from benchmarks.actors import TASK_RECIPES

    return args.recipe or TASK_RECIPES.get(task, DEFAULT_RECIPE)


def _demos_dir(task: str, args: argparse.Namespace) -> str:
    """``task``'s demo dataset as an absolute path ('' : none); recorded by ``_record_demos``."""
    if args.demos:
        return str(Path(args.demos).resolve())
    n = args.demo_episodes if args.demo_episodes is not None else DEMO_EPISODES.get(task, 0)
    return str((Path(args.out) / f"demos_{task}_{n}").resolve()) if n > 0 else ""


def _record_demos(task: str, args: argparse.Namespace) -> str:
    """Record ``task``'s demos once, before any mode trains (kept if already there); their path."""
    from benchmarks.actors import record_demos
    from se_robot.train_config import load_config

    path = _demos_dir(task, args)
    if path and not args.demos:
        cfg = load_config(_recipe(task, args), {"task": task}, args.set, source="benchmarks async-learner")
        n = args.demo_episodes if args.demo_episodes is not None else DEMO_EPISODES[task]
        record_demos(Path(path), task, n, args.seed + DEMO_SEED_OFFSET, cfg)
    return path


def _one_run(task: str, mode: str, args: argparse.Namespace) -> dict:
    import dataclasses

    import numpy as np

    from se_robot.config import parse_set
    from se_robot.logger import Logger
    from se_robot.train import build_trainer, make_envs
    from se_robot.train_config import load_config

    base, rt = mode.removesuffix(RT), mode.endswith(RT)
    steps = args.steps if base == "sync" else args.async_steps
    run_dir = Path(args.out) / f"{task}_{mode}_seed{args.seed}"
    cfg = load_config(_recipe(task, args), {
        "task": task, "demos": _demos_dir(task, args), "steps": steps, "seed": args.seed, "eval_every": args.eval_every,
        "eval_episodes": args.eval_episodes, "eval_video": False, "stop_at_success": args.threshold,
        "checkpoint_every": 10 * steps, "checkpoint_every_s": 0.0, "keep_checkpoints": 1, "save_replay": False,
        "tensorboard": False, "progress": False, "device": "cpu",
        "async_learner": base != "sync", "async_max_backlog": args.max_backlog if base == "async-wait" else 0,
        "rt_priority": args.rt_priority if rt else 0,
    }, args.set, source="benchmarks async-learner")
    measure_from = cfg.learning_starts
    if base == "act-only":
        cfg = dataclasses.replace(cfg, learning_starts=steps + 1)
    periods: list[float] = []
    env, eval_env = make_envs(cfg)
    paced = _paced_env(env, args.rate_hz, measure_from, periods)
    eval_reset = eval_env.reset

    def reset_eval(**kwargs: Any) -> Any:   # an evaluation between two training steps is no control period
        paced.skip_period()
        return eval_reset(**kwargs)

    eval_env.reset = reset_eval
    trainer = build_trainer(cfg, run_dir, envs=(paced, eval_env))
    update, counted = trainer.agent.update, {"updates": 0, "seconds": 0.0}

    def timed_update(replay: Any, demos: Any, step: int) -> dict:
        start = time.perf_counter()
        try:
            return update(replay, demos, step)
        finally:
            counted["updates"] += 1
            counted["seconds"] += time.perf_counter() - start

    trainer.agent.update = timed_update
    load_before = os.getloadavg()
    start = time.perf_counter()
    try:
        trainer.train()
    finally:
        trainer.logger.close()
    wall = time.perf_counter() - start
    rows = [(int(float(r["step"])), float(r["eval/success"])) for r in Logger.read(run_dir / "eval.csv")]
    hit = next((s for s, v in rows if v >= args.threshold), None)
    learning_steps = max(1, trainer.step - measure_from + 1)
    ms = np.asarray(periods) * 1e3
    return {"task": task, "mode": mode, "recipe": _recipe(task, args), "demos": cfg.demos,
            "steps": trainer.step, "steps_to_threshold": hit, "curve": rows,
            "updates": counted["updates"], "updates_per_step": counted["updates"] / learning_steps,
            "update_s": counted["seconds"], "updates_per_s": counted["updates"] / wall,
            "period_p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
            "period_p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
            "overrun_share": float(np.mean(ms > 1.1e3 / args.rate_hz)) if len(ms) else float("nan"),
            "wall_s": wall, "load_before": load_before, "load_after": os.getloadavg()}


def _ratio(value: float | None, reference: float | None) -> str:
    if value is None or reference is None or reference == 0:
        return "n/a"
    return f"{value / reference:.2f}x"


def _summarise(results: list[dict], args: argparse.Namespace) -> list[str]:
    recipes = ", ".join(f"{r['task']} {r['recipe']}" + (f" with demos {r['demos']}" if r["demos"] else "")
                        for r in {r["task"]: r for r in results}.values())
    lines = [f"paced at {args.rate_hz:g} Hz, recipe {recipes}, seed {args.seed}; "
             f"steps to {args.threshold:.0%}: '>N' = not reached within N env steps",
             f"{'task':<7}{'mode':<12}{'upd/step':>9}{'upd/s':>7}{'p50 ms':>8}{'p99 ms':>8}{'jitter':>8}{'overrun':>8}"
             f"{'steps to':>10}{'wall s':>8}{'load 1m before/after':>22}"]
    for r in results:
        hit = str(r["steps_to_threshold"]) if r["steps_to_threshold"] is not None else f">{r['steps']}"
        lines.append(f"{r['task']:<7}{r['mode']:<12}{r['updates_per_step']:>9.2f}{r['updates_per_s']:>7.2f}"
                     f"{r['period_p50_ms']:>8.2f}{r['period_p99_ms']:>8.2f}"
                     f"{r['period_p99_ms'] - r['period_p50_ms']:>8.2f}{r['overrun_share']:>8.0%}"
                     f"{hit:>10}{r['wall_s']:>8.0f}{r['load_before'][0]:>11.2f} / {r['load_after'][0]:<8.2f}")
    for task in dict.fromkeys(r["task"] for r in results):
        ref = next((r for r in results if r["task"] == task and r["mode"] == "sync"), None)
        if ref is None:
            continue
        for r in (r for r in results if r["task"] == task and r["mode"] != "sync"):
            def vs(key: str) -> str:
                return _ratio(r[key], ref[key])

            lines.append(f"{task} {r['mode']} / sync: updates per env step {vs('updates_per_step')}, "
                         f"learner updates/s {vs('updates_per_s')}, control period p99 {vs('period_p99_ms')}, "
                         f"env steps to {args.threshold:.0%} {vs('steps_to_threshold')}, wall {vs('wall_s')}")
    return lines


def run(args: argparse.Namespace) -> int:
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m.removesuffix(RT) not in MODES or m == "sync" + RT]
    if unknown:
        raise SystemExit(f"benchmarks async-learner: unknown modes {unknown}; allowed: {', '.join(MODES)}, "
                         f"each but sync also with {RT}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"({os.cpu_count()} CPUs)", flush=True)
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    for task in tasks:   # once, before any mode: every mode trains on the same dataset
        if demos := _record_demos(task, args):
            print(f"{task}: demos {demos}", flush=True)
    order = [(task, mode) for task in tasks for mode in modes]
    done: dict[tuple[str, str], dict] = {}

    def record(r: dict) -> None:
        done[(r["task"], r["mode"])] = r
        print(f"[{r['task']} {r['mode']}] steps to {args.threshold:.0%}: {r['steps_to_threshold']}; "
              f"{r['updates']} updates in {r['steps']} env steps; {r['wall_s']:.0f} s", flush=True)
        (out / "results.json").write_text(json.dumps({"args": vars(args) | {"func": None},
                                                      "results": [done[k] for k in order if k in done]}, indent=1))

    if args.jobs <= 1:
        for key in order:
            record(_one_run(*key, args))
    else:   # spawn: each run in a clean interpreter
        job_args = argparse.Namespace(**(vars(args) | {"func": None}))
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
            for future in as_completed([pool.submit(_one_run, *key, job_args) for key in order]):
                record(future.result())   # as each ends: a run stopped later keeps what finished
    results = [done[k] for k in order]
    print("\n".join(_summarise(results, args)))
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; wrote {out / 'results.json'}")
    return 0
