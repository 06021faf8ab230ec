"""Recipes cut down for tests: the shipped recipe's settings at sizes that train in seconds."""

from __future__ import annotations

from pathlib import Path

import yaml

from se_robot.train_config import read_recipe


def tiny_lift_recipe(tmp_path: Path, learning_starts: int, batch: int, hidden: int) -> Path:
    """``lift_sac_demos`` with a small batch and net, so a few dozen steps update the agent from
    replay and demos; written to ``tmp_path`` for ``--recipe``/``--config``."""
    data = read_recipe("lift_sac_demos")
    data.update(learning_starts=learning_starts)
    data["agent"] = {**data["agent"], "batch_size": batch, "min_replay": batch, "hidden_dim": hidden}
    path = tmp_path / "tiny_lift.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
