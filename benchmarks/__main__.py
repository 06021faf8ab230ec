"""``python -m benchmarks NAME [args]``: run one benchmark by name (``--help`` lists them)."""

from __future__ import annotations

import argparse
import importlib
import sys

from benchmarks import BENCHMARKS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description="se_robot's research benchmarks (figures in docs/benchmarks.md)")
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for module in BENCHMARKS.values():  # heavy imports live inside each run(), so this stays quick
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run the chosen benchmark; its exit code (2 for a configuration error)."""
    from se_robot.config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"benchmarks {args.benchmark}: configuration error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"benchmarks {args.benchmark}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
