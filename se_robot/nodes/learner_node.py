"""learner_node: trains an agent from experience gathered over ROS 2.

``mode: local`` builds its env with ``se_robot.envs.make_env`` (over ROS, or the in-process twin
with ``env_backend: sim``) and runs the usual training loop (``se_robot.train.Trainer``: any
``--algo``, evaluation, checkpoints) in this process; every metric the loop logs is also
published on ``learner/metrics``.

``mode: split`` learns from an actor_node elsewhere (on the robot computer): transition batches
arrive on ``learner/transitions``, go into the replay buffer exactly as the local loop would
add them, one agent update runs per transition received (update-to-data ratio 1), and the
agent's weights go out on ``learner/policy_weights`` every ``weights_period_steps``. Checkpoints
(``se_robot.checkpoint``) are written every ``checkpoint_period_steps`` and at the end. Wire
format and QoS: :mod:`se_robot.nodes.learning`.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable

from rclpy.node import Node
from std_msgs.msg import String

from se_robot import ros_params as names
from se_robot.logger import Logger
from se_robot.nodes import learning, wire
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
        self.counters = {"learner/transitions": 0, "learner/updates": 0, "learner/weights_version": 0,
                         "learner/batches": 0}
        target = self._run_local if p.mode == "local" else self._run_split
        if p.mode == "split":
            self._queue: queue.Queue = queue.Queue(maxsize=64)
            self._weights = learning.ChunkPublisher(self, names.WEIGHTS, wire.KIND_WEIGHTS, p.chunk_bytes,
                                                    weights=True)
            self._transitions = learning.ChunkSubscriber(self, names.TRANSITIONS, self._on_batch)
        self._worker = threading.Thread(target=self._guard, args=(target,), name="learner", daemon=True)
        self._worker.start()

    def publish_metrics(self, metrics: dict[str, Any]) -> None:
        learning.publish_metrics(self.metrics_pub, {**self.counters, **metrics})

    def _guard(self, target: Any) -> None:
        try:
            target()
        except Exception as e:  # noqa: BLE001 - report on the metrics topic and the log, then stop
            self.error = f"{type(e).__name__}: {e}"
            self.get_logger().error(f"learner stopped: {self.error}")
            self.publish_metrics({"learner/error": self.error})
        finally:
            self.done.set()

    # ------------------------------------------------------------------ local
    def _run_local(self) -> None:
        from se_robot.train import build_trainer

        env = learning.make_node_env(self.e, self.e.env_backend, self.cfg.frame_stack, self.cfg.action_repeat,
                                     self.cfg.encoder)
        try:
            trainer = build_trainer(self.cfg, self.run_dir, envs=(env, env))
            trainer.logger = _PublishingLogger(trainer.logger, self.publish_metrics)
            result = trainer.train()
            self.publish_metrics({**result, "learner/finished": 1})
        finally:
            env.close()

    # ------------------------------------------------------------------ split
    def _on_batch(self, header: wire.ChunkHeader, payload: bytes) -> None:
        try:
            self._queue.put_nowait(wire.decode_arrays(payload))
        except queue.Full:
            self.get_logger().warning("learner is behind: dropped a transition batch", throttle_duration_sec=2.0)
        except wire.WireError as e:
            self.get_logger().warning(f"bad transition batch: {e}")

    def _run_split(self) -> None:
        import dataclasses

        from se_robot import checkpoint
        from se_robot.agents.registry import make_agent
        from se_robot.agents.replay import ReplayBuffer
        from se_robot.config import to_dict

        cfg, p = self.cfg, self.p
        obs_space, act_space = learning.spaces_for(cfg, self.e)
        agent = make_agent(cfg.algo, obs_space, act_space, dict(cfg.agent), cfg.device, cfg.seed)
        replay = ReplayBuffer(dataclasses.replace(cfg.replay), seed=cfg.seed)
        step, last_metrics, next_ckpt = 0, {}, p.checkpoint_period_steps
        self._publish_weights(agent)  # the actor starts from the learner's initial policy
        while step < p.total_steps and not self.done.is_set():
            try:
                batch = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            n = learning.replay_batch(batch, replay)
            self.counters["learner/batches"] += 1
            self.counters["learner/transitions"] += n
            for _ in range(n):
                step += 1
                if replay.transitions >= cfg.learning_starts:
                    last_metrics = agent.update(replay, None, step) or last_metrics
                    self.counters["learner/updates"] += 1
                if step % p.weights_period_steps == 0:
                    self._publish_weights(agent)
            self.publish_metrics({**last_metrics, "learner/step": step})
            if step >= next_ckpt:
                next_ckpt += p.checkpoint_period_steps
                checkpoint.save(self.run_dir, step, agent.state_dict(), {"step": step, **self.counters},
                                to_dict(cfg), None, cfg.keep_checkpoints)
        checkpoint.save(self.run_dir, step, agent.state_dict(), {"step": step, **self.counters}, to_dict(cfg),
                        None, cfg.keep_checkpoints)
        self.publish_metrics({**last_metrics, "learner/step": step, "learner/finished": 1})

    def _publish_weights(self, agent: Any) -> None:
        t = time.perf_counter()
        self.counters["learner/weights_version"] = self._weights.publish(wire.encode_weights(agent.state_dict()))
        self.get_logger().info(f"published weights v{self.counters['learner/weights_version']} "
                               f"({(time.perf_counter() - t) * 1e3:.0f} ms)")

    def close(self) -> None:
        self.done.set()
        self._worker.join(timeout=5.0)


def main(args: list[str] | None = None) -> int:
    return run_node(LearnerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
