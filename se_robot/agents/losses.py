"""The pure loss terms of DrQ-v2, each tested on its own: the critic's ensemble target and the BC term.

Shapes follow the agent: Q values are (N, B, 1) for an N-critic ensemble, rewards and discounts
(B, 1), with ``discount`` already gamma^n from the replay's n-step targets (0 after termination).
"""

from __future__ import annotations

import torch

__all__ = ["critic_target", "bc_loss"]


def critic_target(reward: torch.Tensor, discount: torch.Tensor, next_q: torch.Tensor,
                  subset: torch.Tensor | None = None) -> torch.Tensor:
    """reward + discount * min over the (subset of the) ensemble of next-state Q; shapes (B, 1).

    ``next_q`` is (N, B, 1); ``discount`` already holds gamma^n (0 after termination).
    """
    if subset is not None:
        next_q = next_q.index_select(0, subset)
    return reward + discount * next_q.min(dim=0).values


def bc_loss(mean_action: torch.Tensor, demo_action: torch.Tensor, is_demo: torch.Tensor) -> torch.Tensor:
    """MSE between the actor's mean and the recorded action, over demo rows only (0 if none).

    Computed with a mask rather than by selecting rows, so it neither syncs with the device nor
    branches on the data, and a CUDA graph can hold it.
    """
    mask = is_demo.to(torch.float32).unsqueeze(-1)                       # (B, 1)
    squared = (mean_action.float() - demo_action.float()).pow(2) * mask
    return squared.sum() / (mask.sum() * mean_action.shape[-1]).clamp(min=1.0)
