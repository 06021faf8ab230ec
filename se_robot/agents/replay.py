"""Replay buffer: every frame stored once, stacks and n-step targets assembled at sampling.

Why this shape: a frame-stacked pixel observation duplicated as ``obs`` and ``next_obs`` costs
2 x stack copies of each frame; on a small robot PC that is the difference between a 100k and a
1M-step buffer. So a slot holds one observation (the newest uint8 (3, H, W) frame of ``pixels``,
every other key as is) plus the transition that leaves it; an episode of T steps takes T+1 slots.
Observations come in as the env gives them (``se_robot.agents.obs``): ``pixels`` is a channel-first
frame stack (3k, H, W) whose newest frame is stored; batches rebuild stacks of ``frame_stack``. Sampling looks
back ``frame_stack - 1`` slots (padding with the episode's first frame) and forward up to
``n_step`` slots (stopping at the episode's end: discount 0 after termination, bootstrapping
after truncation).

The ring never samples across the write head: a transition is drawn only if every slot its stack
and its n-step window read is still in the buffer and already written.

The same class holds demonstrations (a second instance); ``sample_mixed`` draws one batch from
both with an exact demo fraction (RLPD / SERL symmetric sampling). Saving and loading (every
array checked, nothing trusted) live in ``se_robot.agents.replay_io``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from se_robot.agents.obs import PIXELS, newest_frame
from se_robot.agents.prioritized import SumTree
from se_robot.config import option

FORMAT_VERSION = 1


@dataclass(frozen=True)
class ReplayConfig:
    capacity: int = option(100_000, help="slots (one observation each) before the ring overwrites", range=(2, None))
    frame_stack: int = option(3, help="frames per stacked pixel observation, assembled at sampling", range=(1, 16))
    n_step: int = option(3, help="steps summed into the reward target", range=(1, 100))
    discount: float = option(0.99, help="gamma used for the n-step target", range=(0.0, 1.0))
    prioritized: bool = option(False, help="proportional prioritized replay (sum tree)")
    alpha: float = option(0.6, help="PER: priority exponent", range=(0.0, None))
    beta: float = option(0.4, help="PER: importance-weight exponent", range=(0.0, 1.0))
    priority_eps: float = option(1e-6, help="PER: added to |td error| so no slot starves", range=(0.0, None))


@dataclass
class Batch:
    """What agents learn from (docs/ARCHITECTURE.md): numpy arrays with a leading batch axis."""

    obs: dict[str, np.ndarray]
    action: np.ndarray        # float32 (B, A)
    reward: np.ndarray        # float32 (B,) n-step discounted sum
    discount: np.ndarray      # float32 (B,) gamma^m for the bootstrap, 0 after termination
    next_obs: dict[str, np.ndarray]
    weights: np.ndarray       # float32 (B,) importance weights (ones without PER)
    indices: np.ndarray       # int64 (B,) slots, for update_priorities
    is_demo: np.ndarray       # bool (B,)


class ReplayBuffer:
    """Ring buffer of episodes; see the module docstring for the layout."""

    def __init__(self, cfg: ReplayConfig | None = None, seed: int = 0, **overrides: Any):
        cfg = cfg or ReplayConfig()
        if overrides:
            cfg = dataclasses.replace(cfg, **overrides)
        self.cfg = cfg
        self.capacity = cfg.capacity
        self.rng = np.random.default_rng(seed)
        self._arrays: dict[str, np.ndarray] = {}   # per-slot observation arrays, by key
        self._image_keys: list[str] = []
        self._action: np.ndarray | None = None
        self._reward = np.zeros(cfg.capacity, np.float32)
        self._terminated = np.zeros(cfg.capacity, bool)
        self._truncated = np.zeros(cfg.capacity, bool)
        self._has_next = np.zeros(cfg.capacity, bool)   # the transition leaving this slot is complete
        self._is_last = np.zeros(cfg.capacity, bool)    # the episode ended at this observation
        self._ep_step = np.zeros(cfg.capacity, np.int64)
        self.written = 0          # slots ever written (absolute index of the next one)
        self.transitions = 0      # transitions ever completed
        self.episodes = 0
        self._open = False        # an episode is being written
        self._tree = SumTree(cfg.capacity) if cfg.prioritized else None
        self._max_priority = 1.0
        self._feature_fn: Callable[[np.ndarray], np.ndarray] | None = None
        self._feature_key = "pixels"
        self._features: np.ndarray | None = None
        self._pinned = False      # batches in page-locked memory (pin_batches)

    # ------------------------------------------------------------------ writing
    def __len__(self) -> int:
        """Stored slots (observations), at most ``capacity``."""
        return min(self.written, self.capacity)

    def _allocate(self, obs: dict[str, np.ndarray], action_dim: int | None) -> None:
        if not isinstance(obs, dict):
            raise TypeError(f"observations are dicts with the keys of se_robot.agents.obs, got {type(obs).__name__} "
                            "(a Gymnasium env's array observations: se_robot.envs.make_env(env_id=...) maps them)")
        for key, value in obs.items():
            value = np.asarray(value)
            if key == PIXELS:
                frame = newest_frame(value)
                self._arrays[key] = np.zeros((self.capacity, *frame.shape), np.uint8)
                self._image_keys.append(key)
            else:
                self._arrays[key] = np.zeros((self.capacity, *value.shape), np.float32)
        if action_dim is not None:
            self._action = np.zeros((self.capacity, action_dim), np.float32)

    def _write_obs(self, obs: dict[str, np.ndarray], ep_step: int) -> None:
        if set(obs) != set(self._arrays):
            raise KeyError(f"observation keys {sorted(obs)} differ from the buffer's {sorted(self._arrays)}")
        slot = self.written % self.capacity
        for key, value in obs.items():
            value = np.asarray(value)
            self._arrays[key][slot] = newest_frame(value) if key in self._image_keys else value
        self._has_next[slot] = self._is_last[slot] = False
        self._terminated[slot] = self._truncated[slot] = False
        self._reward[slot] = 0.0
        self._ep_step[slot] = ep_step
        if self._tree is not None:
            self._tree.set(slot, 0.0)
        if self._feature_fn is not None:
            self._store_features(np.array([slot]))
        self.written += 1

    def add_first(self, obs: dict[str, np.ndarray]) -> None:
        """Start an episode with its reset observation (an unfinished episode is closed as truncated)."""
        if not self._arrays:
            self._allocate(obs, None)
        if self._open:
            self._is_last[(self.written - 1) % self.capacity] = True
        self._write_obs(obs, 0)
        self._open = True
        self.episodes += 1

    def add(self, action: np.ndarray, reward: float, next_obs: dict[str, np.ndarray],
            terminated: bool, truncated: bool) -> None:
        """Complete the transition leaving the latest observation and store the next one."""
        if not self._open:
            raise RuntimeError("add() before add_first(): start each episode with its reset observation")
        action = np.asarray(action, np.float32).reshape(-1)
        if self._action is None:
            self._action = np.zeros((self.capacity, action.size), np.float32)
        prev = (self.written - 1) % self.capacity
        prev_step = int(self._ep_step[prev])
        self._write_obs(next_obs, prev_step + 1)
        self._action[prev] = action
        self._reward[prev] = reward
        self._terminated[prev] = bool(terminated)
        self._truncated[prev] = bool(truncated)
        self._has_next[prev] = True
        self.transitions += 1
        if self._tree is not None:
            self._tree.set(prev, self._max_priority ** self.cfg.alpha)
        if terminated or truncated:
            self._is_last[(self.written - 1) % self.capacity] = True
            self._open = False

    # ------------------------------------------------------------------ features
    def set_feature_fn(self, fn: Callable[[np.ndarray], np.ndarray] | None, key: str = "pixels",
                       chunk: int = 256) -> None:
        """Cache ``fn(frames uint8 (N, C, H, W)) -> float32 (N, F)`` once per stored frame.

        For frozen encoders: sampling then returns ``obs['features']`` (B, stack * F) instead of
        ``obs[key]``, so the encoder runs once per frame rather than once per sample.
        """
        self._feature_fn, self._feature_key, self._features = fn, key, None
        if fn is None or not self._arrays:
            return                      # computed from the first stored frame on
        if key not in self._image_keys:
            raise KeyError(f"set_feature_fn: key {key!r} is not a stored image (have {sorted(self._image_keys)})")
        n = len(self)
        for start in range(0, n, chunk):
            self._store_features(np.arange(start, min(n, start + chunk)))

    def _store_features(self, slots: np.ndarray) -> None:
        feats = self._compute_features(self._arrays[self._feature_key][slots])
        if self._features is None:
            self._features = np.zeros((self.capacity, feats.shape[-1]), np.float32)
        self._features[slots] = feats

    def _compute_features(self, frames: np.ndarray) -> np.ndarray:
        out = np.asarray(self._feature_fn(frames), np.float32)
        if out.ndim != 2 or out.shape[0] != frames.shape[0]:
            raise ValueError(f"feature fn returned shape {out.shape} for {frames.shape[0]} frames; expected (N, F)")
        return out

    # ------------------------------------------------------------------ sampling
    def _abs_of_slot(self, slots: np.ndarray) -> np.ndarray:
        last = self.written - 1
        return last - ((last - slots) % self.capacity)

    def _targets(self, start: np.ndarray) -> tuple[np.ndarray, ...]:
        """n-step return, bootstrap discount, bootstrap observation and validity for each start."""
        cap, gamma = self.capacity, self.cfg.discount
        lo = max(0, self.written - cap)
        s0 = start % cap
        ep_step = self._ep_step[s0]
        ok = self._has_next[s0] & (start - np.minimum(self.cfg.frame_stack - 1, ep_step) >= lo)
        ret = np.zeros(start.shape, np.float64)
        boot = np.ones(start.shape, np.float64)
        ended = np.zeros(start.shape, bool)
        active = ok.copy()
        cur = start.copy()
        for j in range(self.cfg.n_step):
            s = cur % cap
            if j > 0:
                stop = active & ~self._has_next[s]
                ok &= ~(stop & ~self._is_last[s])      # the window reaches an unwritten step
                active &= ~stop
            ret += np.where(active, gamma ** j * self._reward[s], 0.0)
            ended |= active & self._terminated[s]
            boot = np.where(active, gamma ** (j + 1), boot)
            cur = np.where(active, cur + 1, cur)
            active &= ~(self._terminated[s] | self._truncated[s])
        discount = np.where(ended, 0.0, boot)
        return ret.astype(np.float32), discount.astype(np.float32), cur, ok

    def _obs_shapes(self) -> dict[str, tuple[tuple[int, ...], Any]]:
        """Per-row shape and dtype of each sampled observation entry."""
        k = self.cfg.frame_stack
        shapes = {}
        for key, array in self._arrays.items():
            if key in self._image_keys and self._features is not None and key == self._feature_key:
                shapes["features"] = ((k * self._features.shape[1],), np.float32)
            elif key in self._image_keys:
                c, h, w = array.shape[1:]
                shapes[key] = ((k * c, h, w), np.uint8)
            else:
                shapes[key] = (array.shape[1:], array.dtype)
        return shapes

    def pin_batches(self, enabled: bool = True) -> None:
        """Gather batches into page-locked (pinned) host memory from now on (needs torch with CUDA).

        Why: a CUDA learner copies every batch to the GPU. From pinned memory that copy is a DMA the
        host need not wait for; from ordinary memory the driver first stages it through a pinned
        buffer of its own (16 MB of pixels: 0.32 against 1.37 ms, measured on an H100's host).
        Gathering straight into pinned memory costs nothing extra, where copying a finished batch
        into it would cost more than it saves. The memory comes from torch's caching host
        allocator, so page-locking happens only for the first few batches. A batch's memory is
        reused once the batch is dropped: its reader must finish copying first (DrQ-v2's update
        reads its metrics back before returning, which waits for the copies).
        """
        self._pinned = enabled

    def _empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        if not self._pinned:
            return np.empty(shape, dtype)
        import torch

        torch_dtype = torch.from_numpy(np.empty(0, dtype)).dtype
        return torch.empty(shape, dtype=torch_dtype, pin_memory=True).numpy()

    def _empty_batch(self, batch_size: int) -> Batch:
        def obs() -> dict[str, np.ndarray]:
            return {key: self._empty((batch_size, *shape), dtype) for key, (shape, dtype) in self._obs_shapes().items()}
        batch = Batch(obs=obs(), action=self._empty((batch_size, self._action.shape[1]), np.float32),
                      reward=self._empty((batch_size,), np.float32), discount=self._empty((batch_size,), np.float32),
                      next_obs=obs(), weights=self._empty((batch_size,), np.float32),
                      indices=self._empty((batch_size,), np.int64), is_demo=self._empty((batch_size,), bool))
        batch.weights[:] = 1.0
        batch.is_demo[:] = False
        return batch

    def _obs_into(self, out: dict[str, np.ndarray], rows: slice, absolute: np.ndarray) -> None:
        """Gather stacks straight into the batch arrays (no intermediate copies)."""
        cap, k, b = self.capacity, self.cfg.frame_stack, len(absolute)
        slots = absolute % cap
        back = np.arange(k - 1, -1, -1)                                   # oldest frame first
        stack_slots = (absolute[:, None] - np.minimum(back[None, :], self._ep_step[slots][:, None])) % cap
        for key, array in self._arrays.items():
            if key in self._image_keys:
                if self._features is not None and key == self._feature_key:
                    dest = out["features"][rows].reshape(b, k, -1)
                    np.take(self._features, stack_slots, axis=0, out=dest, mode="clip")
                    continue
                dest = out[key][rows].reshape(b, k, *array.shape[1:])    # (B, k, C, H, W) view
                np.take(array, stack_slots, axis=0, out=dest, mode="clip")
            else:
                np.take(array, slots, axis=0, out=out[key][rows], mode="clip")

    def _draw(self, batch_size: int, max_rounds: int = 64) -> np.ndarray:
        """Absolute indices of sampleable transitions (uniform, or by priority with PER)."""
        if self.transitions == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        lo = max(0, self.written - self.capacity)
        chosen = np.empty(0, np.int64)
        for _ in range(max_rounds):
            need = batch_size - chosen.size
            if need <= 0:
                break
            if self._tree is not None:
                cand = self._abs_of_slot(self._tree.sample(need, self.rng))
            else:
                cand = self.rng.integers(lo, self.written - 1, size=need) if self.written - 1 > lo else np.full(need, lo)
            chosen = np.concatenate([chosen, cand[self._targets(cand)[3]]])
        if chosen.size < batch_size:
            raise ValueError(f"replay buffer has too few sampleable transitions ({self.transitions} added, "
                             f"n_step={self.cfg.n_step}, frame_stack={self.cfg.frame_stack})")
        return chosen[:batch_size]

    def _fill(self, batch: Batch, rows: slice, chosen: np.ndarray) -> None:
        reward, discount, boot_abs, _ = self._targets(chosen)
        slots = chosen % self.capacity
        batch.reward[rows], batch.discount[rows], batch.indices[rows] = reward, discount, slots
        np.take(self._action, slots, axis=0, out=batch.action[rows], mode="clip")
        if self._tree is not None:
            prob = self._tree.get(slots) / self._tree.total
            stored = np.count_nonzero(self._has_next[:len(self)])
            w = (stored * prob) ** (-self.cfg.beta)
            batch.weights[rows] = w / w.max()       # normalised within this buffer's rows
        self._obs_into(batch.obs, rows, chosen)
        self._obs_into(batch.next_obs, rows, boot_abs)

    def sample(self, batch_size: int) -> Batch:
        """``batch_size`` transitions (uniform, or proportional to priority with PER)."""
        chosen = self._draw(batch_size)
        batch = self._empty_batch(batch_size)
        self._fill(batch, slice(0, batch_size), chosen)
        return batch

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """PER: new priorities (|td| + eps)^alpha for sampled slots; a no-op without PER."""
        if self._tree is None:
            return
        p = np.abs(np.asarray(td_errors, np.float64)).reshape(-1) + self.cfg.priority_eps
        indices = np.asarray(indices, np.int64).reshape(-1)
        live = self._has_next[indices]           # a slot overwritten since sampling keeps 0
        self._max_priority = max(self._max_priority, float(p.max(initial=0.0)))
        self._tree.set(indices[live], p[live] ** self.cfg.alpha)

    # ------------------------------------------------------------------ persistence
    _PER_SLOT = ("_reward", "_terminated", "_truncated", "_has_next", "_is_last", "_ep_step")

    def save(self, directory: str | Path) -> None:
        """Write the buffer to ``directory`` atomically (``se_robot.agents.replay_io``)."""
        from se_robot.agents.replay_io import save_replay

        save_replay(self, directory)

    @classmethod
    def load(cls, directory: str | Path) -> "ReplayBuffer":
        """A buffer written by ``save``, every array checked first (``se_robot.agents.replay_io``)."""
        from se_robot.agents.replay_io import load_replay

        return load_replay(directory, cls)


def sample_mixed(online: ReplayBuffer, demos: ReplayBuffer | None, batch_size: int,
                 demo_fraction: float) -> Batch:
    """One batch with exactly ``round(batch_size * demo_fraction)`` demo rows first (RLPD/SERL)."""
    if not 0.0 <= demo_fraction <= 1.0:
        raise ValueError(f"demo_fraction must be in [0, 1], got {demo_fraction}")
    n_demo = int(round(batch_size * demo_fraction)) if demos is not None and demos.transitions else 0
    n_online = batch_size - n_demo
    if n_demo == 0:
        return online.sample(batch_size)
    if n_online == 0:
        batch = demos.sample(batch_size)
        batch.is_demo[:] = True
        return batch
    if online._obs_shapes() != demos._obs_shapes() or online._action.shape[1] != demos._action.shape[1]:
        raise KeyError(f"demo observations {demos._obs_shapes()} differ from online ones {online._obs_shapes()}")
    demo_rows, online_rows = demos._draw(n_demo), online._draw(n_online)
    batch = online._empty_batch(batch_size)
    demos._fill(batch, slice(0, n_demo), demo_rows)
    online._fill(batch, slice(n_demo, batch_size), online_rows)
    batch.is_demo[:n_demo] = True
    return batch
