"""``se-robot checkpoint seal CKPT...``: vouch for checkpoints written before they carried checksums."""

from __future__ import annotations

import argparse
import sys

GROUP = "checkpoint"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "seal", help="write the manifest of a checkpoint that has none (written by an older se_robot)",
        description="Checkpoints carry a manifest of sha256 sums; one without it is refused as damaged, "
                    "since a lost manifest and an older se_robot look the same. If you trust the files, "
                    "seal the checkpoint: its agent.pt and trainer.pt are loaded as tensors only (no "
                    "pickled code), every float must be finite and config.yaml must parse; then the "
                    "manifest is written and `train --resume` and `evaluate` take it.")
    p.add_argument("checkpoints", nargs="+", metavar="CKPT", help="checkpoint directories (<run>/checkpoints/step_N)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from se_robot.checkpoint import CheckpointError, seal

    failed = 0
    for path in args.checkpoints:
        try:
            print(f"sealed {seal(path)}")
        except CheckpointError as e:
            print(f"se-robot checkpoint seal: {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0
