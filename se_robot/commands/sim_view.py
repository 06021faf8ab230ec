"""``se-robot sim view``: an mp4 and a PNG contact sheet of the twin, so a person can look at it."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

GROUP = "sim"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("view", help="record the scripted expert (or a random policy) to mp4 + PNG")
    p.add_argument("--task", default="push", choices=("reach", "push", "lift"))
    p.add_argument("--policy", default="expert", choices=("expert", "random"))
    p.add_argument("--episodes", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=320, help="frame side (px)")
    p.add_argument("--out", default="out/sim_view", help="output folder")
    p.set_defaults(func=run)


def contact_sheet(frames: list, columns: int = 6, count: int = 12):
    """Evenly spaced frames tiled into one image."""
    import numpy as np

    idx = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    tiles = [frames[i] for i in idx]
    h, w, _ = tiles[0].shape
    rows = -(-len(tiles) // columns)
    sheet = np.full((rows * h, min(columns, len(tiles)) * w, 3), 255, np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = tile
    return sheet


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    import imageio.v2 as imageio
    import numpy as np

    from se_robot.envs import make_env
    from se_robot.envs.experts import expert_for

    env = make_env(args.task, seed=args.seed, render_mode="rgb_array", render_size=args.size)
    expert = expert_for(env)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frames, results = [], []
    for ep in range(args.episodes):
        obs, _ = env.reset(seed=args.seed + ep)
        expert.reset()
        frames.append(env.render())
        while True:
            action = expert(obs) if args.policy == "expert" else env.action_space.sample()
            obs, reward, term, trunc, info = env.step(action)
            frames.append(env.render())
            if term or trunc:
                break
        for _ in range(5):  # hold the last frame so the outcome is visible
            frames.append(frames[-1])
        results.append(bool(info["is_success"]))
    stem = f"{args.task}_{args.policy}"
    video = out / f"{stem}.mp4"
    fps = int(env.unwrapped.cfg.control_hz)
    imageio.mimwrite(video, frames, fps=fps, macro_block_size=1)
    sheet = out / f"{stem}.png"
    imageio.imwrite(sheet, contact_sheet(frames))
    print(f"{args.episodes} episodes, success {sum(results)}/{len(results)}")
    print(f"video: {video}\ncontact sheet: {sheet}")
    env.close()
    return 0 if frames and np.asarray(frames[0]).size else 1
