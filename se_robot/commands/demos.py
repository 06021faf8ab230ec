"""``se-robot demos``: record the scripted expert (or random/noisy policies) in the MuJoCo twin."""

from __future__ import annotations

import argparse

TASKS = ("reach", "push", "lift")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demos", help="record scripted demonstrations in the sim twin",
        description="Record episodes of the scripted expert in the MuJoCo twin into an episode dataset "
                    "(dataset.json + episode_*.npz). Failed expert attempts are dropped and retried unless "
                    "--keep-failures. --policy random/noisy records failures for reward-model negatives.")
    p.add_argument("--task", choices=TASKS, default="push", help="task (default push)")
    p.add_argument("--episodes", type=int, default=20, help="episodes to write (default 20)")
    p.add_argument("--out", required=True, help="dataset directory (created; appends if it exists)")
    p.add_argument("--obs-mode", choices=("state", "pixels", "both"), default="both", help="default both")
    p.add_argument("--image-size", type=int, default=84, help="square image size in pixels (default 84)")
    p.add_argument("--camera", choices=("scene", "wrist"), default="scene", help="camera (default scene)")
    p.add_argument("--action-mode", choices=("ee_delta", "joint_delta"), default="ee_delta")
    p.add_argument("--reward-type", choices=("dense", "sparse"), default="dense",
                   help="reward written with each step: the env's reward_type the demos will train with (default dense)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode; episode i uses seed+i")
    p.add_argument("--policy", choices=("expert", "noisy", "random"), default="expert",
                   help="expert (default), expert plus Gaussian noise, or uniform random actions")
    p.add_argument("--noise", type=float, default=0.5, help="action noise std for --policy noisy")
    p.add_argument("--keep-failures", action="store_true",
                   help="write failed episodes too (implied by --policy random)")
    p.add_argument("--max-steps", type=int, default=None, help="cut episodes at this many steps")
    p.add_argument("--randomize", default="", metavar="PRESET_OR_YAML",
                   help="domain randomization, drawn anew every episode: a preset (mild, hard) or a YAML "
                        "path (docs/randomization.md); default off")
    p.add_argument("--twin-camera", dest="twin_camera", default="", metavar="FILE",
                   help="render through your aligned camera: a camera config written by se-robot align-camera")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from se_robot.data.recording import NoisyPolicy, RandomPolicy, dataset_meta_for, record_scripted
    from se_robot.envs import make_env

    if args.episodes < 1:
        raise SystemExit("se-robot demos: --episodes must be at least 1")
    # frame_stack=0: a dataset holds the env's own H x W x 3 frames, one per step
    env = make_env(args.task, frame_stack=0, obs_mode=args.obs_mode, image_size=args.image_size,
                   camera=args.camera, action_mode=args.action_mode, reward_type=args.reward_type,
                   randomize=args.randomize, twin_camera=args.twin_camera)
    try:
        if args.policy == "random":
            policy = RandomPolicy(env.action_space, seed=args.seed)
        else:
            from se_robot.envs.experts import expert_for

            policy = expert_for(env)
            if args.policy == "noisy":
                policy = NoisyPolicy(policy, env.action_space, args.noise, seed=args.seed)
        meta = dataset_meta_for(env, args.task, camera=args.camera, obs_mode=args.obs_mode,
                                image_size=args.image_size, action_mode=args.action_mode,
                                reward_type=args.reward_type, randomize=args.randomize or None,
                                twin_camera=args.twin_camera or None)
        keep = args.keep_failures or args.policy == "random"
        written = record_scripted(env, policy, args.out, meta, args.episodes, seed=args.seed,
                                  keep_failures=keep, source=f"scripted_{args.policy}", max_steps=args.max_steps)
    finally:
        env.close()
    print(f"wrote {len(written)} episodes to {args.out}")
    return 0 if len(written) == args.episodes else 1
