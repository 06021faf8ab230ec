"""``se-robot dataset info DIR``: episodes, lengths, success rate, control rate and size."""

from __future__ import annotations

import argparse
import sys

GROUP = "dataset"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help="summarise an episode dataset",
                              description="Summarise an episode dataset: episodes, lengths, success rate, "
                                          "control rate, size and the arrays each step holds.")
    p.add_argument("directory", help="dataset directory (holds dataset.json and episode_*.npz)")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from se_robot.data.dataset import DatasetInfo
    from se_robot.data.episodes import DatasetError

    try:
        info = DatasetInfo.from_dir(args.directory)
    except DatasetError as e:
        print(f"se-robot dataset info: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"directory": str(info.directory), **info.meta.to_json(),
                          "episodes": info.num_episodes, "steps": info.num_steps, "lengths": info.lengths,
                          "success_rate": info.success_rate, "intervention_steps": info.interventions,
                          "size_bytes": info.size_bytes,
                          "keys": {k: {"shape": list(s), "dtype": d} for k, (s, d) in info.keys.items()}}))
    else:
        print(info.summary())
    return 0
