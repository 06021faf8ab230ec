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

An update is two *static steps*, :meth:`DrQV2Agent.critic_step` and :meth:`DrQV2Agent.actor_step`:
functions of tensors alone, given their random draws (shifts, noise, ensemble subset; drawn
beforehand in the order the update always drew them) and returning their metrics as tensors.
Run eagerly they are the update on any device; on CUDA with ``cuda_graph: auto`` or ``on`` each is captured
once as a CUDA graph and replayed (`se_robot.agents.cuda_graph`), because launching its ~250
small kernels one by one left the GPU idle for much of each update.
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
from se_robot.agents.cuda_graph import GraphedStep
from se_robot.agents.nets import DeterministicActor, EnsembleCritic, add_clipped_noise, sample_clipped, soft_update
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
    cuda_graph: str = option("off", choices=("auto", "on", "off"),
                             help="capture the critic and actor steps once as CUDA graphs and replay them (one "
                                  "launch instead of ~250 per update); auto: on CUDA devices, off elsewhere; "
                                  "on: a device other than CUDA is an error. Off by default until it has run "
                                  "on a GPU (docs/benchmarks.md, 'CUDA graphs and pinned batches')")

    def __post_init__(self) -> None:
        if self.num_target_critics > self.num_critics:
            raise ValueError(f"num_target_critics ({self.num_target_critics}) must be "
                             f"<= num_critics ({self.num_critics})")
        if self.encoder == "checkpoint" and not self.encoder_checkpoint:
            raise ValueError("encoder=checkpoint needs encoder_checkpoint (a path)")
        parse_schedule(self.stddev_schedule)


#: the critic step's metrics, in the order of its ``metrics`` tensor
CRITIC_METRICS = ("loss/critic", "q/mean", "q/target", "batch/reward", "batch/demo_fraction")

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
        if cfg.cuda_graph == "on" and device.type != "cuda":
            raise ValueError(f"DrQV2Agent: cuda_graph: on needs a CUDA device, got {device} "
                             "(auto: graphs on CUDA only)")
        self.graphed = cfg.cuda_graph != "off" and device.type == "cuda"   # then the optimizers are capturable
        # Initialise from ``seed`` without disturbing anyone else's use of the global generator.
        cuda = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            self._build_networks(obs_shapes, action_dim, cfg, device)
        self.amp = pick_amp(cfg.amp, device, None if cfg.freeze_encoder else self.encoder,
                            obs_shapes.get(PIXELS), cfg.channels_last)
        self.num_updates = 0
        self._new_graphs()

    def _new_graphs(self) -> None:
        """Uncaptured graphs of the two steps (captured after a few eager warm-up updates)."""
        self._graphs = ({name: GraphedStep(step, self.device, name) for name, step in
                         (("critic", self.critic_step), ("actor", self.actor_step))} if self.graphed else {})

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
                return torch.optim.Adam(net.parameters(), lr=self.cfg.lr, fused=True, capturable=self.graphed)
            except RuntimeError:   # a device or dtype without a fused Adam kernel
                pass
        return torch.optim.Adam(net.parameters(), lr=self.cfg.lr, capturable=self.graphed)

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
            # A graph cannot hold autocast's cache of cast weights (torch's CUDA graphs notes).
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, cache_enabled=not self.graphed)
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

    def _to_tensors(self, obs: dict[str, np.ndarray], device: torch.device | None = None) -> dict[str, torch.Tensor]:
        """Pixels (or the replay's cached ``features``) as they are; the proprio keys as one vector."""
        device = device or self.device
        out = {k: torch.as_tensor(np.asarray(v), device=device) for k, v in obs.items() if k not in PROPRIO_KEYS}
        if self.proprio_keys:
            out["proprio"] = torch.as_tensor(vector_obs(obs, self.proprio_keys), device=device)
        return out

    def _encode(self, obs: dict[str, torch.Tensor], shifts: torch.Tensor | None) -> torch.Tensor | None:
        """(B, repr_dim) image representation (None for state-only agents), random-shifted by ``shifts``
        (B, 2) if given (:func:`se_robot.agents.augment.draw_shifts`)."""
        if self.encoder is None:
            return None
        if "features" in obs:  # the replay's cache of a frozen encoder
            return obs["features"].float().flatten(1)
        x = obs[PIXELS]
        if shifts is not None:
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
            mean = self.actor(self._encode(t, None), t.get("proprio"))
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
        """Every ``update_every_steps``: ``utd`` critic steps on fresh batches, then one actor step.

        With CUDA graphs on, the buffers are asked to gather batches into pinned host memory, so
        copying a batch to the GPU is an asynchronous DMA rather than a staged copy.
        """
        if step % self.cfg.update_every_steps != 0:
            return {}
        from se_robot.agents.replay import sample_mixed

        if self.graphed:
            for buffer in (replay, demos):
                if hasattr(buffer, "pin_batches"):
                    buffer.pin_batches()
        metrics: dict[str, float] = {}
        for _ in range(self.cfg.utd):
            batch = sample_mixed(replay, demos, self.cfg.batch_size, self.cfg.demo_fraction)
            metrics = self._critic_update(batch, step)
            td = metrics.pop("_td_error")
            self._update_priorities(replay, demos, batch, td)
        metrics.update(self._actor_update(step))
        return metrics

    def update_batch(self, batch: Any, step: int, update_actor: bool = True) -> dict[str, float]:
        """One critic step (and by default one actor step) on a given Batch (``update`` runs critic steps
        through it; the learner-speed benchmark times it on fixed batches)."""
        metrics = self._critic_update(batch, step)
        if update_actor:
            metrics.pop("_td_error")
            metrics.update(self._actor_update(step))
        return metrics

    def _batch_tensors(self, batch: Any, device: torch.device | None = None) -> dict[str, Any]:
        """The Batch as tensors on ``device`` (default: the agent's); on the CPU they share the arrays."""
        device = device or self.device
        return {
            "obs": self._to_tensors(batch.obs, device), "next_obs": self._to_tensors(batch.next_obs, device),
            "action": torch.as_tensor(batch.action, device=device, dtype=torch.float32),
            "reward": torch.as_tensor(batch.reward, device=device, dtype=torch.float32).reshape(-1, 1),
            "discount": torch.as_tensor(batch.discount, device=device, dtype=torch.float32).reshape(-1, 1),
            "weights": torch.as_tensor(batch.weights, device=device, dtype=torch.float32).reshape(-1, 1),
            "is_demo": torch.as_tensor(np.asarray(batch.is_demo, bool), device=device),
        }

    def target_subset(self) -> torch.Tensor | None:
        """REDQ: M distinct ensemble members for this step's target min (None: all of them)."""
        n, m = self.cfg.num_critics, self.cfg.num_target_critics
        if m >= n:
            return None
        return torch.randperm(n, generator=self.gen, device=self.device)[:m]

    def _critic_draws(self, obs_keys: Any, batch_size: int) -> dict[str, torch.Tensor]:
        """A critic step's random draws, in the order the step used to make them itself: the
        augmentation's shifts of obs and of next_obs, the target action's noise, the REDQ subset."""
        draws = {}
        if self.encoder is not None and self.cfg.aug_pad > 0 and "features" not in obs_keys:
            for key in ("obs_shift", "next_obs_shift"):
                draws[key] = draw_shifts(batch_size, self.cfg.aug_pad, self.device, self.gen)
        draws["target_noise"] = torch.randn((batch_size, self.action_dim), device=self.device, generator=self.gen)
        subset = self.target_subset()
        if subset is not None:
            draws["target_subset"] = subset
        return draws

    def _critic_update(self, batch: Any, step: int) -> dict[str, Any]:
        """Tensors in, :meth:`critic_step` (eager or replayed), floats out; keeps what the actor step reads."""
        inputs = self._batch_tensors(batch, torch.device("cpu") if self.graphed else None)
        inputs.update(self._critic_draws(batch.obs, inputs["action"].shape[0]), std=self.std(step))
        if self.graphed:
            out, seen = self._graphs["critic"](inputs)
        else:
            out, seen = self.critic_step(inputs), inputs
        self.num_updates += 1
        self._actor_batch = {"action": seen["action"], "is_demo": seen["is_demo"]}
        if out["h"] is not None:
            self._actor_batch["h"] = out["h"]
        if "proprio" in seen["obs"]:
            self._actor_batch["proprio"] = seen["obs"]["proprio"]
        metrics: dict[str, Any] = dict(zip(CRITIC_METRICS, out["metrics"].tolist()))
        # a replayed graph's output is overwritten by the next replay; an eager step's is fresh
        metrics["_td_error"] = out["td"].clone() if self.graphed else out["td"]
        return metrics

    def _actor_update(self, step: int) -> dict[str, float]:
        """One actor step on the last critic step's batch and detached representation."""
        std = self.std(step)
        mean_shape = self._actor_batch["action"].shape
        inputs = {**self._actor_batch, "std": std,
                  "actor_noise": torch.randn(mean_shape, device=self.device, generator=self.gen)}
        out = self._graphs["actor"](inputs)[0] if self.graphed else self.actor_step(inputs)
        metrics = dict(zip(("loss/actor", "loss/bc"), out["metrics"].tolist()))
        metrics["actor/std"] = std
        return metrics

    # The static steps: functions of tensors (and ``std``, a float or a 0-dim tensor) alone, with
    # their random draws as inputs and their metrics as tensors, so that one CUDA graph can hold
    # each (se_robot.agents.cuda_graph). Run eagerly they are the agent's update on any device.
    def critic_step(self, x: dict[str, Any]) -> dict[str, Any]:
        """One critic (and encoder) gradient step, then the target critic's Polyak update.

        ``x``: the batch (``obs``, ``next_obs``, ``action``, ``reward``, ``discount``, ``weights``,
        ``is_demo``), the draws of :meth:`_critic_draws` and ``std``. Returns the detached image
        representation ``h`` (None without pixels), per-sample ``td`` (mean |TD| over the ensemble)
        and ``metrics``, a tensor in :data:`CRITIC_METRICS` order.
        """
        with self._autocast():
            h = self._encode(x["obs"], x.get("obs_shift"))
            with torch.no_grad():
                next_h = self._encode(x["next_obs"], x.get("next_obs_shift"))
        state, next_state = x["obs"].get("proprio"), x["next_obs"].get("proprio")
        with torch.no_grad(), self._autocast():
            next_mean = self.actor(next_h, next_state)
            next_action = add_clipped_noise(next_mean.float(), x["target_noise"], x["std"], self.cfg.stddev_clip)
            next_q = self.critic_target(next_h, next_state, next_action).float()
        target = critic_target(x["reward"], x["discount"], next_q, x.get("target_subset"))
        with self._autocast():
            q = self.critic(h, state, x["action"]).float()
        td = q - target.unsqueeze(0)                       # (N, B, 1)
        loss = (td.pow(2) * x["weights"].unsqueeze(0)).mean(dim=(1, 2)).sum()
        if self.encoder_opt is not None:
            self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        if self.encoder_opt is not None:
            self.encoder_opt.step()
        soft_update(self.critic, self.critic_target, self.cfg.critic_target_tau)
        metrics = torch.stack([loss, q.mean(), target.mean(), x["reward"].mean(), x["is_demo"].float().mean()])
        return {"h": None if h is None else h.detach(), "td": td.detach().abs().mean(0).squeeze(-1),
                "metrics": metrics.detach()}

    def actor_step(self, x: dict[str, Any]) -> dict[str, Any]:
        """One actor gradient step through the critic (whose weights stay put).

        ``x``: ``h`` (if pixels) and ``proprio`` (if state) of the critic step's observations, its
        ``action`` and ``is_demo`` (for the BC term), ``actor_noise`` (standard normal) and ``std``.
        Returns ``metrics``: the actor loss, then the BC loss if ``bc_weight`` > 0.
        """
        h, state = x.get("h"), x.get("proprio")
        self.critic.requires_grad_(False)  # only the action path needs gradients here
        try:
            with self._autocast():
                mean = self.actor(h, state)
                action = add_clipped_noise(mean.float(), x["actor_noise"], x["std"], self.cfg.stddev_clip)
                q = self.critic(h, state, action).float()
            # Clipped double Q for the paper's pair; REDQ averages a larger ensemble.
            q_pi = q.min(dim=0).values if self.cfg.num_critics <= 2 else q.mean(dim=0)
            actor_loss = -q_pi.mean()
            losses = [actor_loss]
            if self.cfg.bc_weight > 0.0:
                bc = bc_loss(mean.float(), x["action"], x["is_demo"])
                actor_loss = actor_loss + self.cfg.bc_weight * bc
                losses.append(bc)
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_opt.step()
        finally:
            self.critic.requires_grad_(True)
        return {"metrics": torch.stack(losses).detach()}

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
        built_opts = {name: {key: opt.param_groups[0][key] for key in ("fused", "foreach", "capturable")}
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
                    group.update(built_opts[name])
                if built_opts[name]["capturable"] or built_opts[name]["fused"]:   # their step lives on the device
                    for param, param_state in target.state.items():
                        if "step" in param_state:
                            param_state["step"] = param_state["step"].to(param.device, torch.float32)
        self.gen.set_state(state["torch_rng"])
        self.np_rng.bit_generator.state = state["numpy_rng"]
        self.num_updates = int(state["num_updates"])
        self._new_graphs()   # loading replaced the optimizers' state tensors that a captured graph read


def create(obs_space: Any, action_space: Any, cfg: DrQV2Config | dict | None = None,
           device: str | torch.device | None = None, seed: int = 0) -> DrQV2Agent:
    """Module-level constructor for ``se_robot.agents.registry.make_agent("drqv2", ...)``."""
    return DrQV2Agent.create(obs_space, action_space, cfg, device, seed)
