"""``se-robot pretrain-encoder``: train a keypoint encoder on the sim twin's camera for RL from pixels."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain-encoder", help="pretrain a pixel encoder on the sim twin (for encoder: checkpoint)",
        description="Render the twin's camera with the arm and objects placed at random, train a keypoint "
                    "encoder to predict the gripper, target and cube positions, and write it in se_robot's "
                    "encoder checkpoint format. Train with it frozen: --set agent.encoder=checkpoint "
                    "--set agent.encoder_checkpoint=FILE --set agent.freeze_encoder=true. "
                    "See se_robot/pretrain.py for why.")
    p.add_argument("--task", choices=("reach", "push", "lift"), default="reach", help="scene to render (default reach)")
    p.add_argument("--frames", type=int, default=20_000, help="rendered frames (default 20000)")
    p.add_argument("--image-size", type=int, default=64, help="square image side; must match training (default 64)")
    p.add_argument("--camera", choices=("scene", "wrist"), default="scene")
    p.add_argument("--steps", type=int, default=3000, help="gradient steps (default 3000)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--keypoints", type=int, default=32, help="keypoints (features = 2 x this)")
    p.add_argument("--init", default=None, help="encoder file to start from (e.g. another task's, same image "
                                                "size and keypoints): fewer --steps reach the same error")
    p.add_argument("--randomize", default="", metavar="PRESET|FILE",
                   help="domain randomization of the rendered frames: a preset (mild, hard) or a YAML file "
                        "(docs/randomization.md); a new draw per frame")
    p.add_argument("--twin-camera", default="", metavar="FILE",
                   help="render through the camera fitted by se-robot align-camera")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", required=True, help="encoder checkpoint file to write (.pt)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from se_robot.pretrain import collect_frames, pretrain_encoder, save_pretrained

    if args.frames < 2 * args.batch_size:
        raise SystemExit(f"se-robot pretrain-encoder: --frames {args.frames} is too few for --batch-size "
                         f"{args.batch_size} (need at least {2 * args.batch_size})")
    if args.steps < 1 or args.keypoints < 1:
        raise SystemExit("se-robot pretrain-encoder: --steps and --keypoints must be positive")
    if args.threads:
        torch.set_num_threads(args.threads)
    log = lambda msg: print(f"[pretrain-encoder] {msg}", flush=True)  # noqa: E731
    images, labels = collect_frames(args.task, args.frames, args.image_size, args.camera, args.seed,
                                    randomize=args.randomize, twin_camera=args.twin_camera, log=log)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    encoder, _, report = pretrain_encoder(images, labels, steps=args.steps, batch_size=args.batch_size,
                                          keypoints=args.keypoints, seed=args.seed, device=device, init=args.init,
                                          log=log)
    path = save_pretrained(encoder, args.out, args.image_size, args.keypoints)
    print("\n".join(report.lines()))
    print(f"wrote {path} ({encoder.repr_dim} features per frame)")
    return 0
