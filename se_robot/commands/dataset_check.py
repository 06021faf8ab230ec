"""``se-robot dataset check DIR``: validate every file; name the first bad one and exit 1."""

from __future__ import annotations

import argparse
import sys

GROUP = "dataset"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("check", help="validate every episode file of a dataset",
                              description="Validate dataset.json and every episode (keys, dtypes, shapes, "
                                          "lengths, readable zip, consistent shapes). Exit code 1 names the "
                                          "first bad file.")
    p.add_argument("directory", help="dataset directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from se_robot.data.dataset import check_dataset
    from se_robot.data.episodes import DatasetError, stray_temp_files

    try:
        count = check_dataset(args.directory)
    except DatasetError as e:
        print(f"BAD {e}", file=sys.stderr)
        return 1
    for p in stray_temp_files(args.directory):
        print(f"note: {p} is a temporary file left by an interrupted write (safe to delete)")
    print(f"OK {count} episodes in {args.directory}")
    return 0
