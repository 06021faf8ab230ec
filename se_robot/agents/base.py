"""What the training loop needs of an agent, and how it picks a device.

The agent is a plain object (DrQ-v2's ``DrQV2Agent`` style): the loop owns the environment, the
replay buffers, logging and checkpoints; the agent owns networks and optimizers. Agents are built
from spaces, never from a config mutated with derived shapes.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class Agent(Protocol):
    def act(self, obs: Any, step: int, eval_mode: bool) -> np.ndarray:
        """An action in the env's action space ([-1, 1]^n) for one observation."""

    def update(self, replay: Any, demos: Any | None, step: int) -> dict[str, float]:
        """One round of learning from the buffers; returns flat namespaced metrics."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly: networks, optimizers, schedules."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def acting_state_dict(self) -> dict[str, Any]:
        """What ``act`` reads (policy weights only: no critics, optimizers or random streams).

        A learner sends this to its actors: small on the wire, and each actor keeps its own
        random streams, so N actors do not draw the same exploration noise.
        """

    def load_acting_state_dict(self, state: dict[str, Any]) -> None: ...


def pick_device(requested: str = "auto") -> torch.device:
    """cuda if present, then Apple's mps, else cpu; an explicit request must be available."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} requested but CUDA is not available here")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError(f"device {requested!r} requested but MPS is not available here")
    return device
