"""Network building blocks shared by the agents (DrQ-v2 here; SAC and MBPO may reuse them).

- :func:`mlp`: Linear/ReLU stacks with optional LayerNorm after each hidden Linear (the
  "LayerNorm in the critic" of RLPD, Ball et al. 2023, which keeps Q-values bounded when learning
  from few, off-distribution demonstrations).
- :class:`Trunk`: DrQ-v2's Linear -> LayerNorm -> Tanh bottleneck from the encoder output to a small
  feature vector; proprioceptive state is concatenated after it.
- :class:`EnsembleLinear` / :class:`EnsembleCritic`: N Q-functions evaluated as one batched matmul,
  so a REDQ-sized ensemble (N=10) costs one kernel per layer instead of N.
- :class:`DeterministicActor`: tanh mean with an externally scheduled standard deviation.
- :func:`sample_clipped` / :func:`add_clipped_noise`: DrQ-v2's clipped-noise sampling with a
  straight-through clamp (drawing the noise, or given it).
"""

from __future__ import annotations

import torch
import torch.nn as nn


def weight_init(module: nn.Module) -> None:
    """Orthogonal weights and zero biases, as DrQ-v2 initializes every Linear and Conv."""
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight.data)
        if module.bias is not None:
            module.bias.data.fill_(0.0)
    elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.orthogonal_(module.weight.data, nn.init.calculate_gain("relu"))
        if module.bias is not None:
            module.bias.data.fill_(0.0)
    elif isinstance(module, EnsembleLinear):
        module.reset_parameters()


def mlp(in_dim: int, hidden_dim: int, out_dim: int, depth: int = 2, layer_norm: bool = False) -> nn.Sequential:
    """``depth`` hidden Linear layers of ``hidden_dim`` with ReLU, then a Linear to ``out_dim``."""
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(depth):
        layers.append(nn.Linear(dim, hidden_dim))
        if layer_norm:
            layers.append(nn.LayerNorm(hidden_dim))
        layers.append(nn.ReLU(inplace=True))
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*layers)


class Trunk(nn.Module):
    """Encoder output -> ``feature_dim`` (Linear, LayerNorm, Tanh), then proprio state appended.

    ``repr_dim`` 0 means there is no image: the features are the state alone.
    """

    def __init__(self, repr_dim: int, feature_dim: int, state_dim: int = 0):
        super().__init__()
        self.repr_dim = repr_dim
        self.state_dim = state_dim
        self.net = (nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
                    if repr_dim > 0 else None)
        self.out_dim = (feature_dim if repr_dim > 0 else 0) + state_dim

    def forward(self, h: torch.Tensor | None, state: torch.Tensor | None = None) -> torch.Tensor:
        parts = []
        if self.net is not None:
            parts.append(self.net(h))
        if self.state_dim > 0:
            parts.append(state.to(parts[0].dtype) if parts else state)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


class EnsembleLinear(nn.Module):
    """``n`` independent Linear layers applied to input (n, B, in) or broadcast from (B, in)."""

    def __init__(self, n: int, in_dim: int, out_dim: int):
        super().__init__()
        self.n, self.in_dim, self.out_dim = n, in_dim, out_dim
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(n, 1, out_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for i in range(self.n):
            # orthogonal_ on the (out, in) view matches nn.Linear's orthogonal init per member
            w = torch.empty(self.out_dim, self.in_dim)
            nn.init.orthogonal_(w)
            self.weight.data[i] = w.t()
        self.bias.data.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.n, -1, -1)
        return torch.baddbmm(self.bias.to(x.dtype), x, self.weight.to(x.dtype))


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the last axis of (n, B, dim) with a separate gain and bias per member."""

    def __init__(self, n: int, dim: int, eps: float = 1e-5):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(n, 1, dim))
        self.bias = nn.Parameter(torch.zeros(n, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.layer_norm(x, (self.dim,), eps=self.eps)
        return y * self.weight.to(y.dtype) + self.bias.to(y.dtype)


class EnsembleCritic(nn.Module):
    """``num_critics`` Q-functions over (trunk features, action); returns Q of shape (N, B, 1).

    As in DrQ-v2 the critic has one trunk shared by its Q heads; the heads are the ensemble.
    """

    def __init__(self, repr_dim: int, state_dim: int, action_dim: int, feature_dim: int,
                 hidden_dim: int, num_critics: int = 2, layer_norm: bool = False):
        super().__init__()
        self.num_critics = num_critics
        self.trunk = Trunk(repr_dim, feature_dim, state_dim)
        in_dim = self.trunk.out_dim + action_dim
        layers: list[nn.Module] = []
        for dim_in in (in_dim, hidden_dim):
            layers.append(EnsembleLinear(num_critics, dim_in, hidden_dim))
            if layer_norm:
                layers.append(EnsembleLayerNorm(num_critics, hidden_dim))
            layers.append(nn.ReLU(inplace=True))
        layers.append(EnsembleLinear(num_critics, hidden_dim, 1))
        self.heads = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor | None, state: torch.Tensor | None, action: torch.Tensor) -> torch.Tensor:
        feat = self.trunk(h, state)
        return self.heads(torch.cat([feat, action.to(feat.dtype)], dim=-1))


class DeterministicActor(nn.Module):
    """Trunk -> MLP -> tanh mean; the exploration std comes from a schedule, not the network."""

    def __init__(self, repr_dim: int, state_dim: int, action_dim: int, feature_dim: int, hidden_dim: int):
        super().__init__()
        self.trunk = Trunk(repr_dim, feature_dim, state_dim)
        self.policy = mlp(self.trunk.out_dim, hidden_dim, action_dim, depth=2)

    def forward(self, h: torch.Tensor | None, state: torch.Tensor | None) -> torch.Tensor:
        return torch.tanh(self.policy(self.trunk(h, state)))


def sample_clipped(mean: torch.Tensor, std: float, clip: float | None,
                   generator: torch.Generator | None = None, eps: float = 1e-6) -> torch.Tensor:
    """mean + clamp(std * N(0, 1), -clip, clip), kept inside (-1, 1): :func:`add_clipped_noise`
    with the standard normal drawn here."""
    noise = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)
    return add_clipped_noise(mean, noise, std, clip, eps)


def add_clipped_noise(mean: torch.Tensor, noise: torch.Tensor, std: float | torch.Tensor, clip: float | None,
                      eps: float = 1e-6) -> torch.Tensor:
    """mean + clamp(std * noise, -clip, clip), kept inside (-1, 1), for a standard normal ``noise``
    drawn by the caller (a CUDA-graphed step takes its random draws as inputs).

    The final clamp passes gradients straight through (as DrQ-v2's TruncatedNormal does), so the
    actor is not cut off from the critic's gradient when its mean saturates.
    """
    noise = noise * std
    if clip is not None:
        noise = noise.clamp(-clip, clip)
    x = mean + noise
    clamped = x.clamp(-1.0 + eps, 1.0 - eps)
    return x - x.detach() + clamped.detach()


def soft_update(net: nn.Module, target: nn.Module, tau: float) -> None:
    """target <- tau * net + (1 - tau) * target, in place (Polyak averaging)."""
    with torch.no_grad():
        src = list(net.parameters())
        dst = list(target.parameters())
        torch._foreach_lerp_(dst, src, tau)   # one pass over each tensor instead of a mul and an add
