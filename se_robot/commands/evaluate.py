"""``se-robot evaluate``: greedy episodes of a trained checkpoint, success rate and return."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from se_robot.commands.record import add_display_option, open_display_of
from se_robot.commands.train import add_backend_options


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="evaluate a training checkpoint on its task",
                              description="Greedy episodes of a checkpoint on the run's task, by default on the "
                              "run's backend; --backend hardware --port ... evaluates a sim-trained run on the arm.")
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="checkpoint dir or run dir (newest checkpoint)")
    p.add_argument("--episodes", type=int, default=10, metavar="N")
    p.add_argument("--video", action="store_true", help="write the first episode as mp4")
    p.add_argument("--out", metavar="DIR", help="where videos and eval.json go (default: the checkpoint dir)")
    p.add_argument("--seed", type=int, help="seed of the evaluation start states (default: the run's)")
    p.add_argument("--env-id", dest="env_id", metavar="ID",
                   help="a run trained on a Gymnasium env (train --env-id): evaluate it on this id instead, e.g. "
                        "a variant with the same observation and action spaces (default: the run's)")
    p.add_argument("--reward-model", dest="reward_model", metavar="FILE",
                   help="success classifier as the reward and success judge (default: the run's reward_model)")
    p.add_argument("--reward-threshold", dest="reward_threshold", type=float, metavar="P",
                   help="the classifier's success probability threshold (default: the run's, else the model's)")
    add_backend_options(p)   # default: the run's own backend and env options
    p.add_argument("--set", dest="set", action="append", default=[], metavar="KEY=VALUE",
                   help="change a key of the run's config for this evaluation, e.g. env.timeout_s=0.5 (a slower "
                        "bus) or env.max_episode_steps=100; repeat for more")
    add_display_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from se_robot import checkpoint
    from se_robot.commands.train import backend_overrides, check_arm_id, check_env_id, fit_backend
    from se_robot.config import ConfigError
    from se_robot.train import Trainer, make_envs, seed_everything
    from se_robot.train_config import load_config

    if args.episodes < 1:
        raise ConfigError("--episodes", str(args.episodes), "must be >= 1")
    try:
        ckpt = checkpoint.resolve(args.checkpoint)
    except FileNotFoundError as e:
        raise ConfigError("--checkpoint", args.checkpoint, str(e)) from None
    overrides = {"eval_episodes": args.episodes, "eval_video": bool(args.video), "progress": False}
    if args.seed is not None:
        overrides["seed"] = args.seed
    overrides.update({k: getattr(args, k) for k in ("reward_model", "reward_threshold", "env_id")
                      if getattr(args, k, None) is not None})
    given = backend_overrides(args)
    overrides.update(given)
    cfg = fit_backend(load_config(overrides=overrides, set_pairs=args.set, saved=ckpt / "config.yaml",
                                  source="command line"), given, args.set)
    if args.env_id is not None and not load_config(saved=ckpt / "config.yaml").env_id:
        raise ConfigError("--env-id", args.env_id, "the run was trained on a task, not a Gymnasium env id: an "
                          "agent evaluates only on the observations it was trained on")
    check_env_id(cfg)
    check_arm_id(cfg)
    saved = checkpoint.load(ckpt)

    from se_robot.agents.registry import make_agent
    from se_robot.envs.display import close_display, with_display

    display = open_display_of(args)
    seed_everything(cfg.seed)
    env, eval_env = make_envs(cfg)
    if env is not eval_env:   # sim builds a training env too; a real arm is one env
        env.close()
    eval_env = with_display(eval_env, display, "eval")
    agent = make_agent(cfg.algo, eval_env.observation_space, eval_env.action_space, dict(cfg.agent),
                       cfg.device, cfg.seed)
    agent.load_state_dict(saved["agent"])
    out = Path(args.out) if args.out else ckpt
    trainer = Trainer(cfg, None, eval_env, agent, None, None, None, out)
    trainer.step = int(saved["trainer"]["step"])
    try:
        metrics = trainer.evaluate()
    finally:
        eval_env.close()   # hardware: the disconnect torque policy
        if display is not None:
            close_display(display)
    out.mkdir(parents=True, exist_ok=True)
    result = {"checkpoint": str(ckpt), "step": trainer.step, "episodes": args.episodes, **metrics}
    (out / "eval.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0
