"""``python -m benchmarks actors``: N actor_nodes -> 1 learner_node over ROS 2 on the twin's reach task.

Starts the nodes as processes on a private ROS_DOMAIN_ID (``tests.support.ros_harness``) and prints:
- data rate: transitions/s reaching the learner's replay with 1 and with 2 sim actors, free-running
  or capped at ``--rate-hz`` each (the learner takes data in but does not update, so the figure is
  the transport, assembly and the actors' own speed), over ``--rate-seconds`` once every actor is heard;
- sample efficiency: env steps (transitions in the learner's replay when the evaluated weights
  were published) to ``--threshold`` eval success with 1 and with 2 actors, against the
  single-process loop (``se_robot.train``) with the same agent: ``--algo mbpo`` is the
  ``reach_mbpo_quick`` recipe, ``--algo sac`` that recipe's ``agent.sac`` (discount 0.9, one update
  per transition). Actor 1 evaluates greedily every ``--eval-every`` learner steps on the loop's
  evaluation start states. Actors are capped at ``--actor-hz`` steps/s each, as a robot paces
  itself at its control rate, and wait between episodes while the learner owes more than
  ``--max-backlog`` updates (actor_node's ``max_learner_backlog``): the learner must keep up with its
  one update per transition (``learner/updates_owed``, printed as the largest backlog seen), or
  the figure measures lag. The x axis is the transitions in the learner's replay when the weights
  were published: every env step any actor took that the updates could sample.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

RECIPE = "reach_mbpo_quick"   # its agent.sac: the SAC settings of the sample-efficiency benchmark


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("actors", help="actor/learner over ROS 2: data rate and env steps to 90%%, 1 vs 2 actors",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--actors", default="1,2", help="comma list of actor counts")
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
                   help="mbpo: the reach_mbpo_quick recipe; sac: its agent.sac settings")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-baseline", action="store_true", help="skip the single-process loop run")
    p.add_argument("--out", default="runs/bench_actors", help="directory for runs and the JSON of every curve")
    p.set_defaults(func=run)


def _agent_settings(algo: str) -> tuple[str, str]:
    """(train_config, train_overrides) both sides and the loop use for ``algo``."""
    from se_robot.train_config import read_recipe

    if algo == "mbpo":
        return RECIPE, "threads=1"
    sac = read_recipe(RECIPE)["agent"]["sac"]
    return "", " ".join(["replay.discount=0.9", "replay.n_step=1", "action_repeat=1", "threads=1"]
                        + [f"agent.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in sac.items()])


def _split_run(n_actors: int, args: argparse.Namespace, run_dir: Path, *, learn: bool, seconds: float) -> dict:
    """One learner and ``n_actors`` actors; the learner's metrics and actor 1's eval rows."""
    from std_msgs.msg import String

    from se_robot.nodes.runtime import DIAGNOSTICS_QOS
    from tests.support import ros_harness as harness

    domain = harness.pick_domain_id(40 + n_actors + 10 * int(learn))
    recipe, overrides = _agent_settings(args.algo)
    common = {"algo": args.algo, "obs_mode": "state", "seed": args.seed, "train_config": recipe,
              "train_overrides": overrides}
    log = Path(tempfile.gettempdir())
    procs = [harness.start_node("learner_node", domain, {
        **common, "mode": "split", "total_steps": args.steps if learn else 10**9,
        "learning_starts": 250 if learn else 10**9, "weights_period_steps": 50, "checkpoint_period_steps": 10**9,
        "checkpoint_dir": str(run_dir)}, log_path=str(log / f"bench_actors_learner_{n_actors}.log"))]
    for i in range(n_actors):
        procs.append(harness.start_node("actor_node", domain, {
            **common, "env_backend": "sim", "seed": args.seed + 1000 * i, "batch_transitions": 16,
            "max_rate_hz": args.actor_hz if learn else args.rate_hz, "eval_episodes": args.eval_episodes,
            "max_learner_backlog": args.max_backlog if learn else 0,
            "eval_period_steps": args.eval_every if (learn and i == 0) else 0},
            node_name=f"actor{i}", log_path=str(log / f"bench_actors_actor{i}_{n_actors}.log")))
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
                                         "return": m["eval/return"], "wall_s": time.monotonic() - start})
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
                ros.spin_until(lambda: last.get("learner/finished") == 1 or any(
                    r["success"] >= args.threshold for r in out["curve"]), seconds)
            out["learner"] = {k: v for k, v in last.items() if k.startswith("learner/")}
            out["max_backlog"] = backlog[0]
            out["wall_s"] = time.monotonic() - start
    finally:
        for proc in reversed(procs):
            harness.stop_node(proc)
    return out


def _baseline(args: argparse.Namespace, run_dir: Path) -> list[dict]:
    from benchmarks.common import run_trainer
    from se_robot.train_config import load_config

    recipe, overrides = _agent_settings(args.algo)
    cfg = load_config(recipe or None, {
        "task": "reach", "algo": args.algo, "obs_mode": "state", "frame_stack": 1, "steps": args.steps,
        "seed": args.seed, "learning_starts": 250, "eval_every": args.eval_every,
        "eval_episodes": args.eval_episodes, "eval_video": False, "checkpoint_every": 10 * args.steps,
        "save_replay": False, "tensorboard": False, "progress": False, "device": "cpu",
        "log_every": args.eval_every, "stop_at_success": args.threshold}, overrides.split(),
        source="benchmarks actors")
    return run_trainer(cfg, run_dir)[0]


def run(args: argparse.Namespace) -> int:
    import signal
    import sys

    from benchmarks.common import steps_to

    # SIGTERM (a timeout, a job scheduler) unwinds like Ctrl-C, so every node process started is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    counts = [int(n) for n in args.actors.split(",")]
    figures = set(args.figures.split(","))
    results: dict[str, Any] = {}
    if "rate" in figures:
        for n in counts:
            results[f"rate_{n}"] = _split_run(n, args, out / f"rate_{n}", learn=False, seconds=args.rate_seconds)
            print(f"data rate, {n} actor(s): {results[f'rate_{n}']['rate']:.0f} transitions/s", flush=True)
    if "efficiency" in figures:
        if not args.no_baseline:
            t = time.monotonic()
            results["loop"] = {"curve": _baseline(args, out / "loop"), "wall_s": time.monotonic() - t}
        for n in counts:
            results[f"split_{n}"] = _split_run(n, args, out / f"split_{n}", learn=True, seconds=3600.0)
    (out / "actors.json").write_text(json.dumps(results, indent=1))
    print()
    if "rate" in figures:
        base = results[f"rate_{counts[0]}"]["rate"]
        for n in counts:
            r = results[f"rate_{n}"]["rate"]
            print(f"data rate  {n} actor(s): {r:8.0f} transitions/s   x{r / base:.2f} vs {counts[0]}")
    if "efficiency" in figures:
        loop = steps_to(results["loop"]["curve"], args.threshold) if "loop" in results else None
        print(f"env steps to {args.threshold:.0%} eval success on reach ({args.algo}, seed {args.seed}, "
              f"{args.eval_episodes} episodes every {args.eval_every} steps)")
        for name in ["loop"] * ("loop" in results) + [f"split_{n}" for n in counts]:
            hit = steps_to(results[name]["curve"], args.threshold)
            ratio = f"x{hit / loop:.2f} vs loop" if hit and loop else "-"
            lag = f"  largest update backlog {results[name]['max_backlog']}" if "max_backlog" in results[name] else ""
            print(f"  {name:<10} {hit if hit is not None else f'>{args.steps}'!s:>8}  {ratio:>14}  "
                  f"wall {results[name]['wall_s']:.0f} s{lag}")
    return 0
