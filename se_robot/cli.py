"""The ``se-robot`` command.

Each subcommand lives in its own module under ``se_robot/commands/`` and is found at start-up, so
features add commands without editing this file. A module defines ``register(subparsers)`` that
adds its parser and sets ``func``; a module with ``GROUP = "dataset"`` registers under
``se-robot dataset ...`` (groups: dataset, reward, sim). Research benchmarks are not commands: they
live in the top-level ``benchmarks/`` of a source checkout (``python -m benchmarks --help``).

Modules are imported lazily enough that ``se-robot --help`` stays quick: heavy imports (torch,
mujoco, rclpy) belong inside the ``func`` a command runs, not at module top level.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from se_robot import __version__

GROUP_HELP = {
    "checkpoint": "checkpoints of training runs",
    "dataset": "inspect, check and export recorded episodes",
    "reward": "learned reward classifiers",
    "sim": "look at the MuJoCo twin",
}


def build_parser() -> argparse.ArgumentParser:
    import se_robot.commands as commands

    parser = argparse.ArgumentParser(prog="se-robot", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"se_robot {__version__}")
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"se_robot.commands.{info.name}")
        group = getattr(module, "GROUP", None)
        if group is None:
            module.register(top)
            continue
        if group not in groups:
            gp = top.add_parser(group, help=GROUP_HELP.get(group, group))
            groups[group] = gp.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
            gp.set_defaults(func=lambda args, gp=gp: gp.print_help() or 2)
        module.register(groups[group])
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    from se_robot.config import ConfigError
    from se_robot.data.episodes import DatasetError
    from se_robot.envs.operator import SceneResetError, SceneSetupError
    from se_robot.hardware.calibration import CalibrationError

    try:
        result = args.func(args)
    except ConfigError as e:
        print(f"se-robot: configuration error: {e}", file=sys.stderr)
        return 2
    except DatasetError as e:  # a bad episode file (train --demos, record into a dataset): names file and key
        print(f"se-robot: dataset error: {e}", file=sys.stderr)
        return 1
    except CalibrationError as e:  # no calibration for an arm id, or one made on another arm: says what to run
        print(f"se-robot: {e}", file=sys.stderr)
        return 2
    except SceneSetupError as e:   # nobody can be asked to restore the scene: says how to give it an operator
        print(f"se-robot: {e}", file=sys.stderr)
        return 2
    except SceneResetError as e:   # record/evaluate (train pauses instead): what is recorded so far is kept
        print(f"se-robot: stopped: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("se-robot: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
