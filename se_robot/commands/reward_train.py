"""``se-robot reward train``: a success classifier on camera frames from recorded episodes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

GROUP = "reward"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train a success classifier on recorded frames",
        description="Train a binary success classifier on camera frames: the last --positive-frames frames "
                    "of successful episodes are positives, all other frames negatives. Whole episodes are "
                    "held out for evaluation; the threshold is chosen on them for --target-fpr. With "
                    "--eval-sim N the classifier is also run live in the sim twin (N episodes each of the "
                    "expert, a noisy expert and random actions) against the twin's true success.")
    p.add_argument("--data", action="append", required=True,
                   help="dataset directory (repeatable: e.g. expert demos and failed/random episodes)")
    p.add_argument("--out", required=True, help="classifier file to write (.pt); metrics go beside it as .json")
    p.add_argument("--positive-frames", type=int, default=1,
                   help="final frames of a success labelled 1 (default 1: when the task terminates on "
                        "success only the last frame shows it)")
    p.add_argument("--holdout", type=float, default=0.25, help="fraction of episodes held out (default 0.25)")
    p.add_argument("--target-fpr", type=float, default=0.01, help="false-positive rate the threshold aims for")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--input-size", type=int, default=64, help="frames are resized to this square size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--eval-sim", type=int, default=0, metavar="N",
                   help="also measure live in the twin: N episodes per policy (expert, noisy, random)")
    p.add_argument("--eval-seed", type=int, default=10_000, help="first seed of the --eval-sim episodes")
    p.set_defaults(func=run)


def _fmt(name: str, m: dict[str, float]) -> str:
    return (f"{name}: accuracy {m['accuracy']:.3f}  FPR {m['fpr']:.4f} ({m['false_positives']}/{m['negatives']})  "
            f"FNR {m['fnr']:.4f} ({m['false_negatives']}/{m['positives']})")


def measure_on_sim(reward_model: Any, task: str, meta: Any, episodes: int, seed: int,
                   log: Any = print) -> dict[str, Any]:
    """Run the classifier inside the twin and compare with the twin's own success, per step and per episode."""
    import numpy as np

    from se_robot.data.recording import NoisyPolicy, RandomPolicy
    from se_robot.data.reward_model import rates
    from se_robot.envs import make_env
    from se_robot.envs.experts import expert_for
    from se_robot.envs.reward_wrapper import LearnedRewardWrapper

    options = {k: meta.extra[k] for k in ("obs_mode", "image_size", "action_mode") if k in meta.extra}
    options["obs_mode"] = "both" if options.get("obs_mode", "both") == "state" else options.get("obs_mode", "both")
    env = make_env(task, frame_stack=1, camera=meta.camera, **options)   # pixels: a (3, H, W) stack of one
    wrapped = LearnedRewardWrapper(env, reward_model, terminate_on_success=False)
    results: dict[str, Any] = {}
    all_scores, all_truth = [], []
    ep_truth, ep_pred = [], []
    try:
        expert = expert_for(env)
        policies = {"expert": expert, "noisy": NoisyPolicy(expert, env.action_space, 0.5, seed=seed),
                    "random": RandomPolicy(env.action_space, seed=seed)}
        for k, (name, policy) in enumerate(policies.items()):
            scores, truth = [], []
            for e in range(episodes):
                obs, info = wrapped.reset(seed=seed + 1000 * k + e)
                policy.reset()
                done, true_any, pred_any = False, False, False
                while not done:
                    obs, _, terminated, truncated, info = wrapped.step(policy(obs))
                    scores.append(info["reward/success_prob"])
                    truth.append(float(info["env_is_success"]))
                    true_any |= info["env_is_success"]
                    pred_any |= info["is_success"]
                    done = terminated or truncated
                ep_truth.append(true_any)
                ep_pred.append(pred_any)
            s, t = np.asarray(scores), np.asarray(truth)
            results[name] = rates(s, t, reward_model.threshold)
            log(_fmt(f"  sim {name:6s} steps", results[name]))
            all_scores.append(s)
            all_truth.append(t)
    finally:
        env.close()
    results["all_steps"] = rates(np.concatenate(all_scores), np.concatenate(all_truth), reward_model.threshold)
    results["episodes"] = rates(np.asarray(ep_pred, float), np.asarray(ep_truth, float), 0.5)
    log(_fmt("  sim all    steps", results["all_steps"]))
    log(_fmt("  sim episodes (success ever called vs ever true)", results["episodes"]))
    return results


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from se_robot.data.episodes import DatasetError, iter_episodes, read_dataset_meta
    from se_robot.data.reward_model import (LabelledFrames, RewardModel, TrainConfig, choose_threshold, label_frames,
                                            predict_proba, rates, split_by_episode, train_classifier)

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        metas = [read_dataset_meta(d) for d in args.data]
        episodes = [ep for d in args.data for ep in iter_episodes(d)]
    except DatasetError as e:
        print(f"se-robot reward train: {e}", file=sys.stderr)
        return 1
    successes = [ep.success for ep in episodes]
    if sum(successes) < 2 or len(successes) - sum(successes) < 1:
        print(f"se-robot reward train: need at least 2 successful and 1 failed episode, have "
              f"{sum(successes)} and {len(successes) - sum(successes)} in {args.data}", file=sys.stderr)
        return 1
    data: LabelledFrames = label_frames(episodes, positive_frames=args.positive_frames)
    train, held = split_by_episode(data, successes, holdout=args.holdout, seed=args.seed)
    print(f"{len(episodes)} episodes ({sum(successes)} successful): {len(train)} training frames "
          f"({train.positives} positive), {len(held)} held-out frames ({held.positives} positive) "
          f"from {len(np.unique(held.episode))} held-out episodes")
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, input_size=args.input_size,
                      seed=args.seed)
    model = train_classifier(train, cfg)
    train_scores = predict_proba(model, train.frames)
    held_scores = predict_proba(model, held.frames)
    threshold = choose_threshold(held_scores, held.labels, args.target_fpr)
    metrics: dict[str, Any] = {
        "train@0.5": rates(train_scores, train.labels, 0.5),
        "heldout@0.5": rates(held_scores, held.labels, 0.5),
        "heldout@threshold": rates(held_scores, held.labels, threshold),
        "threshold": threshold, "target_fpr": args.target_fpr,
    }
    print(_fmt("train    @0.5", metrics["train@0.5"]))
    print(_fmt("held-out @0.5", metrics["heldout@0.5"]))
    print(f"threshold for held-out FPR <= {args.target_fpr}: {threshold:.4f}")
    print(_fmt(f"held-out @{threshold:.4f}", metrics["heldout@threshold"]))
    info = {"task": metas[0].task, "camera": metas[0].camera, "data": [str(d) for d in args.data],
            "positive_frames": args.positive_frames, "frame_shape": list(data.frames.shape[1:]),
            "heldout": metrics["heldout@threshold"]}
    reward_model = RewardModel(model, threshold, info)
    if args.eval_sim > 0:
        print(f"live in the sim twin ({args.eval_sim} episodes per policy) at threshold {threshold:.4f}:")
        metrics["sim"] = measure_on_sim(reward_model, metas[0].task, metas[0], args.eval_sim, args.eval_seed)
    out = reward_model.save(args.out)
    Path(out).with_suffix(".json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"wrote {out} and {Path(out).with_suffix('.json')}")
    return 0
