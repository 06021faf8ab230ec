"""``python -m benchmarks actors``: N actor_nodes -> 1 learner_node over ROS 2 on a twin task (reach, lift).

Starts the nodes as processes on a private ROS_DOMAIN_ID (``tests.support.ros_harness``) and prints:
- data rate: transitions/s reaching the learner's replay with 1 and with 2 sim actors, free-running
  or capped at ``--rate-hz`` each (the learner takes data in but does not update, so the figure is
  the transport, assembly and the actors' own speed), over ``--rate-seconds`` once every actor is heard;
- sample efficiency: env steps (transitions in the learner's replay when the evaluated weights
  were published) to ``--threshold`` eval success with 1 and with 2 actors, against the
  single-process loop (``se_robot.train``) with the same agent. On reach, ``--algo mbpo`` is the
  ``reach_mbpo_quick`` recipe, ``--algo sac`` that recipe's ``agent.sac`` (discount 0.9, one update
  per transition). ``--recipe NAME`` (default ``lift_sac_demos`` on lift) takes the algo and every
  agent setting from that recipe instead, and ``--demo-episodes`` scripted demos (default 20 on
  lift) are recorded once and given to the loop and to the learner alike. Actor 1 evaluates
  greedily every ``--eval-every`` learner steps on the loop's evaluation start states. Actors are
  capped at ``--actor-hz`` steps/s each, as a robot paces itself at its control rate, and wait
  between episodes while the learner owes more than ``--max-backlog`` updates (actor_node's
  ``max_learner_backlog``): the learner must keep up with its updates (``learner/updates_owed``,
  printed as the largest backlog seen), or the figure measures lag. The x axis is the transitions
  in the learner's replay when the weights were published: every env step any actor took that
  the updates could sample.

Every run's curve goes to ``<out>/<run>.json`` as soon as it ends (``loop``, ``split_1``,
``split_2``), with each point's arm-minutes (env steps summed over arms / the env's control rate:
the robot time spent) and wall minutes. The table and ``<out>/actors_<task>.png`` (success against
arm-minutes and against wall minutes) are made from every run file in ``<out>`` with the same
settings, so runs made by separate invocations (``--no-baseline``, ``--actors 2``) into one
``--out`` are reported together; ``--report`` only reports.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

RECIPE = "reach_mbpo_quick"   # its agent.sac: the SAC settings of the reach sample-efficiency benchmark
TASK_RECIPES = {"lift": "lift_sac_demos"}   # --recipe's default per task
# TrainConfig keys that decide what the loop learns; a --loop-run must match the benchmark's on these
LEARNING_KEYS = ("task", "algo", "obs_mode", "frame_stack", "action_repeat", "seed", "learning_starts",
                 "eval_every", "eval_episodes", "replay", "agent", "env", "demos")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("actors", help="actor/learner over ROS 2: data rate and env steps to 90%%, 1 vs 2 actors",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="reach", choices=("reach", "lift"), help="twin task (default reach)")
    p.add_argument("--actors", default="1,2", help="comma list of actor counts ('' : none, the loop only)")
    p.add_argument("--figures", default="rate,efficiency", help="comma list of rate, efficiency")
    p.add_argument("--rate-seconds", type=float, default=20.0, help="data-rate window (s)")
    p.add_argument("--rate-hz", type=float, default=0.0,
                   help="steps/s cap of each actor in the data-rate runs (0: free-running twins, CPU-bound)")
    p.add_argument("--steps", type=int, default=20_000, help="env step budget per learning run")
    p.add_argument("--eval-every", type=int, default=500, help="learner steps between evaluations")
    p.add_argument("--eval-episodes", type=int, default=10, help="episodes per evaluation")
    p.add_argument("--threshold", type=float, default=0.9, help="eval success counted as solved")
    p.add_argument("--actor-hz", type=float, default=40.0, help="steps/s cap of each actor in the efficiency runs")
    p.add_argument("--max-backlog", type=int, default=50,
                   help="efficiency runs: actors wait between episodes while the learner owes more updates than "
                        "this (actor_node's max_learner_backlog; 0: never), so the figure measures learning, "
                        "not a learner left behind on a slow machine")
    p.add_argument("--algo", default="mbpo", choices=("mbpo", "sac"),
                   help="without a recipe (reach): mbpo: the reach_mbpo_quick recipe; sac: its agent.sac settings")
    p.add_argument("--recipe", default=None,
                   help="a recipe (config/recipes/NAME.yaml) whose algo and settings every run uses "
                        f"(default: {', '.join(f'{t}: {r}' for t, r in TASK_RECIPES.items())}; none on reach)")
    p.add_argument("--demo-episodes", type=int, default=None,
                   help="scripted demos recorded once into <out>/demos_<task> for the loop and the learner "
                        "(default: 20 with a recipe, else 0)")
    p.add_argument("--demos", metavar="DIR", default=None,
                   help="use this episode dataset (recorded as the agent observes) instead of recording demos")
    p.add_argument("--loop-run", metavar="DIR", default=None,
                   help="take the loop's curve from this finished `se-robot train` run (its config.yaml must "
                        "match the benchmark's on every learning setting) instead of training it again")
    p.add_argument("--report", action="store_true", help="only print the table and plot from <out>'s run files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-baseline", action="store_true", help="skip the single-process loop run")
    p.add_argument("--out", default="runs/bench_actors", help="directory for runs and the JSON of every curve")
    p.set_defaults(func=run)


def _recipe(args: argparse.Namespace) -> str:
    """The recipe every learning run uses ('' : reach's --algo settings)."""
    return args.recipe if args.recipe is not None else TASK_RECIPES.get(args.task, "")


def _demo_episodes(args: argparse.Namespace) -> int:
    return args.demo_episodes if args.demo_episodes is not None else (20 if _recipe(args) else 0)


def _demos_dir(args: argparse.Namespace) -> str:
    """The demo dataset's absolute path ('' : no demos); recorded on first use unless ``--demos``."""
    if args.demos:
        return str(Path(args.demos).resolve())
    n = _demo_episodes(args)
    return str((Path(args.out) / f"demos_{args.task}_{n}").resolve()) if n > 0 else ""


def _agent_settings(args: argparse.Namespace) -> tuple[str, str, str, int]:
    """(train_config, train_overrides, algo, learning_starts) both sides and the loop use."""
    from se_robot.train_config import load_config, read_recipe

    demos = _demos_dir(args)
    extra = ["threads=1"] + [f"demos={demos}"] * bool(demos)
    recipe = _recipe(args)
    if recipe:
        cfg = load_config(recipe, {"task": args.task}, source="benchmarks actors")
        return recipe, " ".join(extra), cfg.algo, cfg.learning_starts
    if args.algo == "mbpo":
        return RECIPE, " ".join(extra), "mbpo", 250
    sac = read_recipe(RECIPE)["agent"]["sac"]
    return "", " ".join(["replay.discount=0.9", "replay.n_step=1", "action_repeat=1"] + extra
                        + [f"agent.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in sac.items()]), \
        "sac", 250


def _loop_config(args: argparse.Namespace) -> Any:
    """The single-process loop's config: the recipe (or reach's settings) on this benchmark's budget."""
    from se_robot.train_config import load_config

    recipe, overrides, algo, starts = _agent_settings(args)
    return load_config(recipe or None, {
        "task": args.task, "algo": algo, "obs_mode": "state", "frame_stack": 1, "steps": args.steps,
        "seed": args.seed, "learning_starts": starts, "eval_every": args.eval_every,
        "eval_episodes": args.eval_episodes, "eval_video": False, "checkpoint_every": 10 * args.steps,
        "save_replay": False, "tensorboard": False, "progress": False, "device": "cpu",
        "log_every": args.eval_every, "stop_at_success": args.threshold}, overrides.split(),
        source="benchmarks actors")


def record_demos(path: Path, task: str, episodes: int, seed: int, cfg: Any) -> None:
    """``episodes`` scripted-expert episodes with the observations ``cfg``'s agent sees (kept if there)."""
    from se_robot.data.recording import dataset_meta_for, record_scripted
    from se_robot.envs import make_env
    from se_robot.envs.experts import expert_for

    if (path / "dataset.json").is_file():
        return
    reward_type = cfg.env.get("reward_type", "dense")
    # frame_stack=0: datasets hold the env's own frames, one per control tick
    env = make_env(task, frame_stack=0, obs_mode=cfg.obs_mode, image_size=cfg.image_size, reward_type=reward_type)
    try:
        meta = dataset_meta_for(env, task, obs_mode=cfg.obs_mode, image_size=cfg.image_size, reward_type=reward_type)
        written = record_scripted(env, expert_for(env), path, meta, episodes, seed=seed, log=lambda s: None)
    finally:
        env.close()
    if len(written) < episodes:
        raise RuntimeError(f"the scripted expert succeeded in only {len(written)} of {episodes} demo episodes")


def _split_run(n_actors: int, args: argparse.Namespace, run_dir: Path, *, learn: bool, seconds: float) -> dict:
    """One learner and ``n_actors`` actors; the learner's metrics and actor 1's eval rows."""
    from std_msgs.msg import String

    from se_robot.nodes.runtime import DIAGNOSTICS_QOS
    from tests.support import ros_harness as harness

    domain = harness.pick_domain_id(40 + n_actors + 10 * int(learn))
    recipe, overrides, algo, starts = _agent_settings(args)
    common = {"algo": algo, "task": args.task, "obs_mode": "state", "seed": args.seed, "train_config": recipe,
              "train_overrides": overrides}
    run_dir.mkdir(parents=True, exist_ok=True)
    procs = [harness.start_node("learner_node", domain, {
        **common, "mode": "split", "total_steps": args.steps if learn else 10**9,
        "learning_starts": starts if learn else 10**9, "weights_period_steps": 50, "checkpoint_period_steps": 10**9,
        "checkpoint_dir": str(run_dir)}, log_path=str(run_dir / "learner.log"))]
    for i in range(n_actors):
        procs.append(harness.start_node("actor_node", domain, {
            **common, "env_backend": "sim", "seed": args.seed + 1000 * i, "batch_transitions": 16,
            "max_rate_hz": args.actor_hz if learn else args.rate_hz, "eval_episodes": args.eval_episodes,
            "max_learner_backlog": args.max_backlog if learn else 0,
            "eval_period_steps": args.eval_every if (learn and i == 0) else 0},
            node_name=f"actor{i}", log_path=str(run_dir / f"actor{i}.log")))
    out: dict[str, Any] = {"curve": [], "rate": None}
    try:
        with harness.ros_session(domain, "bench_actors") as ros:
            last: dict = {}
            backlog = [0]

            def on_learner(msg: String) -> None:
                last.update(json.loads(msg.data))
                backlog[0] = max(backlog[0], int(last.get("learner/updates_owed", 0)))

            def on_actor(msg: String) -> None:
                m = json.loads(msg.data)
                if "eval/success" in m:
                    out["curve"].append({"step": int(m["eval/learner_step"]), "success": m["eval/success"],
                                         "return": m["eval/return"], "wall_s": time.monotonic() - start,
                                         "backlog": int(last.get("learner/updates_owed", 0))})
                    print(f"  {n_actors} actor(s): step {int(m['eval/learner_step'])} success "
                          f"{m['eval/success']:.2f}", flush=True)

            start = time.monotonic()
            ros.node.create_subscription(String, "learner/metrics", on_learner, DIAGNOSTICS_QOS)
            ros.node.create_subscription(String, "actor/metrics", on_actor, DIAGNOSTICS_QOS)
            if not ros.spin_until(lambda: last.get("learner/actors", 0) >= n_actors, 300.0):
                raise RuntimeError(f"not every actor was heard: {last}")
            if not learn:
                ros.spin_for(2.0)
                t0, n0 = time.monotonic(), last["learner/transitions"]
                ros.spin_for(seconds)
                out["rate"] = (last["learner/transitions"] - n0) / (time.monotonic() - t0)
            else:
                try:
                    ros.spin_until(lambda: last.get("learner/finished") == 1 or any(
                        r["success"] >= args.threshold for r in out["curve"]), seconds)
                except KeyboardInterrupt:   # Ctrl-C or SIGTERM: the curve so far is kept, marked so
                    out["interrupted"] = True
            out["learner"] = {k: v for k, v in last.items() if k.startswith("learner/")}
            out["max_backlog"] = backlog[0]
            out["wall_s"] = time.monotonic() - start
    finally:
        for proc in reversed(procs):
            harness.stop_node(proc)
    return out


def _loop_curve(run_dir: Path) -> list[dict]:
    """The loop's eval rows, with the wall seconds it had trained (evaluation excluded) at each."""
    from se_robot.logger import Logger

    return [{"step": int(float(r["step"])), "success": float(r["eval/success"]), "return": float(r["eval/return"]),
             "wall_s": float(r["eval/train_seconds"])} for r in Logger.read(run_dir / "eval.csv")]


def _check_loop_run(cfg: Any, run_dir: Path) -> None:
    """Refuse a finished run whose learning settings differ from the benchmark's loop."""
    from se_robot.config import ConfigError, to_dict
    from se_robot.train_config import load_config

    theirs, ours = to_dict(load_config(saved=run_dir / "config.yaml")), to_dict(cfg)
    for key in ("demos",):   # paths: the same dataset written two ways
        theirs[key], ours[key] = (str(Path(d[key]).resolve()) if d[key] else "" for d in (theirs, ours))
    for key in LEARNING_KEYS:
        if theirs[key] != ours[key]:
            raise ConfigError(str(run_dir / "config.yaml"), key,
                              f"{theirs[key]!r} where the benchmark's loop has {ours[key]!r}")


def _settings(args: argparse.Namespace) -> dict:
    """What makes two run files comparable (one table, one plot)."""
    recipe = _recipe(args)
    return {"task": args.task, "recipe": recipe, "algo": "" if recipe else args.algo, "seed": args.seed,
            "demos": _demos_dir(args), "eval_every": args.eval_every, "eval_episodes": args.eval_episodes}


def _with_axes(result: dict, control_hz: float) -> dict:
    """Each point's arm-minutes (env steps / control rate) and wall minutes."""
    for r in result["curve"]:
        r["arm_min"] = r["step"] / control_hz / 60.0
        r["wall_min"] = r["wall_s"] / 60.0
    return result


def _report(args: argparse.Namespace, out: Path, control_hz: float) -> None:
    """The table of every comparable run file in ``out``, and the plot of their curves."""
    from benchmarks.common import steps_to

    runs: dict[str, dict] = {}
    for path in sorted(out.glob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and data.get("settings") == _settings(args) and "curve" in data:
            runs[path.stem] = data
    order = sorted(runs, key=lambda name: (name != "loop", name))
    loop = steps_to(runs["loop"]["curve"], args.threshold) if "loop" in runs else None
    print(f"env steps to {args.threshold:.0%} eval success on {args.task} ({_recipe(args) or args.algo}, "
          f"seed {args.seed}, {args.eval_episodes} episodes every {args.eval_every} steps; arm-minutes at "
          f"{control_hz:g} Hz summed over arms)")
    for name in order:
        res = runs[name]
        hit = steps_to(res["curve"], args.threshold)
        at = next((r for r in res["curve"] if r["success"] >= args.threshold), None)
        ratio = f"x{hit / loop:.2f} vs loop" if hit and loop else "-"
        where = f"arm {at['arm_min']:.1f} min, wall {at['wall_min']:.1f} min" if at else "not reached"
        lag = f", largest update backlog {res['max_backlog']}" if "max_backlog" in res else ""
        lag += ", interrupted" if res.get("interrupted") else ""
        print(f"  {name:<8} {hit if hit is not None else f'>{args.steps}'!s:>8}  {ratio:>14}  {where}"
              f"  (run wall {res['wall_s'] / 60:.1f} min{lag})")
    if runs:
        _plot(runs, order, out / f"actors_{args.task}.png", args)


def _plot(runs: dict[str, dict], order: list[str], path: Path, args: argparse.Namespace) -> None:
    """Eval success against arm-minutes and against wall minutes, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"loop": "single-process loop"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for k, name in enumerate(order):
        n = name.removeprefix("split_")
        label = labels.get(name, f"split, {n} actor{'s' * (n != '1')}")
        for ax, key in zip(axes, ("arm_min", "wall_min")):
            ax.plot([r[key] for r in runs[name]["curve"]], [r["success"] for r in runs[name]["curve"]],
                    color=f"C{k}", marker=".", label=label)
    for ax, xlabel in zip(axes, ("arm-minutes (env steps of all arms / control rate)",
                                 "wall minutes on this machine (2 shared CPU cores)")):
        ax.axhline(args.threshold, color="gray", linestyle="--", linewidth=0.8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("eval success rate")
        ax.set_ylim(-0.02, 1.02)
        ax.legend()
    fig.suptitle(f"Sim{args.task.capitalize()}-v0 from state, {_recipe(args) or args.algo}, seed {args.seed}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    import signal

    # SIGTERM (a timeout, a job scheduler) unwinds like Ctrl-C: every node process started is stopped,
    # and a learning run's curve so far is saved (marked interrupted)
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    counts = [int(n) for n in args.actors.split(",") if n.strip()]
    figures = set(args.figures.split(","))
    cfg = _loop_config(args)   # validates the recipe and overrides before any process starts
    control_hz = float(cfg.env.get("control_hz", 10.0)) / cfg.action_repeat
    settings = _settings(args)
    if args.report:
        _report(args, out, control_hz)
        return 0
    if "efficiency" in figures and settings["demos"] and not args.demos:
        record_demos(Path(settings["demos"]), args.task, _demo_episodes(args), args.seed + 50_000, cfg)
    rates: dict[int, float] = {}
    if "rate" in figures:
        for n in counts:
            rates[n] = _split_run(n, args, out / f"rate_{n}", learn=False, seconds=args.rate_seconds)["rate"]
            print(f"data rate, {n} actor(s): {rates[n]:.0f} transitions/s", flush=True)
        (out / "rate.json").write_text(json.dumps({"rate_hz_cap": args.rate_hz, "transitions_per_s": rates}))
    if "efficiency" in figures:
        def save(name: str, res: dict) -> None:
            res.setdefault("wall_s", max((r["wall_s"] for r in res["curve"]), default=0.0))
            res.update(settings=settings, actor_hz=None if name == "loop" else args.actor_hz,
                       max_backlog_limit=None if name == "loop" else args.max_backlog)
            (out / f"{name}.json").write_text(json.dumps(_with_axes(res, control_hz), indent=1))

        if args.loop_run:
            _check_loop_run(cfg, Path(args.loop_run))
            save("loop", {"curve": _loop_curve(Path(args.loop_run)), "source": str(args.loop_run)})
        elif not args.no_baseline:
            from se_robot.train import build_trainer

            t = time.monotonic()
            trainer = build_trainer(cfg, out / "loop")
            try:
                trainer.train()
            finally:
                trainer.logger.close()
            save("loop", {"curve": _loop_curve(out / "loop"), "source": str(out / "loop"),
                          "wall_s": time.monotonic() - t})
        for n in counts:
            save(f"split_{n}", result := _split_run(n, args, out / f"split_{n}", learn=True, seconds=4 * 3600.0))
            if result.get("interrupted"):
                _report(args, out, control_hz)
                raise KeyboardInterrupt
    print()
    if rates:
        for n in counts:
            print(f"data rate  {n} actor(s): {rates[n]:8.0f} transitions/s   x{rates[n] / rates[counts[0]]:.2f} "
                  f"vs {counts[0]}")
    if "efficiency" in figures:
        _report(args, out, control_hz)
    return 0
