"""Per-actor episode assembly on the learner side (pure: no rclpy).

N actors send batches of consecutive steps; the learner has one replay buffer that takes one
episode at a time (``add_first`` then ``add``). Each actor (one wire stream) therefore gets its
own :class:`_ActorEpisode` writer that holds its open episode and commits it to replay only
when the episode ends, so batches from different actors that interleave on the wire never mix
episodes, and an episode whose actor died half way never reaches replay.

Every batch is validated before it touches any state (:func:`validate_batch`: keys, shapes,
dtypes, finite values, episode structure) and checked against its actor's sequence numbers
(duplicate, gap, out of order). A refused batch is counted in ``rejected[reason]``, never
raised: a hostile or broken actor cannot stop the learner. Memory is bounded: at most
``max_actors`` writers (the least recently heard is dropped) and ``max_episode_steps`` held
steps per writer (a longer episode is dropped and counted).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from se_robot.nodes.wire import WireError

STEP_KEYS = ("action", "reward", "terminated", "truncated", "start")


class Replay(Protocol):
    def add_first(self, obs: dict[str, np.ndarray]) -> None: ...
    def add(self, action: np.ndarray, reward: float, next_obs: dict[str, np.ndarray], terminated: bool,
            truncated: bool) -> None: ...


@dataclass(frozen=True)
class BatchSpec:
    """What a valid batch holds: observation keys with their per-step shape and dtype, the action width."""

    obs: dict[str, tuple[tuple[int, ...], np.dtype]]
    action_dim: int
    max_steps: int = 10_000

    @classmethod
    def from_spaces(cls, obs_space: Any, act_space: Any, max_steps: int = 10_000) -> "BatchSpec":
        return cls({k: (tuple(s.shape), np.dtype(s.dtype)) for k, s in obs_space.spaces.items()},
                   int(np.prod(act_space.shape)), max_steps)


def _bad(message: str, reason: str = "malformed") -> WireError:
    return WireError(message, reason)


def _check_obs(group: Any, name: str, spec: BatchSpec, rows: int) -> None:
    if not isinstance(group, dict) or set(group) != set(spec.obs):
        keys = sorted(group) if isinstance(group, dict) else type(group).__name__
        raise _bad(f"{name}: keys {keys}, expected {sorted(spec.obs)}")
    for key, (shape, dtype) in spec.obs.items():
        arr = group[key]
        if not isinstance(arr, np.ndarray) or arr.shape != (rows, *shape) or arr.dtype != dtype:
            got = (getattr(arr, "shape", None), getattr(arr, "dtype", None))
            raise _bad(f"{name}/{key}: shape/dtype {got}, expected {((rows, *shape), dtype)}", "bad_shape")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise _bad(f"{name}/{key} holds NaN or inf", "nonfinite")


def validate_batch(batch: dict[str, Any], spec: BatchSpec) -> int:
    """Raise :class:`WireError` unless ``batch`` is a well-formed run of steps; its step count.

    Episode structure: ``start[i]`` only at 0 or right after a terminal step, a terminal step
    only last or right before a start, and one ``first`` observation per start.
    """
    allowed = {*STEP_KEYS, "next_obs", "first", "weights_version"}
    if not isinstance(batch, dict) or set(batch) - allowed or set(STEP_KEYS) - set(batch) or "next_obs" not in batch:
        raise _bad(f"batch keys {sorted(batch) if isinstance(batch, dict) else batch!r}, expected "
                   f"{sorted(STEP_KEYS)} + next_obs [+ first, weights_version]")
    for key in STEP_KEYS:
        if not isinstance(batch[key], np.ndarray):
            raise _bad(f"{key} is a group, not an array")
    n = batch["reward"].shape[0] if batch["reward"].ndim == 1 else -1
    if not 1 <= n <= spec.max_steps:
        raise _bad(f"reward: shape {batch['reward'].shape}, expected (T,) with 1 <= T <= {spec.max_steps}",
                   "bad_shape")
    want = {"action": ((n, spec.action_dim), "f"), "reward": ((n,), "f"), "terminated": ((n,), "b"),
            "truncated": ((n,), "b"), "start": ((n,), "b")}
    for key, (shape, kind) in want.items():
        arr = batch[key]
        if arr.shape != shape or arr.dtype.kind != kind or (kind == "f" and arr.dtype != np.float32):
            raise _bad(f"{key}: shape {arr.shape} dtype {arr.dtype}, expected {shape} "
                       f"{'float32' if kind == 'f' else 'bool'}", "bad_shape")
        if kind == "f" and not np.isfinite(arr).all():
            raise _bad(f"{key} holds NaN or inf", "nonfinite")
    _check_obs(batch["next_obs"], "next_obs", spec, n)
    starts = int(batch["start"].sum())
    if starts:
        _check_obs(batch.get("first"), "first", spec, starts)
    elif "first" in batch:
        raise _bad("first observations without an episode start")
    version = batch.get("weights_version")
    if version is not None and (not isinstance(version, (np.ndarray, np.generic)) or version.shape != ()
                                or version.dtype.kind != "i"):
        raise _bad("weights_version must be an integer scalar")
    done = batch["terminated"] | batch["truncated"]
    if bool((batch["start"][1:] != done[:-1]).any()):
        raise _bad("an episode starts without the previous one ending, or ends mid-batch without a new start",
                   "episode_order")
    return n


@dataclass
class _ActorEpisode:
    """One actor's writer: its next expected sequence number and its open episode."""

    next_seq: int
    last_heard: int
    first: dict[str, np.ndarray] | None = None
    steps: list[tuple] = field(default_factory=list)


class EpisodeAssembler:
    """Turns validated batches from many actors into whole episodes in one replay buffer."""

    def __init__(self, replay: Replay, spec: BatchSpec, max_actors: int = 64, max_episode_steps: int = 100_000):
        self.replay, self.spec = replay, spec
        self.max_actors, self.max_episode_steps = max_actors, max_episode_steps
        self._actors: dict[int, _ActorEpisode] = {}
        self._clock = 0
        self.rejected: Counter[str] = Counter()
        self.dropped_episodes: Counter[str] = Counter()
        self.transitions = 0          # steps committed to replay
        self.episodes = 0
        self.weights_versions: dict[int, int] = {}   # actor -> the version it last acted with (actors held)

    @property
    def open_steps(self) -> int:
        return sum(len(a.steps) for a in self._actors.values())

    def add(self, actor: int, seq: int, batch: dict[str, Any]) -> int:
        """Take one batch; the number of transitions committed to replay (0 if held or refused)."""
        try:
            validate_batch(batch, self.spec)
        except WireError as e:
            self.rejected[e.reason] += 1
            raise
        self._clock += 1
        state = self._actors.get(actor)
        if state is None:
            if not bool(batch["start"][0]):
                self.rejected["mid_episode"] += 1
                raise _bad(f"actor {actor:08x}: first batch (seq {seq}) starts mid-episode", "mid_episode")
            state = self._actors[actor] = _ActorEpisode(seq, self._clock)
            self._bound_actors()
        if seq < state.next_seq:
            self.rejected["duplicate"] += 1
            raise _bad(f"actor {actor:08x}: batch {seq} already received (expected {state.next_seq})", "duplicate")
        if seq > state.next_seq:
            self.rejected["gap"] += 1   # the missing batches are lost; so is the episode they were part of
            self._drop_open(state, "gap")
        state.next_seq, state.last_heard = seq + 1, self._clock
        if state.first is None and not bool(batch["start"][0]):
            self.rejected["mid_episode"] += 1
            raise _bad(f"actor {actor:08x}: batch {seq} continues an episode that was dropped", "mid_episode")
        if "weights_version" in batch:
            self.weights_versions[actor] = int(batch["weights_version"])
        return self._take(state, batch)

    def _take(self, state: _ActorEpisode, batch: dict[str, Any]) -> int:
        committed, k = 0, 0
        for i in range(len(batch["reward"])):
            if batch["start"][i]:
                if state.first is not None:
                    self._drop_open(state, "restarted")
                state.first = {key: v[k] for key, v in batch["first"].items()}
                k += 1
            state.steps.append((batch["action"][i], float(batch["reward"][i]),
                                {key: v[i] for key, v in batch["next_obs"].items()},
                                bool(batch["terminated"][i]), bool(batch["truncated"][i])))
            if state.steps[-1][3] or state.steps[-1][4]:
                committed += self._commit(state)
            elif len(state.steps) > self.max_episode_steps:
                self._drop_open(state, "too_long")
        return committed

    def _commit(self, state: _ActorEpisode) -> int:
        assert state.first is not None
        self.replay.add_first(state.first)
        for step in state.steps:
            self.replay.add(*step)
        n = len(state.steps)
        self.transitions += n
        self.episodes += 1
        state.first, state.steps = None, []
        return n

    def _drop_open(self, state: _ActorEpisode, reason: str) -> None:
        if state.first is not None:
            self.dropped_episodes[reason] += 1
        state.first, state.steps = None, []

    def _bound_actors(self) -> None:
        while len(self._actors) > self.max_actors:
            quiet = min(self._actors, key=lambda a: self._actors[a].last_heard)
            self._drop_open(self._actors.pop(quiet), "actor_evicted")
            self.weights_versions.pop(quiet, None)
