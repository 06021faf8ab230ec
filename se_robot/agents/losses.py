"""The pure loss terms of DrQ-v2, each tested on its own: the critic's ensemble target and the BC term.

Shapes follow the agent: Q values are (N, B, 1) for an N-critic ensemble, rewards and discounts
(B, 1), with ``discount`` already gamma^n from the replay's n-step targets (0 after termination).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
    """MSE between the actor's mean and the recorded action, over demo rows only (0 if none)."""
    if not bool(is_demo.any()):
        return mean_action.sum() * 0.0
    return F.mse_loss(mean_action[is_demo].float(), demo_action[is_demo].float())
