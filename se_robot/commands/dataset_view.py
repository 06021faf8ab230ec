"""``se-robot dataset view DIR --episode N``: an mp4 of the episode and a PNG contact sheet.

Works over SSH with no display: the video is written with imageio-ffmpeg and the sheet with
matplotlib's Agg backend, so an operator can scp two files home and look at what was recorded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

GROUP = "dataset"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("view", help="render an episode to mp4 and a PNG contact sheet",
                              description="Write episode N as an mp4 (every camera side by side) and a PNG "
                                          "contact sheet of frames above a plot of the actions and reward.")
    p.add_argument("directory", help="dataset directory")
    p.add_argument("--episode", type=int, default=0, help="episode index (default 0)")
    p.add_argument("--out", default=None, help="output prefix (default DIR/view/episode_NNNNNN)")
    p.add_argument("--frames", type=int, default=8, help="frames on the contact sheet (default 8)")
    p.add_argument("--fps", type=float, default=None, help="video frame rate (default: control rate)")
    p.add_argument("--scale", type=int, default=4, help="pixel upscale factor for the video (default 4)")
    p.add_argument("--no-video", action="store_true", help="write only the contact sheet")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from se_robot.data.episodes import DatasetError, episode_filename, load_episode, read_dataset_meta
    from se_robot.data.viewing import contact_sheet, write_video

    directory = Path(args.directory)
    try:
        meta = read_dataset_meta(directory)
        ep = load_episode(directory / episode_filename(args.episode))
    except DatasetError as e:
        print(f"se-robot dataset view: {e}", file=sys.stderr)
        return 1
    prefix = Path(args.out) if args.out else directory / "view" / episode_filename(args.episode).removesuffix(".npz")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    sheet = prefix.with_suffix(".png")
    contact_sheet(ep, sheet, n_frames=args.frames, control_hz=meta.control_hz)
    print(f"wrote {sheet}")
    if not args.no_video:
        if not ep.pixel_keys:
            print("episode has no camera frames; no video written")
        else:
            video = prefix.with_suffix(".mp4")
            write_video(ep, video, fps=args.fps or meta.control_hz, scale=args.scale)
            print(f"wrote {video}")
    return 0
