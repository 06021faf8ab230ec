"""Env steps to 90% eval success: MBPO vs se_robot's SAC vs Stable-Baselines3's SAC, on the sim tasks.

``python -m benchmarks sample-efficiency`` trains, in one run, MBPO and se_robot's SAC (both through
the shared loop, ``se_robot.train``) and Stable-Baselines3's SAC with its default settings, on the
sim tasks from state, for several seeds. Every ``--eval-every`` env steps each learner is evaluated
greedily on the same start states (the loop's evaluation; SB3 through ``benchmarks.common``, which
follows the same protocol). Prints, per task and algo, the env steps to reach ``--threshold`` eval
success (median over seeds, with each seed's figure), the ratio to SB3, and wall-clock; writes a
learning-curve PNG and a JSON of every curve.

MBPO's settings are the CPU-sized recipe ``config/recipes/reach_mbpo_quick.yaml`` (its ``agent``
section; ``--mbpo-set`` adds to it) and se_robot's SAC row takes that recipe's ``agent.sac``
(``--sac-set`` adds to it), so the two rows share critics, learning rates and discount and differ
by the model only. MBPO scores its rollouts with the task's reward and termination on state vectors
instead of a learned reward when action_repeat is 1. Why each setting is what it is, with the
measured figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.common import EvalRow, plot_success_panels, run_jobs, run_line, run_sb3_sac, run_trainer, steps_to

ALGOS = ("mbpo", "sac", "sb3")
RECIPE = "reach_mbpo_quick"   # its agent section: MBPO's settings here; its agent.sac: the SAC row's


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sample-efficiency", help="env steps to 90%% success: MBPO, SAC, SB3 SAC",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="reach,push", help="comma list of sim tasks (reach, push, lift)")
    p.add_argument("--seeds", default="0,1,2", help="comma list of seeds")
    p.add_argument("--algos", default=",".join(ALGOS), help="comma list of mbpo, sac, sb3")
    p.add_argument("--steps", type=int, default=20_000, help="env steps per run")
    p.add_argument("--steps-for", action="append", default=[], metavar="ALGO=N",
                   help="env step budget of one algo (e.g. sb3=60000: the baseline needs the longest runs)")
    p.add_argument("--stop-when-solved", action="store_true",
                   help="end each run at its first evaluation at or above --threshold (saves the time "
                        "after the figure is known; curves then end there)")
    p.add_argument("--eval-every", type=int, default=1000, help="env steps between evaluations")
    p.add_argument("--eval-episodes", type=int, default=10, help="episodes per evaluation")
    p.add_argument("--threshold", type=float, default=0.9, help="eval success rate counted as solved")
    p.add_argument("--learning-starts", type=int, default=250,
                   help="online steps before se_robot agents' first update; they act with their untrained "
                        "policy meanwhile, not at random (SB3 keeps its default, 100 uniform random steps)")
    p.add_argument("--discount", type=float, default=0.99,
                   help="se_robot agents' discount (real batches and MBPO's rollouts); SB3 keeps 0.99")
    p.add_argument("--action-repeat", type=int, default=1, help="control ticks per agent step")
    p.add_argument("--mbpo-set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"MBPO config overrides on top of the agent section of config/recipes/{RECIPE}.yaml")
    p.add_argument("--sac-set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"se_robot SAC overrides on top of agent.sac of config/recipes/{RECIPE}.yaml")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs trained at once, each in its own process (one per core at --threads 1); "
                        "the figures do not depend on it, the wall-clock per run does")
    p.add_argument("--out", default="runs/bench_sample_efficiency", help="directory for runs, JSON and PNG")
    p.set_defaults(func=run)


def _run_se_robot(algo: str, task: str, seed: int, args: argparse.Namespace, run_dir: Path) -> list[EvalRow]:
    from se_robot.config import merge, parse_set
    from se_robot.train_config import load_config, read_recipe

    recipe = read_recipe(RECIPE)["agent"]
    agent = (merge(recipe, parse_set(args.mbpo_set, "--mbpo-set")) if algo == "mbpo"
             else merge(recipe["sac"], parse_set(args.sac_set, "--sac-set")))
    steps = budget(args, algo)
    cfg = load_config(overrides={
        "task": task, "algo": algo, "obs_mode": "state", "frame_stack": 1, "action_repeat": args.action_repeat,
        "steps": steps, "seed": seed, "learning_starts": args.learning_starts, "eval_every": args.eval_every,
        "eval_episodes": args.eval_episodes, "eval_video": False, "checkpoint_every": 10 * steps,
        "keep_checkpoints": 1, "save_replay": False, "log_every": args.eval_every, "tensorboard": False,
        "progress": False, "device": "cpu", "threads": args.threads,
        "stop_at_success": args.threshold if args.stop_when_solved else 0.0,
        "replay": {"capacity": steps + 1000, "n_step": 1, "discount": args.discount},
        "agent": agent}, source="benchmarks sample-efficiency")
    return run_trainer(cfg, run_dir)[0]  # the loop gives MBPO the task's reward_fn (state obs, no action repeat)


def budget(args: argparse.Namespace, algo: str) -> int:
    """The env step budget of ``algo``: ``--steps-for ALGO=N`` where given, else ``--steps``."""
    for item in args.steps_for:
        name, sep, value = item.partition("=")
        if not sep or name.strip() not in ALGOS or not value.strip().isdigit() or int(value) < 1:
            raise SystemExit(f"benchmarks sample-efficiency: --steps-for {item!r}: expected ALGO=N with "
                             f"ALGO one of {', '.join(ALGOS)} and N a positive integer")
        if name.strip() == algo:
            return int(value)
    return args.steps


def _summarise(results: list[dict], args: argparse.Namespace) -> list[str]:
    import numpy as np

    lines = [f"env steps to {args.threshold:.0%} eval success ({args.eval_episodes} episodes every "
             f"{args.eval_every} steps; '>N' = not reached within the algo's budget N; median over seeds)",
             f"{'task':<8}{'algo':<7}{'median':>10}{'per seed':>34}{'vs sb3':>10}{'final':>8}{'best':>7}{'wall s/run':>12}"]
    for task in dict.fromkeys(r["task"] for r in results):
        medians: dict[str, float] = {}
        rows = []
        for algo in dict.fromkeys(r["algo"] for r in results if r["task"] == task):
            runs = [r for r in results if r["task"] == task and r["algo"] == algo]
            hits = [r["steps_to_threshold"] for r in runs]
            medians[algo] = float(np.median([h if h is not None else np.inf for h in hits]))
            wall = float(np.mean([r["wall_s"] for r in runs]))
            final = float(np.mean([r["curve"][-1][1] for r in runs]))
            best = float(np.mean([max(v for _, v in r["curve"]) for r in runs]))
            rows.append((algo, hits, wall, final, best))
        for algo, hits, wall, final, best in rows:
            med = medians[algo]
            cap = budget(args, algo)
            med_text = f">{cap}" if med == float("inf") else f"{med:.0f}"
            per_seed = ",".join(str(h) if h is not None else f">{cap}" for h in hits)
            base = medians.get("sb3")
            if base is None or algo == "sb3":
                ratio = "-"
            elif med == float("inf"):
                ratio = "n/a"
            elif base == float("inf"):  # SB3 never got there: its budget bounds the ratio from below
                ratio = f">{budget(args, 'sb3') / med:.2f}x"
            else:
                ratio = f"{base / med:.2f}x"
            lines.append(f"{task:<8}{algo:<7}{med_text:>10}{per_seed:>34}{ratio:>10}{final:>8.2f}{best:>7.2f}{wall:>12.0f}")
    lines.append("vs sb3: SB3 SAC's median steps divided by this algo's ('2.00x' = half the env steps); "
                 "final/best: eval success at the last/best evaluation, mean over seeds")
    return lines


def _plot(results: list[dict], path: Path, threshold: float) -> None:
    def draw(ax, task: str) -> None:
        # One line per seed: runs stopped when solved end early, and only measured points are drawn.
        for k, algo in enumerate(dict.fromkeys(r["algo"] for r in results if r["task"] == task)):
            runs = [r for r in results if r["task"] == task and r["algo"] == algo]
            for j, r in enumerate(runs):
                steps, values = zip(*r["curve"])
                ax.plot(steps, values, color=f"C{k}", marker=".", alpha=0.8,
                        label=f"{algo} ({len(runs)} seeds)" if j == 0 else None)

    plot_success_panels(list(dict.fromkeys(r["task"] for r in results)), draw,
                        lambda task: f"Sim{task.capitalize()}-v0 (state)", path, threshold)


def _one_run(task: str, algo: str, seed: int, args: argparse.Namespace) -> dict:
    """Train one learner on one task and seed; the unit that ``--jobs`` spreads over processes."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if algo == "sb3":
        rows, _ = run_sb3_sac(task, seed, budget(args, "sb3"), args.eval_every, args.eval_episodes,
                              stop_at_success=args.threshold if args.stop_when_solved else 0.0,
                              action_repeat=args.action_repeat)
    else:
        rows = _run_se_robot(algo, task, seed, args, Path(args.out) / f"{task}_{algo}_seed{seed}")
    wall = time.perf_counter() - start
    return {"task": task, "algo": algo, "seed": seed, "curve": [(r["step"], r["success"]) for r in rows],
            "wall_s": wall, "steps_to_threshold": steps_to(rows, args.threshold)}


def run(args: argparse.Namespace) -> int:
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    unknown = [a for a in algos if a not in ALGOS]
    if unknown:
        raise SystemExit(f"benchmarks sample-efficiency: unknown algos {unknown}; allowed: {', '.join(ALGOS)}")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"benchmarks sample-efficiency: --seeds must be integers, got {args.seeds!r}") from None
    if args.jobs < 1:
        raise SystemExit(f"benchmarks sample-efficiency: --jobs must be at least 1, got {args.jobs}")
    for algo in algos:
        budget(args, algo)   # a malformed --steps-for fails before any training
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    order = [(task, algo, seed) for task in tasks for algo in algos for seed in seeds]  # --algos order
    done: dict[tuple[str, str, int], dict] = {}

    def record(result: dict) -> None:
        done[(result["task"], result["algo"], result["seed"])] = result
        print(run_line(result, result["algo"], args.threshold), flush=True)
        ordered = [done[key] for key in order if key in done]   # a stopped bench keeps what finished
        (out / "results.json").write_text(json.dumps({"args": vars(args) | {"func": None}, "results": ordered},
                                                     indent=1))

    run_jobs(order, _one_run, args, record, args.jobs)
    results = [done[key] for key in order]
    print("\n".join(_summarise(results, args)))
    _plot(results, out / "learning_curves.png", args.threshold)
    print(f"wrote {out / 'learning_curves.png'} and {out / 'results.json'}")
    return 0
