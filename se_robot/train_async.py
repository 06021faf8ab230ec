"""The background learner of the single-process loop (``async_learner: true``).

Why: a real arm runs at its control rate (20 Hz) whatever the learner does, while an MBPO or
DrQ-v2 update on a CPU takes longer than a control period. The synchronous loop acts only between
updates, so on the arm it would overrun every tick. With ``async_learner`` the loop acts at the
env's pace from a policy copy, and :class:`BackgroundLearner` updates the agent in a thread.

Who owns what (no data race on anything trained or sampled):

- the learner thread owns the agent and the replay/demo buffers: the loop hands it transitions
  through :class:`TransitionFeed` (copied at once, applied by the learner before each update);
- the loop acts with its own agent built from the same config (``acting``), and between steps
  loads the newest snapshot of ``agent.acting_state_dict()`` (policy weights only; cloned by the
  learner thread after every ``weights_every`` updates, so the copy is never half-written);
- a checkpoint pauses the learner (:meth:`BackgroundLearner.paused`) between two updates.

The update schedule is the synchronous loop's, as in the ROS learner (``nodes/learner_node.py``):
updates begin at ``learning_starts`` transitions and never run ahead of the data, at most one
``update()`` per transition (each is the agent's ``utd_ratio`` gradient steps), and update ``k``
is told the env step the synchronous loop would make it at (:func:`update_step`), so step-keyed
schedules (MBPO's model refits, DrQ-v2's ``update_every_steps``) see the same sequence. When the
learner is slower than the arm it falls behind (``learner/updates_owed``); the achieved
``learner/updates_per_step`` is logged. Torch ops release the GIL, so a thread is enough for the
update to overlap the env step (benchmarks/async_learner.py measures the control period with it).
While the thread runs, the interpreter's switch interval is :data:`SWITCH_INTERVAL_S`: the acting
thread takes the GIL back after every sleep, torch op and MuJoCo call of a step, each time waiting
up to one interval while the learner's Python holds it, and Python's default (5 ms) is a tenth of a
20 Hz period.
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from se_robot.robot import request_realtime

SWITCH_INTERVAL_S = 0.0005   # the longest the acting thread waits for the GIL each time it asks


def updates_owed(transitions: int, learning_starts: int, updates: int, per_transition: float = 1.0) -> int:
    """Updates the data allows and not yet made: ``per_transition`` per transition from the
    ``learning_starts``-th one on (the synchronous loop makes one at that transition)."""
    if transitions < learning_starts:
        return 0
    return max(0, int(per_transition * (transitions - learning_starts + 1)) - updates)


def update_step(learning_starts: int, updates: int, per_transition: float = 1.0) -> int:
    """The env step at which the synchronous loop makes update number ``updates`` (from 0)."""
    return learning_starts + int(updates / per_transition)


def clone_state(state: Any) -> Any:
    """A deep copy of a (nested) state dict: tensors and arrays cloned, the rest as is."""
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, np.ndarray):
        return state.copy()
    if isinstance(state, dict):   # OrderedDict (a module's state_dict) stays one
        return type(state)((k, clone_state(v)) for k, v in state.items())
    if isinstance(state, (list, tuple)):
        return type(state)(clone_state(v) for v in state)
    return state


class TransitionFeed:
    """Stands in for a replay buffer on the acting side: ``add_first`` / ``add`` are queued
    (observations copied, since an env may reuse its arrays) and applied by :meth:`drain`, which
    only the buffer's owner calls."""

    def __init__(self, buffer: Any, wake: threading.Event):
        self.buffer, self._wake = buffer, wake
        self._pending: collections.deque = collections.deque()   # appends and pops are thread-safe
        self.added = 0   # transitions given (``add`` calls), counted on the acting side

    def add_first(self, obs: dict[str, np.ndarray]) -> None:
        self._pending.append(("add_first", (_copy_obs(obs),)))

    def add(self, action: np.ndarray, reward: float, next_obs: dict[str, np.ndarray],
            terminated: bool, truncated: bool) -> None:
        self._pending.append(("add", (np.array(action, copy=True), reward, _copy_obs(next_obs),
                                      terminated, truncated)))
        self.added += 1
        self._wake.set()

    def __len__(self) -> int:
        return len(self._pending)

    def drain(self) -> int:
        """Apply every queued call to the buffer, in order; how many."""
        applied = 0
        while self._pending:
            name, args = self._pending.popleft()
            getattr(self.buffer, name)(*args)
            applied += 1
        return applied


def _copy_obs(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.array(v, copy=True) for k, v in obs.items()}


class BackgroundLearner:
    """Runs ``agent.update`` in a thread at most once per transition; publishes acting weights.

    ``updates`` is the count of updates made so far (a resumed run's, from its checkpoint).
    :meth:`start` / :meth:`stop` bracket a training run; :meth:`check` re-raises in the caller
    what ended the thread, so the loop stops on it as on its own error.
    """

    def __init__(self, agent: Any, replay: Any, demos: Any | None, learning_starts: int,
                 weights_every: int = 1, updates: int = 0):
        self.agent, self.replay, self.demos = agent, replay, demos
        self.learning_starts, self.weights_every = learning_starts, max(1, weights_every)
        self._wake = threading.Event()             # set when a transition arrives, and on stop
        self.replay_feed = TransitionFeed(replay, self._wake)
        self.demo_feed = TransitionFeed(demos, self._wake) if demos is not None else None
        self._given_before = replay.transitions    # online transitions in the replay before this run
        self.updates = updates
        self.metrics: dict[str, float] = {}        # the last update's (replaced whole, never mutated)
        self.version = 0                           # of the newest acting weights snapshot
        self.error: BaseException | None = None
        self._snapshot: tuple[int, dict[str, Any]] | None = None
        self._lock = threading.Lock()              # held across each update; a checkpoint takes it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._switch_interval = sys.getswitchinterval()   # the process's, given back by stop()
        self._publish()                            # the acting copy starts from the agent's weights

    # ------------------------------------------------------------------ acting side
    def refresh(self, acting: Any, version: int) -> int:
        """Load the newest snapshot into ``acting`` when it is newer than ``version``; the version it holds."""
        snapshot = self._snapshot
        if snapshot is None or snapshot[0] <= version:
            return version
        acting.load_acting_state_dict(snapshot[1])
        return snapshot[0]

    @property
    def given(self) -> int:
        """Online transitions given so far: in the replay or queued for it."""
        return self._given_before + self.replay_feed.added

    def owed(self) -> int:
        """Updates the transitions given so far allow and the learner has not made yet."""
        return updates_owed(self.given, self.learning_starts, self.updates)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No update runs inside; the buffers hold every transition given so far (a checkpoint)."""
        with self._lock:
            self._drain()
            yield

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch_interval, SWITCH_INTERVAL_S))
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="background-learner", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Ask the thread to end after its current update and wait for it."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise RuntimeError(f"the background learner did not stop within {timeout_s:.0f} s")
            self._thread = None
            sys.setswitchinterval(self._switch_interval)

    def check(self) -> None:
        """Raise, in the caller's thread, the error that ended the learner thread."""
        if self.error is not None:
            raise RuntimeError(f"the background learner failed: {self.error!r}") from self.error

    def flush(self) -> None:
        """Apply every queued transition to the buffers; only while the thread is stopped or paused."""
        self._drain()

    # ------------------------------------------------------------------ learner thread
    def _drain(self) -> None:
        self.replay_feed.drain()
        if self.demo_feed is not None:
            self.demo_feed.drain()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._wake.clear()   # before the check: a transition given after it wakes the wait below
                with self._lock:
                    self._drain()
                    owed = updates_owed(self.replay.transitions, self.learning_starts, self.updates)
                    if owed > 0:
                        self._update()
                if owed <= 1:   # nothing (more) to learn from: wait for data instead of spinning
                    self._wake.wait(0.5)
        except Exception as e:  # noqa: BLE001  (handed to the loop's thread by check())
            self.error = e

    def _update(self) -> None:
        at = update_step(self.learning_starts, self.updates)
        self.metrics = self.agent.update(self.replay, self.demos, at) or self.metrics
        self.updates += 1
        if self.updates % self.weights_every == 0:
            self._publish()

    def _publish(self) -> None:
        self.version += 1
        self._snapshot = (self.version, clone_state(self.agent.acting_state_dict()))


def acting_copy(algo: str, env: Any, agent: Any, agent_config: dict, device: str, seed: int) -> Any:
    """An agent of the same config to act with: ``agent``'s policy weights, its own random streams
    (``seed``), so acting never reads weights the learner is writing nor draws from its generators."""
    from se_robot.agents.registry import make_agent

    acting = make_agent(algo, env.observation_space, env.action_space, agent_config, device, seed)
    acting.load_acting_state_dict(agent.acting_state_dict())
    return acting


@contextlib.contextmanager
def acting_priority(priority: int, note: Callable[[str], None]) -> Iterator[None]:
    """The calling (acting) thread under SCHED_FIFO at ``priority`` for the block, normal after.

    Why: with the learner in a thread, the acting thread only steps and sleeps, and at normal
    priority the learner, the renderer and DDS threads delay its wake-ups by milliseconds on a busy
    machine (``docs/benchmarks.md``, "Asynchronous learner"). Threads started inside the block
    inherit the policy, so the learner thread is started before it. ``note`` gets why not, when
    the system refuses (the block then runs at normal priority)."""
    problem = request_realtime(priority)
    if problem is not None:
        note(f"rt_priority: {problem}")
    try:
        yield
    finally:
        if priority > 0 and problem is None:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


class AsyncActing:
    """The training loop's side of a background learner (``Trainer`` mixes it in).

    Expects ``cfg``, ``agent``, ``replay``, ``demos``, ``acting`` (the copy), ``learner`` (None
    while no thread runs), ``learner_updates`` and ``_acting_version`` on the instance.
    """

    cfg: Any
    agent: Any
    replay: Any
    demos: Any
    acting: Any
    learner: BackgroundLearner | None
    learner_updates: int
    _acting_version: int

    def _buffer_in(self, demos: bool = False) -> Any:
        """Where the loop writes transitions: the buffer, or with a background learner its feed."""
        if self.learner is None:
            return self.demos if demos else self.replay
        return self.learner.demo_feed if demos else self.learner.replay_feed

    def _refresh_acting(self) -> None:
        """Async: the acting copy takes the learner's newest policy weights (between steps only)."""
        if self.learner is not None:
            self.learner.check()
            self._acting_version = self.learner.refresh(self.acting, self._acting_version)

    def _start_learner(self) -> None:
        self.learner = BackgroundLearner(self.agent, self.replay, self.demos, self.cfg.learning_starts,
                                         self.cfg.async_weights_every, updates=self.learner_updates)
        self._acting_version = 0
        self._refresh_acting()
        self.learner.start()

    def _stop_learner(self) -> None:
        """Stop the thread after its update; the buffers take what is queued, the copy the last weights."""
        learner, self.learner = self.learner, None
        if learner is None:
            return
        learner.stop()
        learner.flush()
        self.learner_updates = learner.updates
        self._acting_version = learner.refresh(self.acting, self._acting_version)

    def _wait_for_learner(self) -> None:
        """Async, at an episode's end: wait while the learner owes more than ``async_max_backlog`` updates."""
        learner, backlog = self.learner, self.cfg.async_max_backlog
        while learner is not None and backlog > 0 and learner.owed() > backlog:
            learner.check()
            time.sleep(0.02)

    def _learner_metrics(self) -> dict[str, float]:
        """Async: the last update's metrics and how far the learner keeps up with the data."""
        learner = self.learner
        if learner is None or learner.given < self.cfg.learning_starts:
            return {}
        updates, owed = learner.updates, learner.owed()
        return {**learner.metrics, "learner/updates": float(updates), "learner/updates_owed": float(owed),
                "learner/updates_per_step": updates / max(1, updates + owed),   # of the synchronous loop's
                "learner/weights_version": float(self._acting_version)}
