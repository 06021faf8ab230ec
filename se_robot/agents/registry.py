"""Agents by name, imported only when asked for.

``make_agent("drqv2", ...)`` imports ``se_robot.agents.drqv2`` and calls its module-level
``create(obs_space, action_space, cfg, device, seed)``; keeping the lookup lazy means ``se-robot
--help`` and a state-only SAC run never import the pixel encoders, and an agent still being
written cannot break the others.
"""

from __future__ import annotations

import importlib
from typing import Any

AGENTS: dict[str, str] = {
    "drqv2": "se_robot.agents.drqv2",
    "sac": "se_robot.agents.sac",
    "mbpo": "se_robot.agents.mbpo",
}


def make_agent(algo: str, obs_space: Any, action_space: Any, cfg: Any = None, device: Any = "auto",
               seed: int = 0) -> Any:
    """Build the agent ``algo`` from the env's spaces (its config: a dict or its dataclass)."""
    if algo not in AGENTS:
        raise ValueError(f"unknown algo {algo!r}; known: {', '.join(sorted(AGENTS))}")
    if isinstance(device, str):
        from se_robot.agents.base import pick_device
        device = pick_device(device)
    return importlib.import_module(AGENTS[algo]).create(obs_space, action_space, cfg, device, seed)
