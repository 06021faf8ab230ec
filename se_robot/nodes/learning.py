"""What actor_node and learner_node share: the chunked ROS channels, env building, batching.

Wire (see :mod:`se_robot.nodes.wire` for the bytes):
- ``learner/transitions``: actor -> learner, ``std_msgs/UInt8MultiArray`` chunks, reliable, keep
  last 256, volatile. One message is a batch of consecutive steps of one actor: ``action``,
  ``reward``, ``terminated``, ``truncated``, ``next_obs/<key>``, ``start`` (bool: this step begins
  an episode), ``first/<key>`` (the reset observation of each such episode, in order) and
  ``weights_version`` (the policy version that acted). The wire header's stream id names the
  actor and its sequence number orders the actor's batches; the learner assembles each actor's
  episodes apart (:mod:`se_robot.nodes.assembly`) and makes the replay calls the local loop
  makes (add_first, then add) once an episode ends.
- ``learner/policy_weights``: learner -> actor, the same chunking, reliable and transient local
  (keep last 256 chunks) so an actor that starts late still gets the newest policy; payload is
  ``{version, step, state}`` as ``torch.save`` bytes, loaded with ``weights_only=True``.
- ``learner/metrics`` / ``actor/metrics``: ``std_msgs/String`` holding one JSON dict of flat
  namespaced metrics (``learner/transitions``, ``learner/weights_version``, ``loss/critic``...).
"""

from __future__ import annotations

import json
import random
from typing import Any, Callable

import numpy as np
from rclpy.node import Node
from std_msgs.msg import String, UInt8MultiArray

from se_robot.nodes import wire
from se_robot.nodes.runtime import STREAM_QOS, WEIGHTS_QOS
from se_robot.ros_params import EnvParams

ACTOR_METRICS = "actor/metrics"


class ChunkPublisher:
    """Publishes payloads as numbered chunks on one topic."""

    def __init__(self, node: Node, topic: str, kind: int, chunk_bytes: int, weights: bool = False):
        self.pub = node.create_publisher(UInt8MultiArray, topic, WEIGHTS_QOS if weights else STREAM_QOS)
        self.kind = kind
        self.chunk_bytes = chunk_bytes
        self.stream_id = random.getrandbits(32)
        self.seq = 0

    def publish(self, payload: bytes) -> int:
        self.seq += 1
        for chunk in wire.split(self.kind, self.stream_id, self.seq, payload, self.chunk_bytes):
            msg = UInt8MultiArray()
            msg.data = chunk
            self.pub.publish(msg)
        return self.seq


class ChunkSubscriber:
    """Reassembles chunks and hands each complete payload to ``on_payload(header, bytes)``.

    A refused chunk is counted (``reassembler.rejected``) and logged, never raised.
    """

    def __init__(self, node: Node, topic: str, on_payload: Callable[[wire.ChunkHeader, bytes], None],
                 weights: bool = False, reassembler: wire.Reassembler | None = None, **kwargs: Any):
        self.reassembler = reassembler or wire.Reassembler()
        self._node = node
        self._on_payload = on_payload
        self.sub = node.create_subscription(UInt8MultiArray, topic, self._on_chunk,
                                            WEIGHTS_QOS if weights else STREAM_QOS, **kwargs)

    def _on_chunk(self, msg: UInt8MultiArray) -> None:
        try:
            done = self.reassembler.add(msg.data)
        except wire.WireError as e:
            self._node.get_logger().warning(f"{self.sub.topic_name}: dropped chunk: {e}", throttle_duration_sec=2.0)
            return
        if done is not None:
            self._on_payload(*done)


def publish_metrics(pub: Any, metrics: dict[str, Any]) -> None:
    """One flat JSON dict on a ``std_msgs/String`` topic (numbers as floats, anything else as text)."""
    clean = {k: (float(v) if isinstance(v, (int, float, np.floating, np.integer, bool)) else str(v))
             for k, v in metrics.items()}
    pub.publish(String(data=json.dumps(clean, sort_keys=True)))


class TransitionBatcher:
    """Collects steps until ``size`` and returns the batch as a nested dict for the wire."""

    def __init__(self, size: int):
        self.size = size
        self.weights_version = 0   # the policy version acting now; each batch carries it
        self._rows: list[dict[str, Any]] = []
        self._firsts: list[dict[str, np.ndarray]] = []
        self._pending_start = False

    def start_episode(self, obs: dict[str, np.ndarray]) -> None:
        self._firsts.append({k: np.asarray(v) for k, v in obs.items()})
        self._pending_start = True

    def add(self, action: np.ndarray, reward: float, next_obs: dict[str, np.ndarray], terminated: bool,
            truncated: bool) -> dict | None:
        self._rows.append({"action": np.asarray(action, dtype=np.float32), "reward": np.float32(reward),
                           "terminated": bool(terminated), "truncated": bool(truncated),
                           "next_obs": {k: np.asarray(v) for k, v in next_obs.items()}, "start": self._pending_start})
        self._pending_start = False
        return self.flush() if len(self._rows) >= self.size else None

    def drop_episode(self) -> None:
        """Forget the open episode's unsent steps (a fault ended it): the learner drops what it holds
        of it when the next batch starts a new episode."""
        self._rows, self._firsts, self._pending_start = [], [], False

    def flush(self) -> dict | None:
        if not self._rows:
            return None
        rows = self._rows
        n_starts = sum(r["start"] for r in rows)
        firsts, self._firsts = self._firsts[:n_starts], self._firsts[n_starts:]
        self._rows = []
        batch: dict[str, Any] = {
            "action": np.stack([r["action"] for r in rows]),
            "reward": np.array([r["reward"] for r in rows], dtype=np.float32),
            "terminated": np.array([r["terminated"] for r in rows]),
            "truncated": np.array([r["truncated"] for r in rows]),
            "start": np.array([r["start"] for r in rows]),
            "next_obs": {k: np.stack([r["next_obs"][k] for r in rows]) for k in rows[0]["next_obs"]},
            "weights_version": np.int64(self.weights_version),
        }
        if firsts:
            batch["first"] = {k: np.stack([f[k] for f in firsts]) for k in firsts[0]}
        return batch


def counter_metrics(prefix: str, counts: dict[str, int]) -> dict[str, int]:
    """``{"<prefix>/<reason>": n}``: the flat, namespaced form metrics take."""
    return {f"{prefix}/{reason}": int(n) for reason, n in sorted(counts.items())}


def make_node_env(p: EnvParams, cfg: Any, backend: str | None = None) -> Any:
    """The env an actor or a local learner steps, from its env parameters and train config.

    ``backend`` (default ``p.env_backend``): ``ros`` (ArmEnv over RosRobot: the topics of
    arm_node/sim_node), ``hardware`` (the serial arm wired to this computer, as ``se-robot train
    --backend hardware``: ``env.port``, ``env.arm_id``, ``env.camera_source``, ``env.operator``...
    given in train_overrides) or ``sim`` (the twin in-process). On every backend the train config
    decides the wrappers (frame stack, action repeat, a frozen ``encoder``: sac/mbpo on pixels see
    its features, so an actor ships features, not images) and the reward (``reward_model``: the
    success classifier, sparse, ending on success); its ``env`` section passes the rest to
    ``se_robot.envs.make_env``. On ``sim`` only the options that shape the env's spaces are kept,
    so a learner can build the twin of an actor's robot.
    """
    from se_robot.envs import ENV_OPTIONS, make_env

    backend = backend or p.env_backend
    options: dict[str, Any] = dict(obs_mode=p.obs_mode, image_size=p.image_size, action_mode=p.action_mode,
                                   control_hz=p.control_hz, frame_stack=cfg.frame_stack,
                                   action_repeat=cfg.action_repeat, encoder=cfg.encoder,
                                   reward_model=cfg.reward_model, reward_threshold=cfg.reward_threshold or None)
    if backend != "sim":
        options.update(arm=p.arm, max_episode_steps=p.max_episode_steps)
    if backend == "ros":
        from se_robot.nodes.scene_operator import RosSceneOperator

        # a real table (arm_node) has nobody at a terminal to put the cube back: ask over ROS instead
        options.update(stale_timeout_s=p.stale_timeout_s, operator=RosSceneOperator())
    extra = dict(cfg.env)
    if backend == "sim":
        extra = {k: v for k, v in extra.items() if k in ENV_OPTIONS and k not in ("operator", "detector")}
    return make_env(p.task, backend=backend, **{**options, **extra})


def train_config(config_path: str, overrides_text: str, env: EnvParams, algo: str, seed: int,
                 extra: dict[str, Any] | None = None) -> Any:
    """The TrainConfig both sides build identically from their parameters.

    ``extra`` holds keys the node's own parameters set (the learner's total_steps as ``steps``, ...):
    train_overrides may not set them too, or the node and the loop would each follow another value.
    """
    from se_robot.config import ConfigError, parse_set
    from se_robot.train_config import load_config

    pairs = overrides_text.split()
    taken = sorted(set(extra or {}) & set(parse_set(pairs, "train_overrides")))
    if taken:
        raise ConfigError("train_overrides", taken[0], "set by a node parameter; set that parameter instead")
    base = {"algo": algo, "task": env.task, "obs_mode": env.obs_mode, "image_size": env.image_size,
            "seed": seed, "progress": False, **(extra or {})}
    if env.obs_mode == "state":
        base.update(frame_stack=1)
    return load_config(config_path or None, base, pairs, source="node parameters", set_source="train_overrides")


def spaces_for(cfg: Any, env: EnvParams) -> tuple[Any, Any]:
    """Observation and action spaces of the actor's env, without a robot: the same wrappers on
    the twin (only spaces are read; nothing is stepped)."""
    sim = make_node_env(env, cfg, "sim")
    try:
        return sim.observation_space, sim.action_space
    finally:
        sim.close()
