"""Behaviour cloning: a policy fitted by regression to demonstrations, the baseline RL with demos must beat.

An MLP maps the vector observation (state and task, or a frozen pixel encoder's ``features``: the
same ``vector_obs`` SAC learns from) to a tanh-squashed action and is trained by mean squared
error on the demos' (observation, action) pairs. Inputs are standardised with the demos' own mean
and standard deviation, because a state vector mixes joint angles (radians), velocities and
positions (metres) on scales an unnormalised MLP fits badly from a few hundred rows.

If an RL agent that is given the same demos does no better than this, the demos are doing all the
work. ``BCAgent.act`` has the ``Agent`` signature, so the benchmarks score it with the same
evaluation as the RL learners (``benchmarks.common.evaluate_policy``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from se_robot.agents.dynamics import EnsembleMLP
from se_robot.agents.sac import vector_space
from se_robot.config import from_dict, option


@dataclasses.dataclass
class BCConfig:
    """Behaviour-cloning hyper-parameters: sized for tens of demos, fitted in seconds on a CPU."""

    hidden_dim: int = option(256, range=(8, 4096), help="width of the policy's hidden layers")
    num_layers: int = option(2, range=(1, 8), help="hidden layers of the policy")
    lr: float = option(1e-3, range=(1e-6, 1.0), help="Adam learning rate")
    weight_decay: float = option(1e-4, range=(0.0, 1.0), help="AdamW weight decay (a few demos overfit easily)")
    batch_size: int = option(256, range=(1, 1 << 16), help="pairs per gradient step (all of them when fewer)")
    gradient_steps: int = option(3000, range=(1, None), help="gradient steps of one fit")


class DemoPairs:
    """Collects (observation, action) pairs from ``se_robot.data.demos.load_demos``.

    It takes the ``TransitionSink`` calls a replay buffer takes: each action is paired with the
    observation it was taken in (the episode's first, then each previous ``next_obs``).
    """

    def __init__(self) -> None:
        self.obs: list[dict[str, np.ndarray]] = []
        self.actions: list[np.ndarray] = []
        self._last: dict[str, np.ndarray] | None = None

    def add_first(self, obs: dict[str, np.ndarray]) -> None:
        self._last = obs

    def add(self, action: np.ndarray, reward: float, next_obs: dict[str, np.ndarray],
            terminated: bool, truncated: bool) -> None:
        if self._last is None:
            raise RuntimeError("DemoPairs.add before add_first: an episode starts with its first observation")
        self.obs.append(self._last)
        self.actions.append(np.asarray(action, dtype=np.float32))
        self._last = None if terminated or truncated else next_obs

    def __len__(self) -> int:
        return len(self.actions)

    def arrays(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The pairs as a batched observation dict and an (N, action_dim) array."""
        if not self.actions:
            raise ValueError("no demonstration steps were read")
        keys = self.obs[0].keys()
        return {k: np.stack([o[k] for o in self.obs]) for k in keys}, np.stack(self.actions)


class BCAgent:
    """A deterministic policy fitted to demos; build with :meth:`create`, train with :meth:`fit`."""

    def __init__(self, obs_keys: tuple[str, ...], obs_dim: int, action_dim: int, cfg: BCConfig,
                 device: str | torch.device, seed: int):
        self.cfg, self.device = cfg, torch.device(device)
        self.obs_keys, self.obs_dim, self.action_dim = tuple(obs_keys), obs_dim, action_dim
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        with torch.random.fork_rng(devices=[]):  # initial weights from the seed, global stream untouched
            torch.manual_seed(seed)
            self.net = EnsembleMLP(1, obs_dim, action_dim, cfg.hidden_dim, cfg.num_layers, activation="relu")
        self.net.to(self.device)
        self.obs_mean = torch.zeros(obs_dim, device=self.device)
        self.obs_std = torch.ones(obs_dim, device=self.device)
        self.fitted = False

    @classmethod
    def create(cls, obs_space: Any, action_space: Any, cfg: BCConfig | Mapping | None = None,
               device: str | torch.device = "cpu", seed: int = 0) -> "BCAgent":
        """From the env's spaces; pixels alone are refused (give a frozen encoder's features)."""
        cfg = cfg if isinstance(cfg, BCConfig) else from_dict(BCConfig, cfg or {}, "<bc config>")
        keys, obs_dim = vector_space(obs_space)
        low, high = np.asarray(action_space.low), np.asarray(action_space.high)
        if low.ndim != 1 or not (np.allclose(low, -1) and np.allclose(high, 1)):
            raise ValueError(f"behaviour cloning expects a normalised Box action space [-1, 1]^n, "
                             f"got low={low} high={high}")
        return cls(keys, obs_dim, int(low.shape[0]), cfg, device, seed)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net((x - self.obs_mean) / self.obs_std)[0])

    def _vectors(self, obs: Mapping[str, Any]) -> np.ndarray:
        missing = [k for k in self.obs_keys if k not in obs]
        if missing:
            raise KeyError(f"demo observations lack {missing}; the policy observes {list(self.obs_keys)} "
                           f"(record the demos with the obs mode the agent sees)")
        x = np.asarray(np.concatenate([np.asarray(obs[k], np.float32) for k in self.obs_keys], axis=-1))
        if x.ndim != 2 or x.shape[1] != self.obs_dim:
            raise ValueError(f"demo observations give vectors of shape {x.shape}, expected (N, {self.obs_dim})")
        return x

    def fit(self, obs: Mapping[str, Any], actions: np.ndarray) -> list[float]:
        """Regress the policy onto ``actions`` (N, action_dim) taken in ``obs`` (a batched dict);
        returns the training loss of every gradient step."""
        x = self._vectors(obs)
        y = np.asarray(actions, dtype=np.float32)
        if y.ndim != 2 or y.shape[1] != self.action_dim:
            raise ValueError(f"demo actions must have shape (N, {self.action_dim}), got {y.shape}")
        if len(x) != len(y):
            raise ValueError(f"{len(x)} observations but {len(y)} actions: every action needs the "
                             "observation it was taken in")
        if len(y) == 0:
            raise ValueError("no demonstration steps to fit")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError("demo observations or actions hold NaN or inf")
        if np.abs(y).max() > 1.0 + 1e-6:
            raise ValueError(f"demo actions reach {np.abs(y).max():.3g}, outside the policy's [-1, 1]: "
                             "were they recorded in another action space?")
        xt = torch.as_tensor(x, device=self.device)
        # a tanh policy never outputs exactly +-1: aim just inside, so saturated demo actions stay reachable
        yt = torch.as_tensor(np.clip(y, -0.999, 0.999), device=self.device)
        self.obs_mean = xt.mean(0)
        self.obs_std = xt.std(0, unbiased=False).clamp_min(1e-3)  # constant inputs (a fixed goal) pass as 0
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        n, batch = len(yt), min(self.cfg.batch_size, len(yt))
        losses = []
        for _ in range(self.cfg.gradient_steps):
            idx = torch.randint(n, (batch,), generator=self.generator, device=self.device)
            loss = (self._forward(xt[idx]) - yt[idx]).square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        self.fitted = True
        return losses

    def fit_demos(self, dataset_dir: str | Path, image_size: int | None = None, action_repeat: int = 1,
                  episode_fn: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None,
                  source_keys: tuple[str, ...] | None = None) -> int:
        """Fit on an episode dataset (``se-robot demos``); returns the number of (obs, action) pairs.

        ``episode_fn`` and ``source_keys`` are a frozen encoder's (``EncoderFeatures``): the episode
        arrays it reads and the mapping of an episode's frames to its features, as the training loop
        loads demos behind that encoder.
        """
        from se_robot.data.demos import load_demos

        pairs = DemoPairs()
        load_demos(dataset_dir, pairs, obs_keys=source_keys or self.obs_keys, image_size=image_size,
                   action_repeat=action_repeat, episode_fn=episode_fn)
        self.fit(*pairs.arrays())
        return len(pairs)

    @torch.no_grad()
    def act(self, obs: Any, step: int = 0, eval_mode: bool = True) -> np.ndarray:
        """The policy's action for one observation (deterministic; ``step`` and ``eval_mode`` are the
        ``Agent`` signature's and do not change it)."""
        if not self.fitted:
            raise RuntimeError("BCAgent.act before fit: the policy has not seen any demonstration")
        x = torch.as_tensor(self._vectors({k: np.asarray(obs[k])[None] for k in self.obs_keys}), device=self.device)
        return self._forward(x)[0].cpu().numpy()

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "obs_mean": self.obs_mean.clone(), "obs_std": self.obs_std.clone(),
                "fitted": self.fitted}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.obs_mean = state["obs_mean"].to(self.device)
        self.obs_std = state["obs_std"].to(self.device)
        self.fitted = bool(state["fitted"])
