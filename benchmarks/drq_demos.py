"""``python -m benchmarks drq-demos``: does a handful of demos make DrQ-v2 sample-efficient on the twin?

Three learners on SimReach-v0, in one run, with the same evaluation (the loop's: greedy episodes
from fixed start seeds, success = ``info["is_success"]`` at any step of the episode):

- ``drqv2+demos``  DrQ-v2 from pixels with 10 scripted demos in a demo buffer, half of every batch
                   drawn from it (RLPD/SERL symmetric sampling, ``agent.demo_fraction``);
- ``drqv2``        the same agent and settings without demos;
- ``sb3-sac``      Stable-Baselines3 SAC with its default settings, from the state vector
                   (an upper reference: it sees the target position directly).

All three act through the same ``make_env`` (action repeat 2; 50 control ticks = 25 agent steps per
episode) with the task's dense reward (-tanh(10 d), never positive, so ending the episode on
success is what pays; ``--reward-type sparse`` for 1 on success). It prints eval success against
agent steps and control ticks, and the first evaluation at which success reached 90%.

CPU-sized DrQ-v2 (the paper's 84x84 / batch 256 / hidden 1024 runs at ~0.5 updates/s on the
project's 2-core CPU): 64x64 images, frame stack 3, batch 64, hidden 256, lr 3e-4, exploration
std linear(1.0, 0.1, steps/2), one torch thread. ``--set`` changes any of it
(``--set agent.hidden_dim=1024 --set image_size=84`` on a GPU).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.common import run_sb3_sac, run_trainer, steps_to

ARMS = ("drqv2+demos", "drqv2", "sb3-sac")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("drq-demos", help="DrQ-v2 with/without demos vs SB3 SAC on SimReach-v0",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=6000, help="agent steps per learner (default 6000)")
    p.add_argument("--eval-every", type=int, default=500, help="agent steps between evaluations")
    p.add_argument("--eval-episodes", type=int, default=10, help="episodes per evaluation")
    p.add_argument("--demo-episodes", type=int, default=10, help="scripted demos to record")
    p.add_argument("--demos", metavar="DIR", help="use this episode dataset instead of recording one")
    p.add_argument("--image-size", type=int, default=64, help="camera image side for DrQ-v2 (px)")
    p.add_argument("--reward-type", choices=("sparse", "dense"), default="dense",
                   help="reward of all three learners and of the demos (default sparse; see above)")
    p.add_argument("--encoder", metavar="FILE", default="",
                   help="a pretrained encoder checkpoint (se-robot pretrain-encoder) that both DrQ-v2 arms use "
                        "frozen, its per-frame features cached in replay (the arms' names get '+pre')")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma list of {', '.join(ARMS)}")
    p.add_argument("--out", metavar="DIR", help="where runs, demos and results.json go")
    p.add_argument("--set", dest="set", action="append", default=[], metavar="KEY=VALUE",
                   help="override the DrQ-v2 arms' training config (as in se-robot train)")
    p.add_argument("--progress", action="store_true", help="progress bars")
    p.set_defaults(func=run)


def drq_config(args: argparse.Namespace, demos: str):
    from se_robot.train_config import load_config

    half = max(1, args.steps // 2)
    data = {
        "task": "reach", "algo": "drqv2", "obs_mode": "pixels", "image_size": args.image_size,
        "frame_stack": 3, "action_repeat": 2, "steps": args.steps, "seed": args.seed,
        "learning_starts": 500, "demos": demos, "eval_every": args.eval_every,
        "eval_episodes": args.eval_episodes, "eval_video": False, "checkpoint_every": 10 ** 9,
        "save_replay": False, "log_every": 250, "tensorboard": True, "progress": args.progress,
        "device": "cpu", "threads": 1, "env": {"reward_type": args.reward_type},
        "replay": {"capacity": args.steps + 1000, "n_step": 3, "discount": 0.99},
        "agent": {"batch_size": 64, "hidden_dim": 256, "feature_dim": 50, "lr": 3e-4,
                  "num_expl_steps": 500, "update_every_steps": 2, "device": "cpu",
                  "stddev_schedule": f"linear(1.0,0.1,{half})", "demo_fraction": 0.5},
    }
    if args.encoder:
        data["agent"].update({"encoder": "checkpoint", "encoder_checkpoint": args.encoder, "freeze_encoder": True})
    return load_config(None, data, args.set, source="benchmarks drq-demos")


def record_demos(out: Path, episodes: int, image_size: int, seed: int, reward_type: str) -> Path:
    """Scripted-expert episodes on the raw twin (single frames, control rate), pixels and state."""
    from se_robot.data.recording import dataset_meta_for, record_scripted
    from se_robot.envs import make_env
    from se_robot.envs.experts import expert_for

    if (out / "dataset.json").is_file():
        return out
    # frame_stack=0: datasets hold the env's own frames, stacked again when replay samples them
    env = make_env("reach", frame_stack=0, obs_mode="both", image_size=image_size, reward_type=reward_type)
    try:
        meta = dataset_meta_for(env, "reach", obs_mode="both", image_size=image_size, reward_type=reward_type)
        written = record_scripted(env, expert_for(env), out, meta, episodes, seed=seed, log=lambda s: None)
    finally:
        env.close()
    if len(written) < episodes:
        raise RuntimeError(f"the scripted expert succeeded in only {len(written)} of {episodes} demo episodes")
    return out


def format_table(results: dict[str, dict], action_repeat: int = 2) -> str:
    arms = list(results)
    steps = sorted({r["step"] for res in results.values() for r in res["rows"]})
    head = f"{'agent steps':>11} {'ticks':>7}  " + "  ".join(f"{a:>16}" for a in arms)
    lines = ["eval success (fraction of episodes):", head]
    for s in steps:
        cells = []
        for a in arms:
            hit = [r for r in results[a]["rows"] if r["step"] == s]
            cells.append(f"{hit[0]['success']:>16.2f}" if hit else f"{'':>16}")
        lines.append(f"{s:>11} {s * action_repeat:>7}  " + "  ".join(cells))
    lines.append("")
    lines.append(f"{'agent':>16} {'steps to 90%':>13} {'ticks to 90%':>13} {'final':>6} {'best':>6} {'wall s':>8}")
    for a in arms:
        rows = results[a]["rows"]
        hit = steps_to(rows, 0.9)
        lines.append(f"{a:>16} {hit if hit is not None else 'not reached':>13} "
                     f"{hit * action_repeat if hit is not None else '-':>13} {rows[-1]['success']:>6.2f} "
                     f"{max(r['success'] for r in rows):>6.2f} {results[a]['wall_s']:>8.0f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import torch

    from se_robot.config import ConfigError, to_dict

    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    bad = [a for a in arms if a not in ARMS]
    if bad or not arms:
        raise ConfigError("--arms", args.arms, f"unknown arm(s) {bad}; allowed: {', '.join(ARMS)}")
    if args.steps < 1 or args.eval_every < 1 or args.eval_episodes < 1:
        raise ConfigError("benchmarks drq-demos", "--steps/--eval-every/--eval-episodes", "must be >= 1")
    out = Path(args.out or f"runs/bench-drq-demos-{time.strftime('%Y%m%d-%H%M%S')}")
    demos = ""
    if "drqv2+demos" in arms:
        demos = str(Path(args.demos) if args.demos else out / "demos")
    configs = {"drqv2+demos": drq_config(args, demos), "drqv2": drq_config(args, "")}   # validated up front
    if demos and not args.demos:
        record_demos(Path(demos), args.demo_episodes, args.image_size, seed=args.seed + 50_000,
                     reward_type=args.reward_type)
    results: dict[str, dict] = {}
    for arm in arms:
        name = arm.replace("drqv2", "drqv2+pre") if args.encoder and arm != "sb3-sac" else arm
        print(f"[benchmarks drq-demos] {name} ...", flush=True)
        if arm == "sb3-sac":
            torch.set_num_threads(1)
            rows, wall = run_sb3_sac("reach", args.seed, args.steps, args.eval_every, args.eval_episodes,
                                     save_to=out / arm, action_repeat=2, reward_type=args.reward_type)
        else:
            rows, wall = run_trainer(configs[arm], out / arm)
        results[name] = {"rows": rows, "wall_s": wall}
        print(f"[benchmarks drq-demos] {name}: final success {rows[-1]['success']:.2f}, "
              f"90% at {steps_to(rows, 0.9)}, {wall:.0f} s", flush=True)
    table = format_table(results)
    summary = {"command": "python -m benchmarks drq-demos",
               "args": {k: v for k, v in vars(args).items() if k != "func"}, "drq_config": to_dict(configs["drqv2"]),
               "results": results}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    (out / "results.txt").write_text(table + "\n")
    print(table)
    print(f"\nresults in {out}/results.json")
    return 0
