"""DrQ-v2 (Yarats et al. 2021) with demo-aware extras, for pixel (and proprio) observations.

The published agent: a conv encoder trained only through the critic, random-shift augmentation of
both observations, a deterministic tanh actor whose exploration std follows a schedule, clipped
noise on target and actor-loss actions, clipped double Q with a Polyak-averaged target critic, and
n-step targets (from the replay Batch). The encoder is detached for the actor update.

Added knobs, each independent and off by default (see :class:`DrQV2Config`): symmetric sampling of
demo and online data, critic LayerNorm, an N-critic ensemble with a random M-subset target min
(REDQ), several critic steps per update round (UTD), a BC term on demo rows, a frozen encoder
whose per-frame features the replay caches, and proprioceptive state appended to the features.

Defaults are the paper's (table 1); the demo knobs default to "off" or to the value that changes
nothing, so the defaults train exactly the published agent. The discount and n-step horizon are not
agent settings: the replay buffer builds n-step targets and returns ``discount = gamma^n`` (0 after
termination), so they live in ``ReplayConfig``. The loss terms are in `se_robot.agents.losses`, the
exploration-std schedule in `se_robot.agents.schedule`.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from se_robot.agents.augment import draw_shifts, shift_images, shift_images_gather
from se_robot.agents.base import pick_device
from se_robot.agents.encoders import make_pixel_encoder
from se_robot.agents.losses import bc_loss, critic_target
from se_robot.agents.nets import DeterministicActor, EnsembleCritic, sample_clipped, soft_update
from se_robot.agents.obs import PIXELS, vector_obs
from se_robot.agents.precision import native_bf16, pick_amp
from se_robot.agents.schedule import parse_schedule
from se_robot.config import from_dict, option, to_dict

__all__ = ["DrQV2Agent", "DrQV2Config"]


@dataclass(frozen=True)
class DrQV2Config:
    # --- the paper's agent
    encoder: str = option("drqv2", choices=("drqv2", "resnet", "keypoints", "checkpoint"),
                          help="pixel encoder: the paper's 4-layer conv net, a small ResNet, a spatial-soft-argmax "
                               "keypoint net, or a checkpoint file (e.g. from se-robot pretrain-encoder)")
    encoder_checkpoint: str = option("", help="torch.save file for encoder=checkpoint "
                                              "(format: se_robot.agents.encoders)")
    freeze_encoder: bool = option(False, help="no encoder gradients; replay caches each frame's features once")
    feature_dim: int = option(50, range=(1, None), help="trunk output size (Linear -> LayerNorm -> Tanh)")
    hidden_dim: int = option(1024, range=(1, None), help="hidden units of the actor and critic MLPs")
    lr: float = option(1e-4, range=(0.0, 1.0), help="Adam learning rate of encoder, actor and critic")
    batch_size: int = option(256, range=(1, None), help="transitions per gradient step")
    critic_target_tau: float = option(0.01, range=(0.0, 1.0), help="Polyak rate of the target critic")
    update_every_steps: int = option(2, range=(1, None), help="env steps between update rounds")
    num_expl_steps: int = option(2000, range=(0, None), help="steps of uniform random actions at the start")
    stddev_schedule: str = option("linear(1.0,0.1,500000)",
                                  help="exploration std: a number, linear(init,final,steps) "
                                       "or step_linear(i,m,s1,f,s2)")
    stddev_clip: float = option(0.3, range=(0.0, None), help="clip of the target/actor-loss action noise")
    aug_pad: int = option(4, range=(0, 32), help="random-shift padding in pixels (0: no augmentation)")
    aug_method: str = option("gather", choices=("grid_sample", "gather"),
                             help="random shift by integer gather on the uint8 pixels, or by the paper's bilinear "
                                  "grid_sample (the same translation, within float rounding, and slower)")
    # --- learning from demonstrations and sample efficiency (each independent)
    demo_fraction: float = option(0.5, range=(0.0, 1.0),
                                  help="share of each batch drawn from the demo buffer when one is given (RLPD/SERL)")
    critic_layer_norm: bool = option(False, help="LayerNorm after each hidden layer of the critic (RLPD)")
    num_critics: int = option(2, range=(1, 32), help="critic ensemble size N")
    num_target_critics: int = option(2, range=(1, 32), help="random subset M of the ensemble for the target min (REDQ)")
    utd: int = option(1, range=(1, 64), help="critic gradient steps per update round (update-to-data ratio)")
    bc_weight: float = option(0.0, range=(0.0, None), help="weight of MSE(actor mean, demo action) on demo rows")
    # --- where and how fast
    device: str = option("auto", help="auto, cpu, cuda, cuda:N or mps")
    num_threads: int = option(0, range=(0, 256), help="torch CPU threads (0: leave torch's default)")
    channels_last: bool = option(True, help="channels-last memory format for the conv encoder (same numbers, "
                                            "1.3-1.4x less CPU time per update measured at the paper size)")
    amp: str = option("auto", choices=("auto", "none", "bf16"),
                      help="autocast mixed precision for forward passes; auto: bf16 only where the device has it "
                           "natively and a start-up probe finds it faster (se_robot.agents.precision)")
    fused_optim: bool = option(True, help="fused Adam kernels where the device has them (4x less CPU time per "
                                          "optimizer step than the foreach path; the same update up to rounding)")

    def __post_init__(self) -> None:
        if self.num_target_critics > self.num_critics:
            raise ValueError(f"num_target_critics ({self.num_target_critics}) must be "
                             f"<= num_critics ({self.num_critics})")
        if self.encoder == "checkpoint" and not self.encoder_checkpoint:
            raise ValueError("encoder=checkpoint needs encoder_checkpoint (a path)")
        parse_schedule(self.stddev_schedule)


#: vector keys DrQ-v2 appends to its image representation, in ``se_robot.agents.obs`` order
PROPRIO_KEYS = ("state", "task")


def _space_shapes(obs_space: Any) -> dict[str, tuple[int, ...]]:
    """{'pixels': (3k, H, W), 'state': (D,), 'task': (F,)}, the keys present in a Dict space."""
    spaces = getattr(obs_space, "spaces", None)
    if spaces is None:
        raise TypeError(f"DrQV2Agent: observations are dicts (pixels, state, task), got space {obs_space!r}")
    shapes = {}
    for key, space in dict(spaces).items():
        if key not in (PIXELS, *PROPRIO_KEYS):
            raise ValueError(f"DrQV2Agent: observation key {key!r} not understood "
                             f"(expected {PIXELS} and/or {', '.join(PROPRIO_KEYS)})")
        shapes[key] = tuple(space.shape)
    return shapes


class DrQV2Agent:
    """Actor, critic (ensemble), target critic and encoder, with their optimizers."""

    def __init__(self, obs_shapes: dict[str, tuple[int, ...]], action_dim: int, cfg: DrQV2Config,
                 device: torch.device, seed: int = 0):
        self.cfg = cfg
        self.device = device
        self.action_dim = action_dim
        self.obs_shapes = dict(obs_shapes)
        if cfg.num_threads > 0:
            torch.set_num_threads(cfg.num_threads)
        if cfg.amp == "bf16" and not native_bf16(device):
            warnings.warn(f"DrQV2Agent: amp=bf16 on a {device.type} without native bf16 runs in emulation, "
                          "about 10x slower than amp=none on the project's CPU; amp: auto picks the faster",
                          stacklevel=2)
        self.gen = torch.Generator(device=device)  # augmentation, noise, ensemble subsets
        self.gen.manual_seed(seed)
        self.np_rng = np.random.default_rng(seed)  # uniform exploration actions
        self.std_schedule = parse_schedule(cfg.stddev_schedule)
        # Initialise from ``seed`` without disturbing anyone else's use of the global generator.
        cuda = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            self._build_networks(obs_shapes, action_dim, cfg, device)
        self.amp = pick_amp(cfg.amp, device, None if cfg.freeze_encoder else self.encoder,
                            obs_shapes.get(PIXELS), cfg.channels_last)
        self.num_updates = 0

    def _build_networks(self, obs_shapes: dict[str, tuple[int, ...]], action_dim: int, cfg: DrQV2Config,
                        device: torch.device) -> None:
        self.encoder: torch.nn.Module | None = None
        repr_dim = 0
        if PIXELS in obs_shapes:
            c, h, w = obs_shapes[PIXELS]   # a channel-first frame stack (3k, H, W)
            if c % 3:
                raise ValueError(f"DrQV2Agent: pixels with {c} channels are not a stack of RGB frames")
            self.encoder = make_pixel_encoder(cfg.encoder, c // 3, (h, w), cfg.encoder_checkpoint,
                                              frame_wise=cfg.freeze_encoder)
            self.encoder.to(device)
            if cfg.channels_last:
                self.encoder.to(memory_format=torch.channels_last)
            repr_dim = self.encoder.repr_dim
        self.proprio_keys = tuple(k for k in PROPRIO_KEYS if k in obs_shapes)
        state_dim = sum(obs_shapes[k][0] for k in self.proprio_keys)
        if repr_dim == 0 and state_dim == 0:
            raise ValueError("DrQV2Agent: the observation has neither pixels nor state")
        self.actor = DeterministicActor(repr_dim, state_dim, action_dim, cfg.feature_dim, cfg.hidden_dim).to(device)
        self.critic = EnsembleCritic(repr_dim, state_dim, action_dim, cfg.feature_dim, cfg.hidden_dim,
                                     cfg.num_critics, cfg.critic_layer_norm).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = self._adam(self.actor)
        self.critic_opt = self._adam(self.critic)
        self.encoder_opt = None
        if self.encoder is not None and cfg.freeze_encoder:
            self.encoder.requires_grad_(False).eval()
        elif self.encoder is not None:
            self.encoder_opt = self._adam(self.encoder)

    def _adam(self, net: torch.nn.Module) -> torch.optim.Adam:
        """Adam with fused kernels where this torch has them for the device, else the foreach path."""
        if self.cfg.fused_optim:
            try:
                return torch.optim.Adam(net.parameters(), lr=self.cfg.lr, fused=True)
            except RuntimeError:   # a device or dtype without a fused Adam kernel
                pass
        return torch.optim.Adam(net.parameters(), lr=self.cfg.lr)

    @classmethod
    def create(cls, obs_space: Any, action_space: Any, cfg: DrQV2Config | dict | None = None,
               device: str | torch.device | None = None, seed: int = 0) -> "DrQV2Agent":
        """Build from the env's spaces; ``device`` overrides ``cfg.device``."""
        cfg = from_dict(DrQV2Config, cfg if cfg is not None else {}, "DrQV2Config")
        shape = tuple(action_space.shape)
        if len(shape) != 1:
            raise ValueError(f"DrQV2Agent: expected a flat Box action space, got shape {shape}")
        low, high = np.asarray(action_space.low), np.asarray(action_space.high)
        if not (np.allclose(low, -1.0) and np.allclose(high, 1.0)):
            raise ValueError("DrQV2Agent: actions must be normalised to [-1, 1] (wrap the env first: "
                             "se_robot.envs.make_env(env_id=...) rescales a Gymnasium env's bounded actions)")
        dev = device if isinstance(device, torch.device) else pick_device(device or cfg.device)
        return cls(_space_shapes(obs_space), shape[0], cfg, dev, seed)

    # ------------------------------------------------------------------ helpers
    def std(self, step: int) -> float:
        return float(self.std_schedule(step))

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (N, 3, H, W) frames -> float32 (N, F): the replay's feature-cache function.

        Use with ``replay.set_feature_fn(agent.encode_frames)`` (and the same on the demo buffer,
        whose batches must carry the same keys) when ``freeze_encoder`` is set.
        """
        if self.encoder is None or not hasattr(self.encoder, "encode_frames"):
            raise RuntimeError("encode_frames needs a frozen frame-wise encoder (freeze_encoder: true)")
        x = torch.as_tensor(np.asarray(frames), device=self.device).float()
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), self._autocast():
            return self.encoder.encode_frames(x).float().cpu().numpy()

    def _to_tensors(self, obs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Pixels (or the replay's cached ``features``) as they are; the proprio keys as one vector."""
        out = {k: torch.as_tensor(np.asarray(v), device=self.device) for k, v in obs.items()
               if k not in PROPRIO_KEYS}
        if self.proprio_keys:
            out["proprio"] = torch.as_tensor(vector_obs(obs, self.proprio_keys), device=self.device)
        return out

    def _encode(self, obs: dict[str, torch.Tensor], augment: bool) -> torch.Tensor | None:
        """(B, repr_dim) image representation, or None for state-only agents."""
        if self.encoder is None:
            return None
        if "features" in obs:  # the replay's cache of a frozen encoder
            return obs["features"].float().flatten(1)
        x = obs[PIXELS]
        if augment and self.cfg.aug_pad > 0:
            shifts = draw_shifts(x.shape[0], self.cfg.aug_pad, self.device, self.gen)
            if self.cfg.aug_method == "gather":
                x = shift_images_gather(x, self.cfg.aug_pad, shifts, self.cfg.channels_last).float()
            else:
                x = shift_images(x.float(), self.cfg.aug_pad, shifts)
        else:
            x = x.float()
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.cfg.freeze_encoder:
            with torch.no_grad():
                return self.encoder(x)
        return self.encoder(x)

    # ------------------------------------------------------------------ acting
    def act(self, obs: Any, step: int, eval_mode: bool) -> np.ndarray:
        """Mean action in eval mode; otherwise noisy (uniform during the first num_expl_steps)."""
        obs = {k: np.asarray(v)[None] for k, v in obs.items() if k in self.obs_shapes}
        t = self._to_tensors(obs)
        with torch.no_grad(), self._autocast():
            mean = self.actor(self._encode(t, augment=False), t.get("proprio"))
            if eval_mode:
                action = mean
            else:
                action = sample_clipped(mean.float(), self.std(step), None, self.gen)
        action = action.float().cpu().numpy()[0]
        if not eval_mode and step < self.cfg.num_expl_steps:
            action = self.np_rng.uniform(-1.0, 1.0, self.action_dim)
        return action.astype(np.float32)

    # ------------------------------------------------------------------ learning
    def update(self, replay: Any, demos: Any | None, step: int) -> dict[str, float]:
        """Every ``update_every_steps``: ``utd`` critic steps on fresh batches, then one actor step."""
        if step % self.cfg.update_every_steps != 0:
            return {}
        from se_robot.agents.replay import sample_mixed

        metrics: dict[str, float] = {}
        for _ in range(self.cfg.utd):
            batch = sample_mixed(replay, demos, self.cfg.batch_size, self.cfg.demo_fraction)
            metrics = self.update_batch(batch, step, update_actor=False)
            td = metrics.pop("_td_error")
            self._update_priorities(replay, demos, batch, td)
        metrics.update(self._update_actor(self._last_h, self._last_t, step))
        return metrics

    def update_batch(self, batch: Any, step: int, update_actor: bool = True) -> dict[str, float]:
        """One critic step (and by default one actor step) on a given Batch (``update`` runs critic steps
        through it; the learner-speed benchmark times it on fixed batches)."""
        t = self._batch_tensors(batch)
        with self._autocast():
            h = self._encode(t["obs"], augment=True)
            with torch.no_grad():
                next_h = self._encode(t["next_obs"], augment=True)
        metrics = self._update_critic(h, next_h, t, step)
        soft_update(self.critic, self.critic_target, self.cfg.critic_target_tau)
        self.num_updates += 1
        self._last_h = None if h is None else h.detach()
        self._last_t = t
        if update_actor:
            metrics.pop("_td_error")
            metrics.update(self._update_actor(self._last_h, t, step))
        return metrics

    def _batch_tensors(self, batch: Any) -> dict[str, Any]:
        return {
            "obs": self._to_tensors(batch.obs), "next_obs": self._to_tensors(batch.next_obs),
            "action": torch.as_tensor(batch.action, device=self.device, dtype=torch.float32),
            "reward": torch.as_tensor(batch.reward, device=self.device, dtype=torch.float32).reshape(-1, 1),
            "discount": torch.as_tensor(batch.discount, device=self.device, dtype=torch.float32).reshape(-1, 1),
            "weights": torch.as_tensor(batch.weights, device=self.device, dtype=torch.float32).reshape(-1, 1),
            "is_demo": torch.as_tensor(np.asarray(batch.is_demo, bool), device=self.device),
        }

    def target_subset(self) -> torch.Tensor | None:
        """REDQ: M distinct ensemble members for this step's target min (None: all of them)."""
        n, m = self.cfg.num_critics, self.cfg.num_target_critics
        if m >= n:
            return None
        return torch.randperm(n, generator=self.gen, device=self.device)[:m]

    def _update_critic(self, h, next_h, t: dict[str, Any], step: int) -> dict[str, float]:
        state, next_state = t["obs"].get("proprio"), t["next_obs"].get("proprio")
        with torch.no_grad(), self._autocast():
            next_mean = self.actor(next_h, next_state)
            next_action = sample_clipped(next_mean.float(), self.std(step), self.cfg.stddev_clip, self.gen)
            next_q = self.critic_target(next_h, next_state, next_action).float()
        target = critic_target(t["reward"], t["discount"], next_q, self.target_subset())
        with self._autocast():
            q = self.critic(h, state, t["action"]).float()
        td = q - target.unsqueeze(0)                       # (N, B, 1)
        loss = (td.pow(2) * t["weights"].unsqueeze(0)).mean(dim=(1, 2)).sum()
        if self.encoder_opt is not None:
            self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        if self.encoder_opt is not None:
            self.encoder_opt.step()
        return {"loss/critic": loss.item(), "q/mean": q.mean().item(), "q/target": target.mean().item(),
                "batch/reward": t["reward"].mean().item(),
                "batch/demo_fraction": t["is_demo"].float().mean().item(),
                "_td_error": td.detach().abs().mean(0).squeeze(-1)}

    def _update_actor(self, h, t: dict[str, Any], step: int) -> dict[str, float]:
        state = t["obs"].get("proprio")
        std = self.std(step)
        self.critic.requires_grad_(False)  # only the action path needs gradients here
        try:
            with self._autocast():
                mean = self.actor(h, state)
                action = sample_clipped(mean.float(), std, self.cfg.stddev_clip, self.gen)
                q = self.critic(h, state, action).float()
            # Clipped double Q for the paper's pair; REDQ averages a larger ensemble.
            q_pi = q.min(dim=0).values if self.cfg.num_critics <= 2 else q.mean(dim=0)
            actor_loss = -q_pi.mean()
            metrics = {"loss/actor": actor_loss.item(), "actor/std": std}
            if self.cfg.bc_weight > 0.0:
                bc = bc_loss(mean.float(), t["action"], t["is_demo"])
                actor_loss = actor_loss + self.cfg.bc_weight * bc
                metrics["loss/bc"] = bc.item()
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_opt.step()
        finally:
            self.critic.requires_grad_(True)
        return metrics

    def _update_priorities(self, replay: Any, demos: Any | None, batch: Any, td: torch.Tensor) -> None:
        """Feed |TD| back to prioritized buffers (online rows to replay, demo rows to demos)."""
        want = [b for b in (replay, demos) if b is not None and getattr(getattr(b, "cfg", None), "prioritized", False)]
        if not want:
            return
        td_np = td.cpu().numpy()
        is_demo = np.asarray(batch.is_demo, bool)
        for buf, rows in ((replay, ~is_demo), (demos, is_demo)):
            if buf in want and rows.any():
                buf.update_priorities(batch.indices[rows], td_np[rows])

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Networks, optimizers and random-number states: loading it resumes bit-for-bit."""
        state = {"config": to_dict(self.cfg), "obs_shapes": self.obs_shapes, "action_dim": self.action_dim,
                 "actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                 "critic_target": self.critic_target.state_dict(),
                 "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                 "torch_rng": self.gen.get_state(), "numpy_rng": self.np_rng.bit_generator.state,
                 "num_updates": self.num_updates}
        if self.encoder is not None:
            state["encoder"] = self.encoder.state_dict()
        if self.encoder_opt is not None:
            state["encoder_opt"] = self.encoder_opt.state_dict()
        return state

    def acting_state_dict(self) -> dict[str, Any]:
        state = {"obs_shapes": self.obs_shapes, "action_dim": self.action_dim, "actor": self.actor.state_dict()}
        if self.encoder is not None:
            state["encoder"] = self.encoder.state_dict()
        return state

    def load_acting_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("obs_shapes") != self.obs_shapes or state.get("action_dim") != self.action_dim:
            raise ValueError(f"DrQV2Agent.load_acting_state_dict: weights are for observations "
                             f"{state.get('obs_shapes')} and {state.get('action_dim')} actions; "
                             f"this agent has {self.obs_shapes} and {self.action_dim}")
        self.actor.load_state_dict(state["actor"])
        if self.encoder is not None:
            self.encoder.load_state_dict(state["encoder"])

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("obs_shapes") != self.obs_shapes or state.get("action_dim") != self.action_dim:
            raise ValueError(f"DrQV2Agent.load_state_dict: checkpoint is for observations {state.get('obs_shapes')} "
                             f"and {state.get('action_dim')} actions; "
                             f"this agent has {self.obs_shapes} and {self.action_dim}")
        built_opts = {name: (opt.param_groups[0]["fused"], opt.param_groups[0]["foreach"])
                      for name in ("actor_opt", "critic_opt", "encoder_opt")
                      if (opt := getattr(self, name)) is not None}
        for name in ("actor", "critic", "critic_target", "actor_opt", "critic_opt", "encoder", "encoder_opt"):
            target = getattr(self, name)
            if target is None:
                continue
            if name not in state:
                raise KeyError(f"DrQV2Agent.load_state_dict: checkpoint has no {name!r}")
            target.load_state_dict(state[name])
            if name.endswith("_opt"):   # the saved groups carry the saver's kernel choice: keep this agent's
                for group in target.param_groups:
                    group["fused"], group["foreach"] = built_opts[name]
        self.gen.set_state(state["torch_rng"])
        self.np_rng.bit_generator.state = state["numpy_rng"]
        self.num_updates = int(state["num_updates"])


def create(obs_space: Any, action_space: Any, cfg: DrQV2Config | dict | None = None,
           device: str | torch.device | None = None, seed: int = 0) -> DrQV2Agent:
    """Module-level constructor for ``se_robot.agents.registry.make_agent("drqv2", ...)``."""
    return DrQV2Agent.create(obs_space, action_space, cfg, device, seed)
