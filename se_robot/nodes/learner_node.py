"""learner_node: trains an agent from experience gathered over ROS 2.

``mode: local`` builds its env with ``se_robot.envs.make_env`` (over ROS, or the in-process twin
with ``env_backend: sim``) and runs the usual training loop (``se_robot.train.Trainer``: any
``--algo``, evaluation, checkpoints) in this process; every metric the loop logs is also
published on ``learner/metrics``.

``mode: split`` learns from N actor_nodes elsewhere (on robot computers): transition batches
arrive on ``learner/transitions``; each actor's episodes are assembled apart and reach replay
whole (:mod:`se_robot.nodes.assembly`), and any malformed, partial, duplicate or out-of-order
batch is refused and counted (``learner/rejected_*`` on ``learner/metrics``), never fatal. The
learner updates asynchronously, ``updates_per_transition`` per transition taken in at most, and
the agent's acting weights (versioned) go out on ``learner/policy_weights`` every
``weights_period_steps``, once the updates owed to those steps are done.
If the learner thread dies, the node shuts down and the process exits 1 so a supervisor
(launch's ``respawn``, systemd) restarts it. Checkpoints
(``se_robot.checkpoint``) are written every ``checkpoint_period_steps`` and at the end. Wire
format and QoS: :mod:`se_robot.nodes.learning`.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import torch
from rclpy.node import Node
from std_msgs.msg import String

from se_robot import ros_params as names
from se_robot.logger import Logger
from se_robot.nodes import assembly, learning, wire
from se_robot.nodes.params import NodeParams
from se_robot.nodes.runtime import DIAGNOSTICS_QOS, run_node
from se_robot.ros_params import EnvParams, LearnerParams


class _PublishingLogger:
    """The loop's logger, also publishing each metrics dict on ``learner/metrics``."""

    def __init__(self, inner: Logger, publish: Callable[[dict[str, Any]], None]):
        self.inner, self.publish = inner, publish

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.inner.log(metrics, step)
        self.publish({**metrics, "learner/step": step})

    def close(self) -> None:
        self.inner.close()


class LearnerNode(Node):
    def __init__(self, node_name: str = "learner_node", **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self.params = NodeParams(self, (LearnerParams, EnvParams))
        p, e = self.params.get(LearnerParams), self.params.get(EnvParams)
        self.p, self.e = p, e
        self.metrics_pub = self.create_publisher(String, names.METRICS, DIAGNOSTICS_QOS)
        self.run_dir = Path(p.checkpoint_dir)
        self.cfg = learning.train_config(p.train_config, p.train_overrides, e, p.algo, p.seed,
                                         {"steps": p.total_steps, "learning_starts": p.learning_starts,
                                          "checkpoint_every": p.checkpoint_period_steps})
        self.done = threading.Event()
        self.error: str | None = None
        self.exit_code = 0   # run_node's exit status: non-zero once the learner thread has died
        self.counters = {"learner/transitions": 0, "learner/updates": 0, "learner/updates_owed": 0,
                         "learner/weights_version": 0, "learner/batches": 0}
        target = self._run_local if p.mode == "local" else self._run_split
        if p.mode == "split":
            self._queue: queue.Queue = queue.Queue(maxsize=1024)
            self._payload_rejected: Counter[str] = Counter()
            self._weights = learning.ChunkPublisher(self, names.WEIGHTS, wire.KIND_WEIGHTS, p.chunk_bytes,
                                                    weights=True)
            reassembler = wire.Reassembler(max_pending=4 * p.max_actors, max_message_bytes=p.max_bytes_in_flight,
                                           max_bytes_in_flight=p.max_bytes_in_flight,
                                           max_age_s=p.max_partial_age_s, max_streams=4 * p.max_actors)
            self._transitions = learning.ChunkSubscriber(self, names.TRANSITIONS, self._on_batch,
                                                         reassembler=reassembler)
        self._worker = threading.Thread(target=self._guard, args=(target,), name="learner", daemon=True)
        self._worker.start()

    def publish_metrics(self, metrics: dict[str, Any]) -> None:
        learning.publish_metrics(self.metrics_pub, {**self.counters, **metrics})

    def _guard(self, target: Any) -> None:
        try:
            target()
        except Exception as e:  # noqa: BLE001 - report, then take the node down so a supervisor restarts it
            if not self.context.ok():   # shut down (Ctrl-C) under a running update: not a failure
                self.get_logger().info(f"learner stopped by shutdown ({type(e).__name__})")
                return
            self.error = f"{type(e).__name__}: {e}"
            self.exit_code = 1
            self.get_logger().error(f"learner stopped: {self.error}\n{traceback.format_exc()}")
            self.publish_metrics({"learner/error": self.error})
            self.context.try_shutdown()   # ends run_node's spin loop; run_node returns exit_code
        finally:
            self.done.set()

    # ------------------------------------------------------------------ local
    def _run_local(self) -> None:
        from se_robot.train import build_trainer

        env = learning.make_node_env(self.e, self.cfg)
        try:
            trainer = build_trainer(self.cfg, self.run_dir, envs=(env, env))
            trainer.logger = _PublishingLogger(trainer.logger, self.publish_metrics)
            result = trainer.train()
            self.publish_metrics({**result, "learner/finished": 1})
        finally:
            env.close()

    # ------------------------------------------------------------------ split
    def _on_batch(self, header: wire.ChunkHeader, payload: bytes) -> None:
        """Executor thread: decode only; the learner thread validates and assembles (it owns replay)."""
        try:
            batch = wire.decode_arrays(payload)
        except wire.WireError as e:
            self._payload_rejected[e.reason] += 1
            self.get_logger().warning(f"bad transition batch {header.seq}: {e}", throttle_duration_sec=2.0)
            return
        try:
            self._queue.put_nowait((header.stream_id, header.seq, batch))
        except queue.Full:
            self._payload_rejected["learner_behind"] += 1
            self.get_logger().warning("learner is behind: dropped a transition batch", throttle_duration_sec=2.0)

    def _diagnostics(self) -> dict[str, Any]:
        """Every refusal by reason: chunks, payloads, batches, and episodes dropped half way."""
        asm, reasm = self._assembler, self._transitions.reassembler
        return {**learning.counter_metrics("learner/rejected_chunks", reasm.rejected),
                **learning.counter_metrics("learner/dropped_partials", reasm.dropped),
                **learning.counter_metrics("learner/rejected_batches", asm.rejected + self._payload_rejected),
                **learning.counter_metrics("learner/dropped_episodes", asm.dropped_episodes),
                "learner/bytes_in_flight": reasm.bytes_in_flight, "learner/open_steps": asm.open_steps,
                "learner/actors": len(asm.weights_versions),
                "learner/oldest_acting_version": min(asm.weights_versions.values(), default=0)}

    def _ingest(self, timeout_s: float) -> int:
        """Move every batch waiting (after up to ``timeout_s`` for the first) into the assembler."""
        taken = 0
        while True:
            try:
                actor, seq, batch = self._queue.get(timeout=timeout_s) if taken == 0 else self._queue.get_nowait()
            except queue.Empty:
                return taken
            taken += 1
            timeout_s = 0.0
            try:
                self._assembler.add(actor, seq, batch)
                self.counters["learner/batches"] += 1
            except wire.WireError as e:
                self.get_logger().warning(f"rejected batch {seq} of actor {actor:08x}: {e}",
                                          throttle_duration_sec=2.0)

    def _run_split(self) -> None:
        from se_robot.train import make_learner, seed_everything
        from se_robot.train_async import update_step

        cfg, p = self.cfg, self.p
        self.run_dir.mkdir(parents=True, exist_ok=True)   # an unwritable run dir fails now, not at the checkpoint
        seed_everything(cfg.seed)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        # the actors' env on the twin: its spaces and task build the agent exactly as the local loop does
        # (demos, MBPO's task reward for model rollouts); nothing is stepped
        twin = learning.make_node_env(self.e, cfg, "sim")
        try:
            agent, replay, demos = make_learner(cfg, twin)
            spec = assembly.BatchSpec.from_spaces(twin.observation_space, twin.action_space)
        finally:
            twin.close()
        self._assembler = assembly.EpisodeAssembler(replay, spec, max_actors=p.max_actors)
        step, updates, last_metrics = 0, 0, {}
        next_ckpt, next_weights, next_report = p.checkpoint_period_steps, p.weights_period_steps, 0.0
        published = 0   # the env step the updates of the last published weights had reached
        self._publish_weights(agent, step)  # actors start from the learner's initial policy
        while not self.done.is_set():
            # as the local loop: updates begin at learning_starts transitions, none owed for those before
            ready = replay.transitions >= cfg.learning_starts
            owed = int(p.updates_per_transition * (step - cfg.learning_starts + 1)) - updates if ready else 0
            if step < p.total_steps:   # past total_steps: only the updates owed to the data taken in remain
                self._ingest(0.0 if owed > 0 else 0.2)
                step = self._assembler.transitions
            if owed > 0:   # one update, then look for data again: acting never waits for learning
                # the env step the loop would make this update at: step-keyed schedules (DrQ-v2's
                # update_every_steps, MBPO's refits) see the loop's sequence, not bursts at one step
                at = update_step(cfg.learning_starts, updates, p.updates_per_transition)
                last_metrics = agent.update(replay, demos, at) or last_metrics
                updates += 1
            behind = max(0, int(p.updates_per_transition * (step - cfg.learning_starts + 1)) - updates) \
                if replay.transitions >= cfg.learning_starts else 0
            self.counters.update({"learner/transitions": step, "learner/updates": updates,
                                  "learner/updates_owed": behind})
            # weights go out once the updates owed to the data that crossed the period are done (the
            # policy that learned from it, not the one before), or after a period's worth of updates
            # when the learner lags (a stale policy is better than none)
            learned = update_step(cfg.learning_starts, updates, p.updates_per_transition)
            if updates > 0 and ((step >= next_weights and behind == 0)
                                or learned >= published + p.weights_period_steps):
                next_weights, published = step + p.weights_period_steps, learned
                self._publish_weights(agent, step)   # step: the env steps taken in, all sampled from
            if step >= next_ckpt:
                next_ckpt = step + p.checkpoint_period_steps
                self._checkpoint(agent, step)
            if time.monotonic() >= next_report:
                next_report = time.monotonic() + 1.0
                self.publish_metrics({**last_metrics, **self._diagnostics(), "learner/step": step})
            if step >= p.total_steps and owed <= 0:
                break
        self._checkpoint(agent, step)
        self.publish_metrics({**last_metrics, **self._diagnostics(), "learner/step": step, "learner/finished": 1})

    def _checkpoint(self, agent: Any, step: int) -> None:
        from se_robot import checkpoint
        from se_robot.config import to_dict

        checkpoint.save(self.run_dir, step, agent.state_dict(), {"step": step, **self.counters}, to_dict(self.cfg),
                        None, self.cfg.keep_checkpoints)

    def _publish_weights(self, agent: Any, step: int) -> None:
        t = time.perf_counter()
        version = self.counters["learner/weights_version"] + 1
        self._weights.publish(wire.encode_weights(agent.acting_state_dict(), version, step))
        self.counters["learner/weights_version"] = version
        self.get_logger().info(f"published weights v{version} at step {step} "
                               f"({(time.perf_counter() - t) * 1e3:.0f} ms)")

    def close(self) -> None:
        self.done.set()
        self._worker.join(timeout=5.0)


def main(args: list[str] | None = None) -> int:
    return run_node(LearnerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
