"""``se-robot train``: train an agent on the sim twin, the real arm or over ROS."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train an agent (DrQ-v2, SAC, MBPO) on a task",
                              description="Train an agent. The defaults are TrainConfig's (se_robot/train_config.py); a "
                              "recipe (--config), these options and --set change them, in that order.")
    p.add_argument("--task", help="reach | push | lift")
    p.add_argument("--algo", help="drqv2 | sac | mbpo")
    p.add_argument("--demos", metavar="DIR", help="episode dataset loaded into the demo buffer")
    p.add_argument("--steps", type=int, metavar="N", help="agent steps to train (total, also when resuming)")
    p.add_argument("--obs-mode", dest="obs_mode", help="pixels | state | both")
    p.add_argument("--encoder", metavar="FILE", help="sac/mbpo on pixels: a frozen pretrained encoder "
                   "(se-robot pretrain-encoder) whose features they learn from")
    p.add_argument("--image-size", dest="image_size", type=int, metavar="PX", help="square camera image side")
    p.add_argument("--backend", help="sim (the MuJoCo twin) | hardware (SerialArm + camera; env options via "
                   "--set env.port=/dev/ttyACM0) | ros (topics of arm_node or sim_node)")
    p.add_argument("--arm-id", dest="arm_id", metavar="ID",
                   help="hardware: the arm id whose stored calibration SerialArm uses (default: the arm's name); "
                        "same as --set env.arm_id=ID")
    p.add_argument("--teleop", help="keyboard | gamepad | spacemouse | leader: an operator can take over; "
                   "takeovers also go to the demo buffer")
    p.add_argument("--teleop-device", dest="teleop_device", metavar="PATH",
                   help="evdev node, leader-arm serial port or tty of the teleop device")
    p.add_argument("--reward-model", dest="reward_model", metavar="FILE",
                   help="success classifier (se-robot reward train) as the reward: sparse, episodes end on success")
    p.add_argument("--reward-threshold", dest="reward_threshold", type=float, metavar="P",
                   help="the classifier's success probability threshold (default: the model's own)")
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/<task>-<algo>-s<seed>-<time>)")
    p.add_argument("--resume", metavar="DIR", help="run directory or checkpoint to continue exactly")
    p.add_argument("--seed", type=int)
    p.add_argument("--config", metavar="RECIPE", help="a recipe: a name in config/recipes/ (e.g. reach_mbpo_quick) "
                   "or a YAML path; it sets only what differs from the defaults")
    p.add_argument("--set", dest="set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, nested with dots: --set replay.capacity=50000")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


#: Options that are config keys of the same name (the rest steer the command itself).
CONFIG_OPTIONS = ("task", "algo", "demos", "encoder", "steps", "obs_mode", "image_size", "backend", "seed", "teleop",
                  "teleop_device", "reward_model", "reward_threshold")


def check_arm_id(cfg) -> None:
    """An arm id names a calibration on this machine: only the hardware backend reads one (a ROS
    arm_node has its own ``arm_id`` parameter)."""
    from se_robot.config import ConfigError

    if "arm_id" in cfg.env and cfg.backend != "hardware":
        raise ConfigError("--arm-id", str(cfg.env["arm_id"]),
                          f"only the hardware backend reads a calibration; backend is {cfg.backend!r}"
                          + (" (set arm_node's arm_id parameter instead)" if cfg.backend == "ros" else ""))


def resolve_config(args: argparse.Namespace):
    """The validated TrainConfig and the run directory, before anything is built."""
    from se_robot import checkpoint
    from se_robot.config import ConfigError
    from se_robot.train_config import load_config

    overrides = {k: getattr(args, k) for k in CONFIG_OPTIONS if getattr(args, k, None) is not None}
    if getattr(args, "arm_id", None) is not None:
        overrides["env"] = {"arm_id": args.arm_id}
    if getattr(args, "no_progress", False):
        overrides["progress"] = False
    if args.resume:
        if args.config:
            raise ConfigError("--config", args.config, "a resumed run keeps its own config; change keys with --set")
        try:
            ckpt = checkpoint.resolve(args.resume)
        except FileNotFoundError as e:
            raise ConfigError("--resume", args.resume, str(e)) from None
        cfg = load_config(None, overrides, args.set, saved=ckpt / "config.yaml", source="command line")
        check_arm_id(cfg)
        run_dir = Path(args.out) if args.out else ckpt.parent.parent
        return cfg, run_dir, ckpt
    cfg = load_config(args.config, overrides, args.set, source="command line")
    check_arm_id(cfg)
    if cfg.demos and not (Path(cfg.demos) / "dataset.json").is_file():
        raise ConfigError("--demos", cfg.demos, "not an episode dataset (no dataset.json there)")
    run_dir = Path(args.out) if args.out else Path("runs") / (
        f"{cfg.task}-{cfg.algo}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}")
    if checkpoint.list_checkpoints(run_dir):
        raise ConfigError("--out", str(run_dir), "already holds checkpoints; continue it with --resume "
                          f"{run_dir} or pick another --out")
    return cfg, run_dir, None


def run(args: argparse.Namespace) -> int:
    cfg, run_dir, ckpt = resolve_config(args)
    from se_robot.train import build_trainer

    trainer = build_trainer(cfg, run_dir, resume=ckpt)
    start = trainer.step
    print(f"se-robot train: {cfg.algo} on {cfg.task} ({cfg.obs_mode}), run dir {run_dir}"
          + (f", resumed at step {start}" if ckpt else ""))
    try:
        metrics = trainer.train()
    finally:
        trainer.logger.close()
        trainer.env.close()  # hardware: torque policy on disconnect; teleop: release the device
        if trainer.eval_env is not trainer.env:
            trainer.eval_env.close()
    print(f"done at step {trainer.step}: " + ", ".join(f"{k}={v:.3g}" for k, v in metrics.items()))
    return 0
