"""Subcommands of ``se-robot``; one module each, discovered by se_robot.cli."""
