"""``python -m benchmarks manipulation``: lift and push with 20 demos and a sparse reward, against the baselines.

Per task and seed, in one invocation, four methods, all scored by the same evaluation (the loop's:
greedy episodes from fixed start seeds, success = ``info["is_success"]`` at any step):

- ``demos``     the task's se_robot recipe (``--recipe-for``; default ``config/recipes/<task>_sac_sparse.yaml``:
                SAC from the state vector, sparse reward, half of each batch from the demos) with
                ``--demo-episodes`` scripted demos;
- ``no-demos``  the same recipe without demos;
- ``bc``        behaviour cloning (``se_robot.agents.bc``) fitted to the same demos, evaluated once: it
                uses no online env steps, so it is drawn at step 0 (RL with demos must beat it, or
                the demos are doing all the work);
- ``sb3``       Stable-Baselines3 SAC with its default settings from the state vector, on the recipe's
                reward and action repeat (the reference point of the other benchmarks).

The demos are recorded once per (task, obs mode, image size, seed) under ``<out>/demos`` with the
observations the recipe's agent sees and its reward type (a pixel recipe gets pixel demos), by the
same code path as ``se-robot demos``. Prints a table (env steps to ``--threshold`` eval success,
final success, wall time, the load average at the end of each run, and the median over seeds) and
writes ``results.json`` and ``learning_curves.png`` (every seed's points). Runs already in
``<out>/results.json`` from an earlier invocation with other methods, tasks or seeds are kept and
reported with the new ones, so seeds can be added later.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (evaluate_policy, plot_success_panels, run_jobs, run_line, run_sb3_sac, run_trainer,
                               steps_to)

METHODS = ("demos", "bc", "sb3", "no-demos")
TASKS = ("lift", "push")
DEFAULT_RECIPES = {"lift": "lift_sac_sparse", "push": "push_sac_sparse"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("manipulation", help="lift and push: recipe with/without demos, BC, SB3 SAC",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default=",".join(TASKS), help="comma list of lift, push")
    p.add_argument("--seeds", default="0,1,2", help="comma list of seeds")
    p.add_argument("--seeds-for", action="append", default=[], metavar="METHOD=LIST",
                   help="the seeds of one method (e.g. no-demos=0: the long baselines on seed 0 only)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma list of {', '.join(METHODS)}; runs go in this order")
    p.add_argument("--recipe-for", action="append", default=[], metavar="TASK=RECIPE",
                   help="the recipe of a task's demos and no-demos runs (a name in config/recipes/ or a path; "
                        f"default {', '.join(f'{t}={r}' for t, r in DEFAULT_RECIPES.items())})")
    p.add_argument("--steps", type=int, default=None, help="env steps per run (default: the recipe's steps)")
    p.add_argument("--steps-for", action="append", default=[], metavar="METHOD=N",
                   help="env step budget of one method (e.g. sb3=20000)")
    p.add_argument("--stop-when-solved", action="store_true",
                   help="end each run at its first evaluation at or above --threshold (its curve ends there)")
    p.add_argument("--threshold", type=float, default=0.9, help="eval success rate counted as solved")
    p.add_argument("--eval-every", type=int, default=500, help="env steps between evaluations")
    p.add_argument("--eval-episodes", type=int, default=10, help="episodes per evaluation")
    p.add_argument("--demo-episodes", type=int, default=20, help="scripted demos per task and seed")
    p.add_argument("--bc-steps", type=int, default=None,
                   help="gradient steps of each behaviour-cloning fit (default: BCConfig's gradient_steps)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process")
    p.add_argument("--out", default="runs/bench_manipulation", help="directory for runs, demos, JSON and PNG")
    p.add_argument("--report", action="store_true",
                   help="train nothing: print the table and draw the PNG from <out>/results.json")
    p.set_defaults(func=run)


def _fail(message: str) -> SystemExit:
    return SystemExit(f"benchmarks manipulation: {message}")


def _csv(text: str, option: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise _fail(f"{option} is empty")
    return items


def _seeds(text: str, option: str) -> list[int]:
    try:
        return [int(s) for s in _csv(text, option)]
    except ValueError:
        raise _fail(f"{option} must be integers, got {text!r}") from None


def _pairs(items: list[str], option: str, allowed: tuple[str, ...]) -> dict[str, str]:
    """``NAME=VALUE`` options as a dict, NAME checked against ``allowed``."""
    found = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name.strip() not in allowed or not value.strip():
            raise _fail(f"{option} {item!r}: expected NAME=VALUE with NAME one of {', '.join(allowed)}")
        found[name.strip()] = value.strip()
    return found


def plan(args: argparse.Namespace) -> dict[str, Any]:
    """The checked options: tasks, methods, seeds, recipe and budget of every method; errors before any run."""
    tasks, methods = _csv(args.tasks, "--tasks"), _csv(args.methods, "--methods")
    for name, allowed, given in (("--tasks", TASKS, tasks), ("--methods", METHODS, methods)):
        bad = [x for x in given if x not in allowed]
        if bad:
            raise _fail(f"{name}: unknown {bad}; allowed: {', '.join(allowed)}")
    seeds = _seeds(args.seeds, "--seeds")
    seeds_for = {m: _seeds(v, f"--seeds-for {m}") for m, v in _pairs(args.seeds_for, "--seeds-for", METHODS).items()}
    steps_for = _pairs(args.steps_for, "--steps-for", METHODS)
    bad_steps = {m: v for m, v in steps_for.items() if not v.isdigit() or int(v) < 1}
    if bad_steps or (args.steps is not None and args.steps < 1):
        raise _fail(f"step budgets must be positive integers, got {bad_steps or args.steps}")
    if min(args.eval_every, args.eval_episodes, args.demo_episodes, args.jobs,
           1 if args.bc_steps is None else args.bc_steps) < 1:
        raise _fail("--eval-every, --eval-episodes, --demo-episodes, --bc-steps and --jobs must be at least 1")
    recipes = DEFAULT_RECIPES | _pairs(args.recipe_for, "--recipe-for", TASKS)
    return {"tasks": tasks, "methods": methods, "recipes": {t: recipes[t] for t in tasks},
            "seeds": {m: seeds_for.get(m, seeds) for m in methods},
            "steps": {m: int(steps_for[m]) if m in steps_for else args.steps for m in methods}}


def run_config(task: str, recipe: str, seed: int, steps: int | None, demos: str, args: argparse.Namespace) -> Any:
    """The recipe's training config for one run of this benchmark (``demos`` '' : without demos)."""
    from se_robot.train_config import load_config, read_recipe

    written = read_recipe(recipe)
    if written.get("task", task) != task:
        raise _fail(f"recipe {recipe} is for task {written['task']}, not {task}")
    budget = steps or load_config(recipe).steps
    return load_config(recipe, {
        "task": task, "seed": seed, "steps": budget, "demos": demos, "eval_every": args.eval_every,
        "eval_episodes": args.eval_episodes, "eval_video": False, "checkpoint_every": 10 * budget,
        "keep_checkpoints": 1, "save_replay": False, "log_every": args.eval_every, "tensorboard": False,
        "progress": False, "device": "cpu", "threads": args.threads,
        "stop_at_success": args.threshold if args.stop_when_solved else 0.0,
        "replay": {"capacity": budget + 1000}}, source="benchmarks manipulation")


def demos_dir(out: Path, cfg: Any) -> Path:
    """Where the demos of one (task, obs mode, image size, seed) live: shared by every method using them."""
    return out / "demos" / f"{cfg.task}_{cfg.obs_mode}_{cfg.image_size}px_seed{cfg.seed}"


def _fit_bc(cfg: Any, demos: Path, seed: int, eval_episodes: int, gradient_steps: int | None) -> float:
    """Behaviour cloning on ``demos``, evaluated on the recipe's eval env; its success rate."""
    from se_robot.agents.bc import BCAgent
    from se_robot.envs.encoder_features import EncoderFeatures
    from se_robot.train import make_envs

    if cfg.obs_mode != "state" and not cfg.encoder:
        raise _fail(f"bc on {cfg.task}: the recipe observes pixels without a frozen encoder; behaviour cloning "
                    "here learns from vectors (state, or a frozen encoder's features via the recipe's encoder)")
    env, eval_env = make_envs(cfg)
    env.close()
    try:
        agent = BCAgent.create(eval_env.observation_space, eval_env.action_space,
                               {"gradient_steps": gradient_steps} if gradient_steps else None, seed=seed)
        encoded = eval_env if isinstance(eval_env, EncoderFeatures) else None
        agent.fit_demos(demos, image_size=cfg.image_size, action_repeat=cfg.action_repeat,
                        episode_fn=encoded.encode_episode if encoded else None,
                        source_keys=encoded.source_keys if encoded else None)
        return evaluate_policy(agent.act, eval_env, eval_episodes, seed)[0]
    finally:
        eval_env.close()


def one_run(task: str, method: str, seed: int, args: argparse.Namespace, settings: dict) -> dict:
    """Train (or fit) one method on one task and seed; the unit ``--jobs`` spreads over processes."""
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    steps = settings["steps"][method]
    cfg = run_config(task, settings["recipes"][task], seed, steps, "", args)
    demos = demos_dir(out, cfg)
    start = time.perf_counter()
    if method == "bc":
        curve = [(0, _fit_bc(cfg, demos, seed, args.eval_episodes, args.bc_steps))]
    elif method == "sb3":
        rows, _ = run_sb3_sac(task, seed, cfg.steps, args.eval_every, args.eval_episodes,
                              stop_at_success=cfg.stop_at_success, action_repeat=cfg.action_repeat,
                              reward_type=cfg.env.get("reward_type", "dense"))
        curve = [(r["step"], r["success"]) for r in rows]
    else:
        if method == "demos":
            cfg = run_config(task, settings["recipes"][task], seed, steps, str(demos.resolve()), args)
        rows, _ = run_trainer(cfg, out / f"{task}_{method}_seed{seed}")
        curve = [(r["step"], r["success"]) for r in rows]
    wall = time.perf_counter() - start
    hit = steps_to([{"step": s, "success": v} for s, v in curve], args.threshold)
    return {"task": task, "method": method, "seed": seed, "recipe": settings["recipes"][task],
            "obs_mode": "state" if method == "sb3" else cfg.obs_mode, "budget": None if method == "bc" else cfg.steps,
            "curve": curve, "steps_to_threshold": hit, "wall_s": wall, "load_avg": list(os.getloadavg())}


def _job(task: str, method: str, seed: int, args: argparse.Namespace) -> dict:
    """``one_run`` with the settings carried in ``args`` (what a spawned process receives)."""
    return one_run(task, method, seed, args, args.settings)


def summarise(results: list[dict], threshold: float) -> list[str]:
    """The table: one row per run, then each task x method's median over its seeds."""
    import numpy as np

    def cell(hit: int | None, budget: int | None) -> str:
        return str(hit) if hit is not None else (f">{budget}" if budget else "never")

    lines = [f"{'task':<6}{'method':<10}{'seed':>7}{f'steps to {threshold:.0%}':>14}{'final':>7}{'best':>6}"
             f"{'wall s':>8}{'load 1m':>9}"]
    for task in dict.fromkeys(r["task"] for r in results):
        for method in dict.fromkeys(r["method"] for r in results if r["task"] == task):
            runs = sorted((r for r in results if r["task"] == task and r["method"] == method), key=lambda r: r["seed"])
            for r in runs:
                lines.append(f"{task:<6}{method:<10}{r['seed']:>7}{cell(r['steps_to_threshold'], r['budget']):>14}"
                             f"{r['curve'][-1][1]:>7.2f}{max(v for _, v in r['curve']):>6.2f}{r['wall_s']:>8.0f}"
                             f"{r['load_avg'][0]:>9.1f}")
            if len(runs) > 1:
                hits = [r["steps_to_threshold"] if r["steps_to_threshold"] is not None else np.inf for r in runs]
                med = float(np.median(hits))
                med_text = cell(None if med == np.inf else int(med), max(r["budget"] or 0 for r in runs))
                lines.append(f"{task:<6}{method:<10}{'median':>7}{med_text:>14}"
                             f"{np.median([r['curve'][-1][1] for r in runs]):>7.2f}{'':>6}"
                             f"{np.median([r['wall_s'] for r in runs]):>8.0f}")
    lines.append(f"steps to {threshold:.0%}: the first evaluation at or above it ('>N': not within the budget N; "
                 "bc uses no online steps: 0 or never); final: the last evaluation's success; "
                 "load 1m: the load average when the run ended")
    return lines


def plot(results: list[dict], path: Path, threshold: float) -> None:
    """Eval success against env steps, one panel per task, every seed's points; BC as a level line."""
    methods = list(dict.fromkeys(r["method"] for r in results))

    def draw(ax, task: str) -> None:
        runs = [r for r in results if r["task"] == task]
        for r in runs:
            color = f"C{methods.index(r['method'])}"
            first = r is next(x for x in runs if x["method"] == r["method"])
            n = sum(x["method"] == r["method"] for x in runs)
            label = f"{r['method']} ({n} seed{'s' * (n > 1)})" if first else None
            steps, values = zip(*r["curve"])
            if r["method"] == "bc":   # no online steps: its success, as a level across the axis
                ax.axhline(values[0], color=color, linestyle=":", linewidth=1.2, label=label)
                ax.plot([0], [values[0]], color=color, marker="o")
            else:
                ax.plot(steps, values, color=color, marker=".", alpha=0.8, label=label)

    def title(task: str) -> str:
        runs = [r for r in results if r["task"] == task]
        obs = sorted({r["obs_mode"] for r in runs if r["method"] in ("demos", "no-demos")}) or ["state"]
        return f"Sim{task.capitalize()}-v0 ({', '.join(obs)}; recipe {runs[0]['recipe']})"

    plot_success_panels(list(dict.fromkeys(r["task"] for r in results)), draw, title, path, threshold, width=6)


def report(results: list[dict], out: Path, threshold: float) -> None:
    """The table on stdout and ``learning_curves.png`` in ``out``."""
    print("\n".join(summarise(results, threshold)))
    plot(results, out / "learning_curves.png", threshold)
    print(f"wrote {out / 'learning_curves.png'} and {out / 'results.json'}")


def run(args: argparse.Namespace) -> int:
    from benchmarks.actors import record_demos

    out = Path(args.out)
    results_path = out / "results.json"
    if args.report:
        if not results_path.is_file():
            raise _fail(f"--report: no {results_path}")
        report(json.loads(results_path.read_text())["results"], out, args.threshold)
        return 0
    settings = plan(args)
    out.mkdir(parents=True, exist_ok=True)
    order = [(task, method, seed) for method in settings["methods"] for task in settings["tasks"]
             for seed in settings["seeds"][method]]
    for task, method, seed in order:   # the demos first, in this process: every method then reads the same files
        if method in ("demos", "bc"):
            cfg = run_config(task, settings["recipes"][task], seed, settings["steps"][method], "", args)
            record_demos(demos_dir(out, cfg), task, args.demo_episodes, seed + 50_000, cfg)
    earlier = json.loads(results_path.read_text())["results"] if results_path.is_file() else []
    done = {(r["task"], r["method"], r["seed"]): r for r in earlier if (r["task"], r["method"], r["seed"]) not in order}
    started = {"load_avg_start": list(os.getloadavg())}

    def record(result: dict) -> None:
        done[(result["task"], result["method"], result["seed"])] = result
        print(f"{run_line(result, result['method'], args.threshold)}; load {result['load_avg'][0]:.1f}", flush=True)
        results_path.write_text(json.dumps({**started, "args": vars(args) | {"func": None, "settings": None},
                                            "results": list(done.values())}, indent=1))

    args.settings = settings
    run_jobs(order, _job, args, record, args.jobs)
    report(list(done.values()), out, args.threshold)
    return 0
