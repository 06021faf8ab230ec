"""Soft Actor-Critic (Haarnoja et al. 2018) on state vectors or frozen-encoder features.

A critic ensemble evaluated as one batched network (twin critics by default; N critics with a
random M-subset in the target min, REDQ (Chen et al. 2021), for high update-to-data ratios),
automatic entropy tuning, Polyak-averaged target critics, and a configurable update-to-data ratio.
The same learner runs alone as algo ``sac`` and inside MBPO (``se_robot.agents.mbpo``), which feeds
it mixed real and model batches through :meth:`SACAgent.learn`, so the two are compared like for like.

Every random draw goes through the agent's own ``torch.Generator`` so that a checkpoint restores
the exact stream of actions and updates.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from se_robot.agents.dynamics import EnsembleMLP
from se_robot.agents.losses import bc_loss, critic_target
from se_robot.agents.obs import vector_dim, vector_keys, vector_obs
from se_robot.config import from_dict, option


@dataclasses.dataclass
class SACConfig:
    """SAC hyper-parameters; defaults follow the paper and Stable-Baselines3 where they agree."""

    hidden_dim: int = option(256, range=(8, 4096), help="width of actor and critic hidden layers")
    num_layers: int = option(2, range=(1, 8), help="hidden layers of actor and critics")
    critic_layer_norm: bool = option(False, help="layer norm in the critics' hidden layers (stable at high utd)")
    num_critics: int = option(2, range=(1, 32), help="critic ensemble size N (2: clipped double Q)")
    num_target_critics: int = option(2, range=(1, 32), help="random subset M of the ensemble whose min is the "
                                                            "target, drawn anew every update (REDQ; M >= N: all)")
    actor_lr: float = option(3e-4, range=(1e-6, 1.0), help="Adam learning rate of the actor")
    critic_lr: float = option(3e-4, range=(1e-6, 1.0), help="Adam learning rate of the critics")
    alpha_lr: float = option(3e-4, range=(1e-6, 1.0), help="Adam learning rate of log(alpha)")
    gamma: float = option(0.99, range=(0.0, 1.0), help="discount for model rollouts (real batches carry their own)")
    tau: float = option(0.005, range=(0.0, 1.0), help="Polyak rate of the target critics")
    batch_size: int = option(256, range=(1, 1 << 16), help="transitions per gradient step")
    utd_ratio: int = option(1, range=(1, 1000), help="gradient steps per update() call, i.e. per env step")
    init_temperature: float = option(1.0, range=(1e-6, 100.0), help="initial entropy coefficient alpha")
    target_entropy: float | None = option(None, help="entropy target; null means -action_dim")
    log_std_min: float = option(-5.0, range=(-20.0, 0.0), help="lower bound of the policy's log std")
    log_std_max: float = option(2.0, range=(-5.0, 5.0), help="upper bound of the policy's log std")
    min_replay: int = option(256, range=(1, None), help="update() does nothing until replay holds this many")
    demo_ratio: float = option(0.5, range=(0.0, 1.0), help="fraction of each batch from demos when given (RLPD)")
    bc_weight: float = option(0.0, range=(0.0, None), help="weight of MSE(actor mean, demo action) on a batch's demo "
                                                           "rows in the actor loss (0: none; as drqv2's)")
    random_steps: int = option(0, range=(0, None), help="env steps at the start whose actions are uniform in "
                                                        "[-1, 1]^n instead of the policy's (a warm-up, as SB3's "
                                                        "learning_starts; 0: the policy acts from step 0)")

    def __post_init__(self) -> None:
        if self.num_target_critics > self.num_critics:
            raise ValueError(f"num_target_critics ({self.num_target_critics}) must be "
                             f"<= num_critics ({self.num_critics})")


def vector_space(obs_space: Any) -> tuple[tuple[str, ...], int]:
    """The vector keys SAC and MBPO learn from (``se_robot.agents.obs.VECTOR_KEYS``) and their total size.

    Pixels alone are refused: these learners take vectors, so pixels need a frozen encoder first.
    """
    keys = vector_keys(obs_space)
    if not keys:
        raise ValueError(f"observation space with keys {sorted(obs_space.spaces)} has no vector key; "
                         "for pixels give a frozen encoder (obs['features'])")
    return keys, vector_dim(obs_space)


class Actor(nn.Module):
    """Tanh-squashed diagonal Gaussian policy."""

    def __init__(self, obs_dim: int, action_dim: int, cfg: SACConfig):
        super().__init__()
        self.net = EnsembleMLP(1, obs_dim, 2 * action_dim, cfg.hidden_dim, cfg.num_layers, activation="relu")
        self.log_std_min, self.log_std_max = cfg.log_std_min, cfg.log_std_max

    def forward(self, obs: torch.Tensor, generator: torch.Generator | None, deterministic: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Action in [-1, 1] and its log-probability (B, 1)."""
        mean, log_std = self.net(obs)[0].chunk(2, dim=-1)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(log_std) + 1)
        if deterministic:
            return torch.tanh(mean), torch.zeros(obs.shape[0], 1, device=obs.device)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device)
        pre = mean + eps * log_std.exp()
        log_prob = (-0.5 * eps.square() - log_std - 0.5 * np.log(2 * np.pi)).sum(-1, keepdim=True)
        # log det of tanh, written stably: log(1 - tanh(x)^2) = 2 (log 2 - x - softplus(-2x))
        log_prob = log_prob - (2 * (np.log(2) - pre - F.softplus(-2 * pre))).sum(-1, keepdim=True)
        return torch.tanh(pre), log_prob


class SACAgent:
    """SAC following ``se_robot.agents.base.Agent``; build with :meth:`create`."""

    def __init__(self, obs_keys: tuple[str, ...], obs_dim: int, action_dim: int, cfg: SACConfig,
                 device: torch.device, seed: int):
        self.cfg, self.device = cfg, torch.device(device)
        self.obs_keys, self.obs_dim, self.action_dim = tuple(obs_keys), obs_dim, action_dim
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        with torch.random.fork_rng(devices=[]):  # initial weights from the seed, global stream untouched
            torch.manual_seed(seed)
            self.actor = Actor(obs_dim, action_dim, cfg).to(self.device)
            self.critic = self._critic(obs_dim + action_dim)
        self.critic_target = self._critic(obs_dim + action_dim)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.log_alpha = torch.tensor(np.log(cfg.init_temperature), dtype=torch.float32, device=self.device,
                                      requires_grad=True)
        self.target_entropy = -float(action_dim) if cfg.target_entropy is None else cfg.target_entropy
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr)
        self.num_updates = 0

    def _critic(self, in_dim: int) -> EnsembleMLP:
        cfg = self.cfg
        return EnsembleMLP(cfg.num_critics, in_dim, 1, cfg.hidden_dim, cfg.num_layers, "relu",
                           cfg.critic_layer_norm).to(self.device)

    @classmethod
    def create(cls, obs_space: Any, action_space: Any, cfg: SACConfig | Mapping | None = None,
               device: str | torch.device = "cpu", seed: int = 0) -> "SACAgent":
        cfg = from_dict(SACConfig, cfg or {}, "<sac config>") if not isinstance(cfg, SACConfig) else cfg
        keys, obs_dim = vector_space(obs_space)
        low, high = np.asarray(action_space.low), np.asarray(action_space.high)
        if low.ndim != 1 or not (np.allclose(low, -1) and np.allclose(high, 1)):
            raise ValueError(f"SAC expects a normalised Box action space [-1, 1]^n, got low={low} high={high} "
                             "(se_robot.envs.make_env(env_id=...) rescales a Gymnasium env's bounded actions)")
        return cls(keys, obs_dim, int(low.shape[0]), cfg, device, seed)

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def vector(self, obs: Mapping[str, Any]) -> np.ndarray:
        """The learning vector of an observation or a batch's observations (``vector_obs``)."""
        return vector_obs(obs, self.obs_keys)

    # ------------------------------------------------------------------ acting
    def policy(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        return self.actor(obs, self.generator, deterministic)

    @torch.no_grad()
    def act(self, obs: Any, step: int, eval_mode: bool) -> np.ndarray:
        """The policy's action (its mean in eval mode); uniform random during the first ``random_steps``
        training steps, drawn from the agent's own generator, so a checkpoint resumes the same draws."""
        if not eval_mode and step < self.cfg.random_steps:
            return self.rng.uniform(-1.0, 1.0, self.action_dim).astype(np.float32)
        x = torch.as_tensor(self.vector(obs), device=self.device).reshape(1, -1)
        action, _ = self.policy(x, deterministic=eval_mode)
        return action[0].cpu().numpy()

    # ---------------------------------------------------------------- learning
    def target_subset(self) -> torch.Tensor | None:
        """REDQ: M distinct ensemble members for this update's target min (None: all of them), drawn
        from the agent's generator so that a checkpoint resumes the same draws."""
        n, m = self.cfg.num_critics, self.cfg.num_target_critics
        if m >= n:
            return None
        return torch.randperm(n, generator=self.generator, device=self.device)[:m]

    def to_tensors(self, batch: Any) -> dict[str, torch.Tensor]:
        """A replay ``Batch`` (numpy) as float tensors: obs, action, reward (B,1), discount (B,1), next_obs."""
        def t(x: Any) -> torch.Tensor:
            return torch.as_tensor(np.asarray(x, dtype=np.float32), device=self.device)
        return {"obs": t(self.vector(batch.obs)), "action": t(batch.action),
                "reward": t(batch.reward).reshape(-1, 1), "discount": t(batch.discount).reshape(-1, 1),
                "next_obs": t(self.vector(batch.next_obs))}

    def learn(self, b: dict[str, torch.Tensor]) -> dict[str, float]:
        """One gradient step of critics, actor and temperature on a tensor batch."""
        with torch.no_grad():
            next_action, next_logp = self.policy(b["next_obs"])
            q_next = self.critic_target(torch.cat([b["next_obs"], next_action], -1))  # (N, B, 1)
            target = critic_target(b["reward"], b["discount"], q_next - self.alpha * next_logp, self.target_subset())
        q = self.critic(torch.cat([b["obs"], b["action"]], -1))  # (N, B, 1)
        critic_loss = (q - target).square().mean(dim=(1, 2)).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        action, logp = self.policy(b["obs"])
        self.critic.requires_grad_(False)
        q_pi = self.critic(torch.cat([b["obs"], action], -1))
        # clipped double Q for a pair; REDQ's actor averages a larger ensemble
        q_pi = q_pi.min(0).values if self.cfg.num_critics <= 2 else q_pi.mean(0)
        self.critic.requires_grad_(True)
        actor_loss = (self.alpha.detach() * logp - q_pi).mean()
        extra: dict[str, float] = {}
        if self.cfg.bc_weight > 0.0 and "is_demo" in b:
            # the policy's mean pulled toward the demo actions: with a sparse reward the critic says
            # nothing useful for thousands of updates, and the demos keep the policy near success meanwhile
            bc = bc_loss(self.policy(b["obs"], deterministic=True)[0], b["action"], b["is_demo"])
            actor_loss = actor_loss + self.cfg.bc_weight * bc
            extra["loss/bc"] = bc.item()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()

        with torch.no_grad():
            for p, tp in zip(self.critic.parameters(), self.critic_target.parameters()):
                tp.lerp_(p, self.cfg.tau)
        self.num_updates += 1
        return {"loss/critic": critic_loss.item(), "loss/actor": actor_loss.item(), "loss/alpha": alpha_loss.item(),
                "alpha": self.alpha.item(), "sac/entropy": -logp.mean().item(), "sac/q": q.mean().item(), **extra}

    def sample_real(self, replay: Any, demos: Any | None, n: int) -> dict[str, torch.Tensor]:
        """``n`` real transitions, a ``demo_ratio`` share from demonstrations when there are any
        (the last ``demo_rows(demos, n)`` rows)."""
        n_demo = self.demo_rows(demos, n)
        parts = [self.to_tensors(replay.sample(n - n_demo))]
        if n_demo:
            parts.append(self.to_tensors(demos.sample(n_demo)))
        return parts[0] if len(parts) == 1 else {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def demo_rows(self, demos: Any | None, n: int) -> int:
        """How many of ``n`` sampled rows come from ``demos`` (0 without demos)."""
        return int(round(n * self.cfg.demo_ratio)) if demos is not None and _size(demos) > 0 else 0

    def update(self, replay: Any, demos: Any | None, step: int) -> dict[str, float]:
        if _size(replay) < self.cfg.min_replay:
            return {}
        metrics: dict[str, float] = {}
        n = self.cfg.batch_size
        is_demo = torch.arange(n, device=self.device) >= n - self.demo_rows(demos, n)
        for _ in range(self.cfg.utd_ratio):
            metrics = self.learn({**self.sample_real(replay, demos, n), "is_demo": is_demo})
        metrics["sac/updates"] = float(self.num_updates)
        return metrics

    # ----------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "critic_target": self.critic_target.state_dict(), "log_alpha": self.log_alpha.detach().clone(),
                "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                "alpha_opt": self.alpha_opt.state_dict(), "generator": self.generator.get_state(),
                "rng": self.rng.bit_generator.state, "num_updates": self.num_updates}

    def acting_state_dict(self) -> dict[str, Any]:
        return {"actor": self.actor.state_dict()}

    def load_acting_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.alpha_opt.load_state_dict(state["alpha_opt"])
        self.generator.set_state(state["generator"])
        self.rng.bit_generator.state = state["rng"]
        self.num_updates = int(state["num_updates"])


def _size(buffer: Any) -> int:
    """Transitions held by a buffer that may not define ``__len__`` (then assume it is usable)."""
    try:
        return len(buffer)
    except TypeError:
        return 1 << 62


def create(obs_space: Any, action_space: Any, cfg: SACConfig | Mapping | None = None,
           device: str | torch.device = "cpu", seed: int = 0) -> SACAgent:
    """Module-level factory the training loop looks up by algo name."""
    return SACAgent.create(obs_space, action_space, cfg, device, seed)
