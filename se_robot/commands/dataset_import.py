"""``se-robot dataset import SOURCE --format lerobot --out DIR``: a LeRobotDataset as se_robot demonstrations.

SOURCE is a LeRobotDataset's local root directory, or a Hugging Face Hub repo id (LeRobot downloads
it to its cache). The result is an ordinary episode dataset for ``se-robot train --demos DIR``;
the mapping of features is in ``se_robot.data.lerobot_io``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

GROUP = "dataset"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("import", help="import a LeRobotDataset as an episode dataset (demonstrations)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="LeRobotDataset root directory, or a Hub repo id such as lerobot/svla_so101_pickplace")
    p.add_argument("--format", choices=("lerobot",), default="lerobot", help="source format (lerobot)")
    p.add_argument("--out", required=True, help="episode dataset directory to write (must not exist)")
    p.add_argument("--repo-id", default=None, help="repo id of a local root (default local/<root name>)")
    p.add_argument("--camera", default=None,
                   help="LeRobot camera (observation.images.<camera>) that becomes pixels (default: the first); "
                        "the others become pixels_<camera>")
    p.add_argument("--task", default=None, help="task name of the episode dataset (default: LeRobot's first task)")
    p.add_argument("--arm", default="so101", help="se_robot arm the recording is of (default so101)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from se_robot.data.lerobot_io import LeRobotMissing, run_with_lerobot

    if Path(args.out).exists():
        print(f"se-robot dataset import: {args.out} exists already; choose another --out", file=sys.stderr)
        return 1
    local = Path(args.source).is_dir()
    argv = ["import", "--repo-id", args.repo_id or (f"local/{Path(args.source).name}" if local else args.source),
            "--out", str(args.out), "--arm", args.arm]
    argv += ["--root", str(args.source)] if local else []
    argv += ["--camera", args.camera] if args.camera else []
    argv += ["--task", args.task] if args.task else []
    try:
        return run_with_lerobot(argv)
    except LeRobotMissing as e:
        print(f"se-robot dataset import: {e}", file=sys.stderr)
        return 1
