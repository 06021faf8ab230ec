"""actor_node: runs the policy next to the robot and ships its experience to a learner_node.

It steps the env of ``se_robot.envs.make_env`` (over ROS, or the in-process twin with
``env_backend: sim``) with its own copy of the agent, sends transitions in batches of
``batch_transitions`` (and at every episode end) on ``learner/transitions``, and loads the newest
weights from ``learner/policy_weights`` between steps, never mid-step. Acting never waits for the
learner: with no weights yet it acts with its initial policy, and a slow learner only makes the
policy older (``actor/weights_version`` on ``actor/metrics`` says which one is acting). Wire
format and QoS: :mod:`se_robot.nodes.learning`.
"""

from __future__ import annotations

import threading
from typing import Any

from rclpy.node import Node
from std_msgs.msg import String

from se_robot import ros_params as names
from se_robot.nodes import learning, wire
from se_robot.nodes.params import NodeParams
from se_robot.nodes.runtime import DIAGNOSTICS_QOS, run_node
from se_robot.ros_params import ActorParams, EnvParams


class ActorNode(Node):
    def __init__(self, node_name: str = "actor_node", **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self.params = NodeParams(self, (ActorParams, EnvParams))
        self.p, self.e = self.params.get(ActorParams), self.params.get(EnvParams)
        self.cfg = learning.train_config(self.p.train_config, self.p.train_overrides, self.e, self.p.algo,
                                         self.p.seed)
        self.metrics_pub = self.create_publisher(String, learning.ACTOR_METRICS, DIAGNOSTICS_QOS)
        self._transitions = learning.ChunkPublisher(self, names.TRANSITIONS, wire.KIND_TRANSITIONS,
                                                    self.p.chunk_bytes)
        self._lock = threading.Lock()
        self._pending: tuple[int, dict] | None = None
        self._weights = learning.ChunkSubscriber(self, names.WEIGHTS, self._on_weights, weights=True)
        self.counters = {"actor/steps": 0, "actor/episodes": 0, "actor/weights_version": 0,
                         "actor/batches_sent": 0}
        self.stop = threading.Event()
        self.error: str | None = None
        self._worker = threading.Thread(target=self._run, name="actor", daemon=True)
        self._worker.start()

    def _on_weights(self, header: wire.ChunkHeader, payload: bytes) -> None:
        try:
            state = wire.decode_weights(payload)
        except wire.WireError as e:
            self.get_logger().warning(f"bad weights message {header.seq}: {e}")
            return
        with self._lock:
            if self._pending is None or header.seq > self._pending[0]:
                self._pending = (header.seq, state)

    def _apply_weights(self, agent: Any) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None and pending[0] > self.counters["actor/weights_version"]:
            agent.load_state_dict(pending[1])
            self.counters["actor/weights_version"] = pending[0]

    def _send(self, batch: dict | None) -> None:
        if batch is not None:
            self._transitions.publish(wire.encode_arrays(batch))
            self.counters["actor/batches_sent"] += 1

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as e:  # noqa: BLE001 - report, then stop acting
            self.error = f"{type(e).__name__}: {e}"
            self.get_logger().error(f"actor stopped: {self.error}")
            learning.publish_metrics(self.metrics_pub, {**self.counters, "actor/error": self.error})

    def _loop(self) -> None:
        from se_robot.agents.registry import make_agent

        cfg, p = self.cfg, self.p
        env = learning.make_node_env(self.e, self.e.env_backend, cfg.frame_stack, cfg.action_repeat, cfg.encoder)
        try:
            agent = make_agent(cfg.algo, env.observation_space, env.action_space, dict(cfg.agent), "cpu", cfg.seed)
            batcher = learning.TransitionBatcher(p.batch_transitions)
            episode = 0
            while not self.stop.is_set() and (p.episodes == 0 or episode < p.episodes):
                obs, _ = env.reset(seed=p.seed + episode)
                batcher.start_episode(obs)
                ep_return, success, done = 0.0, False, False
                while not done and not self.stop.is_set():
                    self._apply_weights(agent)
                    action = agent.act(obs, self.counters["actor/steps"], eval_mode=False)
                    obs, reward, terminated, truncated, info = env.step(action)
                    done = terminated or truncated
                    self._send(batcher.add(action, reward, obs, terminated, truncated))
                    self.counters["actor/steps"] += 1
                    ep_return += float(reward)
                    success |= bool(info.get("is_success", False))
                self._send(batcher.flush())
                episode += 1
                self.counters["actor/episodes"] = episode
                learning.publish_metrics(self.metrics_pub, {**self.counters, "actor/episode_return": ep_return,
                                                            "actor/success": float(success)})
        finally:
            env.close()
        learning.publish_metrics(self.metrics_pub, {**self.counters, "actor/finished": 1})

    def close(self) -> None:
        self.stop.set()
        self._worker.join(timeout=5.0)


def main(args: list[str] | None = None) -> int:
    return run_node(ActorNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
