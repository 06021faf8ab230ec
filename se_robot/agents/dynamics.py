"""A probabilistic ensemble of MLPs that predicts the change of state and the reward (MBPO's model).

Every member outputs a diagonal Gaussian over ``[next_state - state, reward]``. The members are
trained and evaluated as ONE batched computation (weights of shape ``(E, in, out)`` and
``torch.baddbmm``), because on a CPU a Python loop over seven small networks spends most of its
time in the interpreter. Each member sees its own bootstrap resample of the training split;
training stops early once no member has improved its held-out error by 1% for a few epochs, every
member keeps its best weights, and the best ``num_elites`` members by held-out error are the
elites used for rollouts (Janner et al. 2019; Chua et al. 2018 for the soft log-variance bounds).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from se_robot.config import option


@dataclasses.dataclass
class DynamicsConfig:
    """The model ensemble; defaults are MBPO's (7 members, 5 elites, 4x200 SiLU layers)."""

    ensemble_size: int = option(7, range=(1, 64), help="members trained together")
    num_elites: int = option(5, range=(1, 64), help="members used for rollouts, best by held-out loss")
    hidden_dim: int = option(200, range=(8, 4096), help="width of every hidden layer")
    num_layers: int = option(4, range=(1, 16), help="hidden layers per member")
    lr: float = option(1e-3, range=(1e-6, 1.0), help="Adam learning rate")
    weight_decays: tuple[float, ...] = option(
        (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4), range=(0.0, 1.0),
        help="L2 penalty per layer, input layer first; the last value repeats for deeper layers")
    batch_size: int = option(256, range=(1, 1 << 20), help="minibatch per member")
    holdout_ratio: float = option(0.2, range=(0.0, 0.9), help="fraction of data held out for early stopping and elites")
    max_holdout: int = option(5000, range=(1, 1 << 24), help="cap on held-out transitions (keeps evaluation cheap)")
    patience_epochs: int = option(5, range=(1, 1000), help="epochs without a 1% improvement before stopping")
    improvement: float = option(0.01, range=(0.0, 1.0), help="relative held-out improvement that counts")
    max_epochs: int = option(200, range=(1, 100000), help="hard cap on epochs per fit (MBPO: unbounded)")
    min_grad_steps: int = option(200, range=(0, 10_000_000),
                                 help="no early stop before this many gradient steps (small data: epochs are a few steps)")
    max_grad_steps: int = option(5000, range=(1, 10_000_000), help="hard cap on gradient steps per fit (CPU budget)")
    logvar_bound_coef: float = option(0.01, range=(0.0, 10.0), help="weight on (max_logvar - min_logvar) to keep the bounds tight")

    def __post_init__(self) -> None:
        if self.num_elites > self.ensemble_size:
            raise ValueError(f"num_elites ({self.num_elites}) must be <= ensemble_size ({self.ensemble_size})")
        if not self.weight_decays:
            raise ValueError("weight_decays must hold at least one value")


class EnsembleLinear(nn.Module):
    """``E`` independent linear layers applied in one ``baddbmm``: x (E, B, in) -> (E, B, out)."""

    def __init__(self, ensemble_size: int, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(ensemble_size, 1, out_dim))
        # Truncated normal with std 1/(2 sqrt(in)), as in the PETS/MBPO ensembles.
        nn.init.trunc_normal_(self.weight, std=1.0 / (2.0 * math.sqrt(in_dim)), a=-2.0 / math.sqrt(in_dim),
                              b=2.0 / math.sqrt(in_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleLayerNorm(nn.Module):
    """Layer norm with a separate gain and bias per member: x (E, B, dim)."""

    def __init__(self, ensemble_size: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ensemble_size, 1, dim))
        self.bias = nn.Parameter(torch.zeros(ensemble_size, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias, F.layer_norm(x, x.shape[-1:]), self.weight)


class EnsembleMLP(nn.Module):
    """``E`` MLPs evaluated together; also used for SAC's twin critics (E=2).

    ``layer_norm`` puts a layer norm after every hidden linear layer: it keeps critics from
    diverging at high update-to-data ratios (Ball et al. 2023, RLPD), where MBPO trains SAC.
    """

    def __init__(self, ensemble_size: int, in_dim: int, out_dim: int, hidden_dim: int, num_layers: int,
                 activation: str = "silu", layer_norm: bool = False):
        super().__init__()
        if activation not in ("silu", "relu"):
            raise ValueError(f"activation must be silu or relu, got {activation!r}")
        self.act = F.silu if activation == "silu" else F.relu
        dims = [in_dim] + [hidden_dim] * num_layers + [out_dim]
        self.layers = nn.ModuleList(EnsembleLinear(ensemble_size, a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.norms = nn.ModuleList(EnsembleLayerNorm(ensemble_size, hidden_dim) for _ in range(num_layers)
                                   ) if layer_norm else None
        self.ensemble_size = ensemble_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (E, B, in), or (B, in) shared by all members."""
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.ensemble_size, -1, -1)
        for i, layer in enumerate(self.layers[:-1]):
            x = layer(x)
            x = self.act(x if self.norms is None else self.norms[i](x))
        return self.layers[-1](x)


class ProbabilisticEnsemble(nn.Module):
    """Gaussian ensemble over ``[delta_state, reward]`` with input and output normalisation.

    The network works in normalised units; ``predict`` takes and returns raw units so callers
    never see the scaling. Normalisers are buffers, so they travel in ``state_dict``.
    """

    def __init__(self, state_dim: int, action_dim: int, cfg: DynamicsConfig):
        super().__init__()
        self.cfg = cfg
        self.state_dim, self.action_dim = state_dim, action_dim
        self.in_dim, self.out_dim = state_dim + action_dim, state_dim + 1
        self.net = EnsembleMLP(cfg.ensemble_size, self.in_dim, 2 * self.out_dim, cfg.hidden_dim, cfg.num_layers)
        self.max_logvar = nn.Parameter(torch.full((1, 1, self.out_dim), 0.5))
        self.min_logvar = nn.Parameter(torch.full((1, 1, self.out_dim), -10.0))
        self.register_buffer("in_mean", torch.zeros(self.in_dim))
        self.register_buffer("in_std", torch.ones(self.in_dim))
        self.register_buffer("out_mean", torch.zeros(self.out_dim))
        self.register_buffer("out_std", torch.ones(self.out_dim))
        # 0 for outputs constant in the data (e.g. a goal position in the state): predicted exactly.
        self.register_buffer("out_active", torch.ones(self.out_dim))
        self.register_buffer("elites", torch.arange(cfg.num_elites))
        self.register_buffer("holdout_mse", torch.full((cfg.ensemble_size,), float("nan")))

    def _forward_normalized(self, x_norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(x_norm)
        mean, logvar = out[..., : self.out_dim], out[..., self.out_dim:]
        # Soft, learned bounds: smooth clamps that keep gradients flowing at the edges.
        logvar = self.max_logvar - F.softplus(self.max_logvar - logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar

    @torch.no_grad()
    def predict(self, state: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw-unit mean and variance of ``[delta_state, reward]`` for every member: (E, B, out)."""
        x = (torch.cat([state, action], dim=-1) - self.in_mean) / self.in_std
        mean, logvar = self._forward_normalized(x)
        scale = self.out_std * self.out_active
        return mean * scale + self.out_mean, logvar.exp() * scale.square()

    def _weight_decay(self) -> torch.Tensor:
        decays = self.cfg.weight_decays
        total = torch.zeros((), device=self.max_logvar.device)
        for i, layer in enumerate(self.net.layers):
            total = total + decays[min(i, len(decays) - 1)] * 0.5 * layer.weight.square().sum()
        return total


class EnsembleTrainer:
    """Fits a ``ProbabilisticEnsemble`` on all real transitions with early stopping on a held-out split.

    Owns the optimizer so that resuming restores Adam's moments too.
    """

    def __init__(self, model: ProbabilisticEnsemble, device: torch.device):
        self.model = model
        self.device = device
        self.optimizer = torch.optim.Adam(model.parameters(), lr=model.cfg.lr)

    def _set_normalizers(self, inputs: np.ndarray, targets: np.ndarray) -> None:
        m = self.model
        for mean_buf, std_buf, data in ((m.in_mean, m.in_std, inputs), (m.out_mean, m.out_std, targets)):
            mean_buf.copy_(torch.as_tensor(data.mean(0), dtype=torch.float32))
            std = data.std(0)
            std_buf.copy_(torch.as_tensor(np.where(std < 1e-6, 1.0, std), dtype=torch.float32))
        m.out_active.copy_(torch.as_tensor(targets.std(0) >= 1e-6, dtype=torch.float32))

    @torch.no_grad()
    def holdout_mse(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-member mean squared error in normalised units on (N, in), (N, out)."""
        mean, _ = self.model._forward_normalized(x)
        return (mean - y).square().mean(dim=(1, 2))

    def fit(self, states: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_states: np.ndarray,
            rng: np.random.Generator) -> dict[str, float]:
        """Train on raw transitions; returns namespaced metrics (``model/...``)."""
        m, cfg = self.model, self.model.cfg
        inputs = np.concatenate([states, actions], axis=-1).astype(np.float32)
        targets = np.concatenate([next_states - states, rewards.reshape(-1, 1)], axis=-1).astype(np.float32)
        if len(inputs) < 2:
            raise ValueError(f"the dynamics model needs at least 2 transitions to fit, got {len(inputs)}")
        self._set_normalizers(inputs, targets)
        x_all = (torch.as_tensor(inputs, device=self.device) - m.in_mean) / m.in_std
        y_all = (torch.as_tensor(targets, device=self.device) - m.out_mean) / m.out_std

        perm = torch.as_tensor(rng.permutation(len(inputs)), device=self.device)
        n_hold = min(cfg.max_holdout, int(len(inputs) * cfg.holdout_ratio))
        hold_idx, train_idx = perm[:n_hold], perm[n_hold:]
        x_hold, y_hold = x_all[hold_idx], y_all[hold_idx]
        if n_hold == 0:  # nothing held out: judge on the training data itself
            x_hold, y_hold = x_all, y_all
        n_train = len(train_idx)
        E = cfg.ensemble_size
        # One bootstrap resample of the training split per member.
        boot = torch.as_tensor(rng.integers(0, n_train, size=(E, n_train)), device=self.device)
        boot = train_idx[boot]

        best = self.holdout_mse(x_hold, y_hold)
        best_state = [p.detach().clone() for p in m.net.parameters()]
        since_improved, epochs, grad_steps, last_loss = 0, 0, 0, float("nan")
        while epochs < cfg.max_epochs and grad_steps < cfg.max_grad_steps:
            order = torch.as_tensor(rng.permuted(np.tile(np.arange(n_train), (E, 1)), axis=1), device=self.device)
            for start in range(0, n_train, cfg.batch_size):
                idx = torch.gather(boot, 1, order[:, start:start + cfg.batch_size])
                x, y = x_all[idx], y_all[idx]  # (E, b, in), (E, b, out)
                mean, logvar = m._forward_normalized(x)
                nll = ((mean - y).square() * torch.exp(-logvar) + logvar).mean(dim=(1, 2)).sum()
                loss = nll + cfg.logvar_bound_coef * (m.max_logvar.sum() - m.min_logvar.sum()) + m._weight_decay()
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                grad_steps += 1
                last_loss = nll.item() / E
                if grad_steps >= cfg.max_grad_steps:
                    break
            epochs += 1
            mse = self.holdout_mse(x_hold, y_hold)
            improved = (best - mse) / best.clamp_min(1e-12) > cfg.improvement
            if bool(improved.any()):
                since_improved = 0
                with torch.no_grad():
                    for p, saved in zip(m.net.parameters(), best_state):
                        saved[improved] = p[improved]
                best = torch.where(improved, mse, best)
            else:
                since_improved += 1
                if since_improved >= cfg.patience_epochs and grad_steps >= cfg.min_grad_steps:
                    break
        with torch.no_grad():  # every member keeps its best weights
            for p, saved in zip(m.net.parameters(), best_state):
                p.copy_(saved)
        final = self.holdout_mse(x_hold, y_hold)
        m.holdout_mse.copy_(final)
        m.elites.copy_(torch.argsort(final)[: cfg.num_elites])
        metrics = {f"model/holdout_loss/member_{i}": float(v) for i, v in enumerate(final)}
        metrics.update({
            "model/holdout_loss/elites": float(final[m.elites].mean()),
            "model/train_nll": last_loss,
            "model/train_epochs": float(epochs),
            "model/grad_steps": float(grad_steps),
            "model/train_transitions": float(len(inputs)),
        })
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
