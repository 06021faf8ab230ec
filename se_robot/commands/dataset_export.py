"""``se-robot dataset export DIR --format mcap --out FILE``: a rosbag2 MCAP for ros2 bag and Foxglove."""

from __future__ import annotations

import argparse
import sys

GROUP = "dataset"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export a dataset as a rosbag2 MCAP bag",
                              description="Export episodes as a rosbag2 bag in MCAP storage (sensor_msgs/Image, "
                                          "sensor_msgs/JointState, std_msgs/Float64MultiArray actions). --out x.mcap "
                                          "writes the bag directory x/ (for ros2 bag) holding x/x.mcap (for Foxglove).")
    p.add_argument("directory", help="dataset directory")
    p.add_argument("--format", choices=("mcap",), default="mcap", help="output format (mcap)")
    p.add_argument("--out", required=True, help="bag path, e.g. demos.mcap (must not exist)")
    p.add_argument("--episode", type=int, action="append", default=None,
                   help="export only this episode index (repeatable; default all)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from se_robot.data.episodes import DatasetError
    from se_robot.data.export import bag_paths, export_mcap

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
