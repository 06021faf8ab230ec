"""``se-robot dataset export DIR --format mcap|lerobot --out PATH``: a rosbag2 MCAP for ros2 bag and
Foxglove, or a LeRobotDataset for LeRobot's training scripts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

GROUP = "dataset"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export a dataset as a rosbag2 MCAP bag or a LeRobotDataset",
                              description="Export episodes as a rosbag2 bag in MCAP storage (sensor_msgs/Image, "
                                          "sensor_msgs/JointState, std_msgs/Float64MultiArray actions; --out x.mcap "
                                          "writes the bag directory x/ (for ros2 bag) holding x/x.mcap (for Foxglove)), "
                                          "or as a LeRobotDataset v3.0 written by the lerobot package itself "
                                          "(--format lerobot; --out is the dataset root; see se_robot.data.lerobot_io).")
    p.add_argument("directory", help="dataset directory")
    p.add_argument("--format", choices=("mcap", "lerobot"), default="mcap", help="output format (default mcap)")
    p.add_argument("--out", required=True, help="bag path, e.g. demos.mcap, or LeRobotDataset root (must not exist)")
    p.add_argument("--episode", type=int, action="append", default=None,
                   help="mcap: export only this episode index (repeatable; default all)")
    p.add_argument("--repo-id", default=None,
                   help="lerobot: the dataset's repo id, e.g. me/so101_push (default local/<out name>)")
    p.add_argument("--video", action="store_true",
                   help="lerobot: store camera frames as AV1 videos (LeRobot's default for recordings) instead of PNG "
                        "images; reading them back needs a video decoder (torchcodec with FFmpeg, or PyAV)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from se_robot.data.episodes import DatasetError
    from se_robot.data.export import bag_paths, export_mcap

    if args.format == "lerobot":
        from se_robot.data.lerobot_io import LeRobotMissing, run_with_lerobot

        if args.episode:
            print("se-robot dataset export: --episode applies to --format mcap only", file=sys.stderr)
            return 2
        if Path(args.out).exists():
            print(f"se-robot dataset export: {args.out} exists already; choose another --out", file=sys.stderr)
            return 1
        argv = ["export", str(args.directory), "--root", str(args.out),
                "--repo-id", args.repo_id or f"local/{Path(args.out).name}"] + (["--video"] if args.video else [])
        try:
            return run_with_lerobot(argv)
        except LeRobotMissing as e:
            print(f"se-robot dataset export: {e}", file=sys.stderr)
            return 1
    bag_dir, _ = bag_paths(args.out)
    if bag_dir.exists():
        print(f"se-robot dataset export: {bag_dir} exists already; choose another --out", file=sys.stderr)
        return 1
    try:
        mcap_file, count = export_mcap(args.directory, args.out, episodes=args.episode)
    except DatasetError as e:
        print(f"se-robot dataset export: {e}", file=sys.stderr)
        return 1
    print(f"wrote {count} messages: bag {bag_dir} (ros2 bag info {bag_dir}), file {mcap_file} (Foxglove)")
    return 0
