"""Model-Based Policy Optimization (Janner et al. 2019): SAC on short branched model rollouts.

Every ``model_train_interval_steps`` env steps the probabilistic ensemble is refitted on all real
transitions, then ``rollout_batch_size`` real states are branched into model rollouts of length
``k`` (k grows linearly with env steps, ``rollout_schedule``) whose transitions fill a model
buffer sized to hold ``model_retain_epochs`` epochs of rollouts. SAC then takes ``utd_ratio``
gradient steps per env step on batches that are ``real_ratio`` real and the rest model data.
With ``rollout_interval_steps`` below the refit interval the same states per epoch are branched in
smaller, more frequent batches, so model data comes from a policy fewer updates old.

Two guards against the policy exploiting model errors (both off by default, as in the paper):
a MOPO-style penalty ``r - lambda * u`` with ``u`` the norm of the largest predicted std of any
elite (``aleatoric``) or of the spread of the elites' means (``epistemic``), both measured in
units of each output's standard deviation in the data (so radians, rad/s and metres weigh alike),
and cutting a rollout where the elites' means differ by more than ``disagreement_cut`` output
standard deviations in any output.

Where the learning vector is proprioception then task features (keys ``state`` and ``task``,
concatenated by ``se_robot.agents.obs.vector_obs``) and the task defines reward and termination
on it, the loop passes
``reward_fn(state, action, next_state) -> (reward, terminated)`` (numpy, batched) and those
replace the learned reward; otherwise the reward is learned and rollouts never terminate (a
Gymnasium env of another package: its reward head is learned with the dynamics; for an env whose
episodes end on failure, give its own ``reward_fn`` with :meth:`MBPOAgent.set_reward_fn`).
Uniform random warm-up actions: ``sac.random_steps`` (the policy learner acts).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np
import torch

from se_robot.agents.dynamics import DynamicsConfig, EnsembleTrainer, ProbabilisticEnsemble
from se_robot.agents.sac import SACAgent, SACConfig, _size
from se_robot.config import from_dict, option

RewardFn = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass
class MBPOConfig:
    """MBPO knobs; defaults are the paper's (Hopper's rollout schedule)."""

    sac: SACConfig = option(default_factory=SACConfig, help="the policy learner (its utd_ratio is unused here)")
    model: DynamicsConfig = option(default_factory=DynamicsConfig, help="the dynamics ensemble")
    utd_ratio: int = option(20, range=(1, 1000), help="SAC gradient steps per env step (paper: 20)")
    real_ratio: float = option(0.05, range=(0.0, 1.0), help="fraction of each SAC batch that is real data")
    model_train_interval_steps: int = option(250, range=(1, None), help="env steps between model refits")
    model_min_transitions: int = option(1000, range=(2, None), help="real transitions before the first fit")
    model_max_transitions: int = option(1_000_000, range=(2, None), help="most real transitions one fit uses")
    rollout_batch_size: int = option(100_000, range=(1, None), help="real start states branched per refit")
    rollout_interval_steps: int | None = option(
        None, range=(1, None),
        help="env steps between rollouts; each branches rollout_batch_size * this / model_train_interval_steps "
             "states, so the model data per epoch is unchanged (null = once per refit, as the paper)")
    rollout_schedule: tuple[int, int, int, int] = option(
        (20_000, 100_000, 1, 15), range=(0, None),
        help="[min_step, max_step, min_length, max_length]: rollout length linear in env steps")
    epoch_length_steps: int = option(1000, range=(1, None), help="env steps per epoch (sizes the model buffer)")
    model_retain_epochs: int = option(1, range=(1, 1000), help="epochs of rollouts the model buffer keeps")
    uncertainty_penalty: float = option(0.0, range=(0.0, None), help="lambda in r - lambda*u (MOPO); 0 = off")
    penalty_kind: str = option("aleatoric", choices=("aleatoric", "epistemic"),
                               help="u: max_i ||sigma_i|| of elites, or ||std of elite means||, in output stds")
    disagreement_cut: float | None = option(None, range=(0.0, None),
                                            help="stop a rollout where elites disagree by more (output stds); null = never")

    def __post_init__(self) -> None:
        lo_step, hi_step, lo_len, hi_len = self.rollout_schedule
        if hi_step < lo_step or hi_len < lo_len or lo_len < 1:
            raise ValueError(f"rollout_schedule {list(self.rollout_schedule)} must be "
                             "[min_step <= max_step, 1 <= min_length <= max_length]")
        if self.rollout_interval_steps is not None and self.rollout_interval_steps > self.model_train_interval_steps:
            raise ValueError(f"rollout_interval_steps {self.rollout_interval_steps} must not exceed "
                             f"model_train_interval_steps {self.model_train_interval_steps} (every refit rolls out)")

    @property
    def rollout_every(self) -> int:
        """Env steps between rollouts: the refit interval unless rollout_interval_steps is set."""
        return self.rollout_interval_steps or self.model_train_interval_steps

    @property
    def rollout_starts(self) -> int:
        """Start states per rollout: the refit's rollout_batch_size spread over its rollouts."""
        return max(1, round(self.rollout_batch_size * self.rollout_every / self.model_train_interval_steps))


def rollout_length(schedule: tuple[int, int, int, int], step: int) -> int:
    """MBPO's linear schedule: min_length before min_step, max_length after max_step."""
    lo_step, hi_step, lo_len, hi_len = schedule
    if step <= lo_step or hi_step == lo_step:
        return lo_len if step <= lo_step else hi_len
    frac = min(1.0, (step - lo_step) / (hi_step - lo_step))
    return int(lo_len + frac * (hi_len - lo_len))


class ModelBuffer:
    """Ring of model transitions held as tensors (so SAC batches need no copies); resizable."""

    FIELDS = ("obs", "action", "reward", "discount", "next_obs")

    def __init__(self, obs_dim: int, action_dim: int, capacity: int, device: torch.device):
        self.obs_dim, self.action_dim, self.device = obs_dim, action_dim, device
        self.capacity, self.ptr, self.size = 0, 0, 0
        self.data: dict[str, torch.Tensor] = {}
        self.resize(capacity)

    def _empty(self, capacity: int) -> dict[str, torch.Tensor]:
        dims = {"obs": self.obs_dim, "action": self.action_dim, "reward": 1, "discount": 1, "next_obs": self.obs_dim}
        return {k: torch.zeros(capacity, d, device=self.device) for k, d in dims.items()}

    def _ordered(self) -> dict[str, torch.Tensor]:
        """Contents oldest first."""
        if self.size < self.capacity:
            return {k: v[: self.size] for k, v in self.data.items()}
        return {k: torch.cat([v[self.ptr:], v[: self.ptr]]) for k, v in self.data.items()}

    def resize(self, capacity: int) -> None:
        """New capacity keeping the newest transitions (MBPO grows the pool with rollout length)."""
        if capacity == self.capacity:
            return
        kept = {k: v[-capacity:] for k, v in self._ordered().items()} if self.size else {}
        self.data, self.capacity = self._empty(capacity), capacity
        self.size = len(kept["obs"]) if kept else 0
        for k, v in kept.items():
            self.data[k][: self.size] = v
        self.ptr = self.size % capacity

    def add(self, **batch: torch.Tensor) -> None:
        n = len(batch["obs"])
        if n == 0:
            return
        if n > self.capacity:
            batch = {k: v[-self.capacity:] for k, v in batch.items()}
            n = self.capacity
        idx = (self.ptr + torch.arange(n, device=self.device)) % self.capacity
        for k in self.FIELDS:
            self.data[k][idx] = batch[k].reshape(n, self.data[k].shape[1])
        self.ptr = (self.ptr + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        idx = torch.randint(0, self.size, (n,), generator=generator, device=self.device)
        return {k: v[idx] for k, v in self.data.items()}

    def __len__(self) -> int:
        return self.size

    def state_dict(self) -> dict[str, Any]:
        return {"data": {k: v[: self.capacity].clone() for k, v in self.data.items()}, "ptr": self.ptr,
                "size": self.size, "capacity": self.capacity}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.capacity, self.ptr, self.size = int(state["capacity"]), int(state["ptr"]), int(state["size"])
        self.data = {k: v.to(self.device).clone() for k, v in state["data"].items()}


class MBPOAgent:
    """MBPO following ``se_robot.agents.base.Agent``; build with :meth:`create`."""

    def __init__(self, obs_keys: tuple[str, ...], obs_dim: int, action_dim: int, cfg: MBPOConfig,
                 device: torch.device, seed: int, reward_fn: RewardFn | None = None):
        self.cfg, self.device = cfg, torch.device(device)
        self.sac = SACAgent(obs_keys, obs_dim, action_dim, cfg.sac, self.device, seed)
        self.obs_keys = self.sac.obs_keys
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 2)
            self.model = ProbabilisticEnsemble(obs_dim, action_dim, cfg.model).to(self.device)
        self.trainer = EnsembleTrainer(self.model, self.device)
        self.buffer = ModelBuffer(obs_dim, action_dim, self._buffer_capacity(0), self.device)
        self.rng = np.random.default_rng(seed + 1)
        self.generator = torch.Generator(device=self.device).manual_seed(seed + 1)
        self.reward_fn = reward_fn if self.scores_task else None
        self.last_fit_step: int | None = None
        self.last_rollout_step: int | None = None
        self.model_metrics: dict[str, float] = {}

    @classmethod
    def create(cls, obs_space: Any, action_space: Any, cfg: MBPOConfig | Mapping | None = None,
               device: str | torch.device = "cpu", seed: int = 0, reward_fn: RewardFn | None = None) -> "MBPOAgent":
        cfg = cfg if isinstance(cfg, MBPOConfig) else from_dict(MBPOConfig, cfg or {}, "<mbpo config>")
        probe = SACAgent.create(obs_space, action_space, cfg.sac, "cpu", seed)  # validates spaces
        return cls(probe.obs_keys, probe.obs_dim, probe.action_dim, cfg, device, seed, reward_fn)

    @property
    def scores_task(self) -> bool:
        """Whether the learning vector is the env's own (``state`` then ``task``), the layout a task
        reward function reads; behind a frozen encoder (``features``) the reward is learned."""
        return "features" not in self.obs_keys

    def set_reward_fn(self, reward_fn: RewardFn | None) -> None:
        """The task's reward/termination on (state, task) vectors (ignored on encoder features)."""
        self.reward_fn = reward_fn if self.scores_task else None

    def act(self, obs: Any, step: int, eval_mode: bool) -> np.ndarray:
        return self.sac.act(obs, step, eval_mode)

    # ------------------------------------------------------------------ model
    def _buffer_capacity(self, step: int) -> int:
        rollouts_per_epoch = self.cfg.rollout_batch_size * self.cfg.epoch_length_steps / self.cfg.model_train_interval_steps
        length = rollout_length(self.cfg.rollout_schedule, step)
        return max(1, int(self.cfg.model_retain_epochs * rollouts_per_epoch * length))

    def fit_model(self, replay: Any) -> dict[str, float]:
        """Refit the ensemble on (nearly) every real transition, deduplicated by slot."""
        n_step = getattr(getattr(replay, "cfg", None), "n_step", 1)
        if n_step != 1:
            raise ValueError(f"MBPO learns one-step dynamics: the replay buffer must use n_step=1, got {n_step}")
        total = min(getattr(replay, "transitions", _size(replay)), self.cfg.model_max_transitions)
        batch = replay.sample(2 * total)
        _, first = np.unique(np.asarray(batch.indices), return_index=True)
        first = first[: self.cfg.model_max_transitions]
        s, ns = self.sac.vector(batch.obs)[first], self.sac.vector(batch.next_obs)[first]
        a, r = np.asarray(batch.action, np.float32)[first], np.asarray(batch.reward, np.float32)[first]
        return self.trainer.fit(s, a, r, ns, self.rng)

    @torch.no_grad()
    def rollout(self, start: torch.Tensor, length: int) -> dict[str, float]:
        """Branch model rollouts from real states into the model buffer; returns rollout metrics."""
        cfg, m = self.cfg, self.model
        elites = m.elites
        s = start
        added, cut_total, penalties, disagreements = 0, 0, [], []
        for _ in range(length):
            if len(s) == 0:
                break
            a, _ = self.sac.policy(s)
            mean, var = m.predict(s, a)
            mean, std = mean[elites], var[elites].sqrt()             # (K, N, out)
            pick = torch.randint(0, len(elites), (len(s),), generator=self.generator, device=self.device)
            rows = torch.arange(len(s), device=self.device)
            eps = torch.randn(mean.shape[1:], generator=self.generator, device=self.device)
            sample = mean[pick, rows] + std[pick, rows] * eps
            next_s, reward = s + sample[:, :-1], sample[:, -1]
            terminated = torch.zeros(len(s), dtype=torch.bool, device=self.device)
            if self.reward_fn is not None:
                r_np, t_np = self.reward_fn(s.cpu().numpy(), a.cpu().numpy(), next_s.cpu().numpy())
                reward = torch.as_tensor(np.asarray(r_np, np.float32), device=self.device).reshape(-1)
                terminated = torch.as_tensor(np.asarray(t_np, bool), device=self.device).reshape(-1)
            # In units of each output's spread in the data, so rad, rad/s and m weigh alike.
            mean_n, std_n = mean / m.out_std, std / m.out_std
            if cfg.penalty_kind == "aleatoric":
                u = std_n.norm(dim=-1).max(0).values
            else:
                u = mean_n.std(0).norm(dim=-1) if len(elites) > 1 else torch.zeros(len(s), device=self.device)
            disagreement = (mean_n.std(0).max(-1).values if len(elites) > 1
                            else torch.zeros(len(s), device=self.device))
            keep = (torch.ones_like(terminated) if cfg.disagreement_cut is None
                    else disagreement <= cfg.disagreement_cut)
            penalties.append(u.mean().item())
            disagreements.append(disagreement.mean().item())
            cut_total += int((~keep).sum())
            reward = reward - cfg.uncertainty_penalty * u
            discount = cfg.sac.gamma * (~terminated).float()
            self.buffer.add(obs=s[keep], action=a[keep], reward=reward[keep], discount=discount[keep],
                            next_obs=next_s[keep])
            added += int(keep.sum())
            s = next_s[keep & ~terminated]
        return {"model/rollout_length": float(length), "model/rollout_transitions": float(added),
                "model/rollout_cut_fraction": cut_total / max(1, len(start) * length),
                "model/uncertainty": float(np.mean(penalties)) if penalties else 0.0,
                "model/disagreement": float(np.mean(disagreements)) if disagreements else 0.0,
                "model/buffer_size": float(len(self.buffer))}

    # ---------------------------------------------------------------- learning
    def update(self, replay: Any, demos: Any | None, step: int) -> dict[str, float]:
        cfg = self.cfg
        if _size(replay) < cfg.sac.min_replay:
            return {}
        real_count = getattr(replay, "transitions", _size(replay))
        due = (self.last_fit_step is None and real_count >= cfg.model_min_transitions) or (
            self.last_fit_step is not None and step - self.last_fit_step >= cfg.model_train_interval_steps)
        if due:
            self.model_metrics = self.fit_model(replay)
            self.last_fit_step = step
        # Rolling out more often than refitting keeps the model data nearer the current policy.
        if due or (self.last_rollout_step is not None and step - self.last_rollout_step >= cfg.rollout_every):
            self.buffer.resize(self._buffer_capacity(step))
            start = self.sac.to_tensors(replay.sample(cfg.rollout_starts))["obs"]
            self.model_metrics.update(self.rollout(start, rollout_length(cfg.rollout_schedule, step)))
            self.last_rollout_step = step
        batch_size, utd = cfg.sac.batch_size, cfg.utd_ratio
        n_real = batch_size if len(self.buffer) == 0 else int(round(batch_size * cfg.real_ratio))
        real = self.sac.sample_real(replay, demos, n_real * utd) if n_real else None
        fake = self.buffer.sample((batch_size - n_real) * utd, self.generator) if n_real < batch_size else None
        metrics: dict[str, float] = {}
        for i in range(utd):
            parts = [{k: v[i * n: (i + 1) * n] for k, v in p.items()}
                     for p, n in ((real, n_real), (fake, batch_size - n_real)) if p is not None]
            batch = parts[0] if len(parts) == 1 else {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
            metrics = self.sac.learn(batch)
        metrics.update(self.model_metrics)
        metrics["mbpo/real_ratio"] = n_real / batch_size
        metrics["model/rollout_length"] = float(rollout_length(cfg.rollout_schedule, step))
        metrics["sac/updates"] = float(self.sac.num_updates)
        return metrics

    # ----------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"sac": self.sac.state_dict(), "trainer": self.trainer.state_dict(), "buffer": self.buffer.state_dict(),
                "rng": self.rng.bit_generator.state, "generator": self.generator.get_state(),
                "last_fit_step": self.last_fit_step, "last_rollout_step": self.last_rollout_step,
                "model_metrics": dict(self.model_metrics)}

    def acting_state_dict(self) -> dict[str, Any]:
        return {"sac": self.sac.acting_state_dict()}   # acting is SAC's policy; the model stays with the learner

    def load_acting_state_dict(self, state: dict[str, Any]) -> None:
        self.sac.load_acting_state_dict(state["sac"])

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sac.load_state_dict(state["sac"])
        self.trainer.load_state_dict(state["trainer"])
        self.buffer.load_state_dict(state["buffer"])
        self.rng.bit_generator.state = state["rng"]
        self.generator.set_state(state["generator"])
        self.last_fit_step = state["last_fit_step"]
        self.last_rollout_step = state.get("last_rollout_step", self.last_fit_step)  # older checkpoints
        self.model_metrics = dict(state["model_metrics"])


def create(obs_space: Any, action_space: Any, cfg: MBPOConfig | Mapping | None = None,
           device: str | torch.device = "cpu", seed: int = 0, reward_fn: RewardFn | None = None) -> MBPOAgent:
    """Module-level factory the training loop looks up by algo name."""
    return MBPOAgent.create(obs_space, action_space, cfg, device, seed, reward_fn)
