"""actor_node: runs the policy next to the robot and ships its experience to a learner_node.

It steps the env of ``se_robot.envs.make_env`` (over ROS; the serial arm wired to this computer
with ``env_backend: hardware``, its port, camera, scene operator and reward model given as in
``se-robot train``; or the in-process twin with ``env_backend: sim``) with its own copy of the agent, sends transitions in batches of
``batch_transitions`` (and at every episode end) on ``learner/transitions``, and loads the newest
weights from ``learner/policy_weights`` between steps, never mid-step (acting weights only: it
keeps its own random streams). Acting never waits for the
learner: with no weights yet it acts with its initial policy, and a slow learner only makes the
policy older (``actor/weights_version`` on ``actor/metrics`` says which one is acting, and every
batch carries it to the learner). With ``eval_period_steps`` it also evaluates the acting
policy greedily (``eval/*``; those episodes are not sent). A latched fault on the robot (a servo
error, a bus that stops answering, a homing that cannot finish, the e-stop) pauses the actor as it
pauses ``se-robot train``: the arm holds, the open episode is dropped (never half-stored), the
reason goes out on ``actor/metrics`` and the log, and acting goes on with a new episode once the
operator has fixed the cause and called ``actor/continue`` (``std_srvs/Trigger``; on the ROS
backend the latch is arm_node's: ``arm/reset``). A process restart never clears it behind the
operator's back: it is the operator's call. Weights that fail to decode, hold
NaN or do not fit the agent are refused and counted (``actor/rejected_weights/*``). Wire
format and QoS: :mod:`se_robot.nodes.learning`.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import Counter
from typing import Any

import numpy as np
import torch
from rclpy.node import Node
from std_msgs.msg import String
from std_srvs.srv import Trigger

from se_robot import ros_params as names
from se_robot.nodes import learning, wire
from se_robot.nodes.params import NodeParams
from se_robot.nodes.runtime import DIAGNOSTICS_QOS, run_node
from se_robot.ros_params import ActorParams, EnvParams
from se_robot.train_faults import PAUSING_FAULTS


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
        self._pending: tuple[int, int, int, dict] | None = None   # (learner stream, version, step, state)
        self._weights_stream: int | None = None
        self.rejected: Counter[str] = Counter()
        self._weights = learning.ChunkSubscriber(self, names.WEIGHTS, self._on_weights, weights=True)
        self.counters = {"actor/steps": 0, "actor/episodes": 0, "actor/weights_version": 0,
                         "actor/weights_step": 0, "actor/batches_sent": 0, "actor/pauses": 0,
                         "actor/dropped_steps": 0}   # steps of episodes a fault cut short (never sent whole)
        self._open_steps = 0
        self._learner_backlog = 0   # learner/updates_owed, as the learner last published it
        self.create_subscription(String, names.METRICS, self._on_learner_metrics, DIAGNOSTICS_QOS)
        self._robot: Any = None   # the env's robot, once built: actor/continue resets its e-stop
        self.create_service(Trigger, names.ACTOR_CONTINUE_SERVICE, self._on_continue)
        self.stop = threading.Event()
        self.error: str | None = None
        self.exit_code = 0   # run_node's exit status: non-zero once the acting thread has died
        self._worker = threading.Thread(target=self._run, name="actor", daemon=True)
        self._worker.start()

    def _on_weights(self, header: wire.ChunkHeader, payload: bytes) -> None:
        """Executor thread: keep the newest decoded weights for the actor thread to load between steps."""
        try:
            version, step, state = wire.decode_weights(payload)
        except wire.WireError as e:
            self.rejected[e.reason] += 1
            self.get_logger().warning(f"bad weights message {header.seq}: {e}", throttle_duration_sec=2.0)
            return
        with self._lock:
            # a restarted learner is a new stream that counts from 1 again: follow it
            if self._pending is None or header.stream_id != self._pending[0] or version > self._pending[1]:
                self._pending = (header.stream_id, version, step, state)

    def _apply_weights(self, agent: Any, batcher: learning.TransitionBatcher) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        stream, version, step, state = pending
        if stream == self._weights_stream and version <= self.counters["actor/weights_version"]:
            return
        try:
            agent.load_acting_state_dict(state)   # policy weights only: this actor keeps its own random streams
        except (RuntimeError, KeyError, ValueError, TypeError) as e:   # shapes or keys of another agent
            self.rejected["incompatible_weights"] += 1
            self.get_logger().warning(f"weights v{version} do not fit this agent: {e}", throttle_duration_sec=2.0)
            return
        self._weights_stream = stream
        self.counters["actor/weights_version"] = batcher.weights_version = version
        self.counters["actor/weights_step"] = step

    def _send(self, batch: dict | None) -> None:
        if batch is not None:
            self._transitions.publish(wire.encode_arrays(batch))
            self.counters["actor/batches_sent"] += 1

    def _metrics(self, extra: dict[str, Any]) -> None:
        learning.publish_metrics(self.metrics_pub, {
            **self.counters, **learning.counter_metrics("actor/rejected_weights", self.rejected),
            **learning.counter_metrics("actor/rejected_chunks", self._weights.reassembler.rejected), **extra})

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as e:  # noqa: BLE001 - report, then take the node down so a supervisor restarts it
            if not self.context.ok():   # shut down (Ctrl-C) mid-step: not a failure
                return
            self.error = f"{type(e).__name__}: {e}"
            self.exit_code = 1
            self.get_logger().error(f"actor stopped: {self.error}\n{traceback.format_exc()}")
            self._metrics({"actor/error": self.error})
            self.context.try_shutdown()

    def _loop(self) -> None:
        from se_robot.agents.registry import make_agent

        cfg, p = self.cfg, self.p
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        env = learning.make_node_env(self.e, cfg)
        try:
            agent = make_agent(cfg.algo, env.observation_space, env.action_space, dict(cfg.agent), "cpu", cfg.seed)
            batcher = learning.TransitionBatcher(p.batch_transitions)
            episode, next_eval = 0, 0
            self._robot = env.unwrapped.robot
            while not self.stop.is_set() and (p.episodes == 0 or episode < p.episodes):
                self._wait_for_learner()
                try:
                    ep_return, success, done = self._episode(env, agent, batcher, p.seed + episode)
                except PAUSING_FAULTS as e:
                    if not self._pause(batcher, f"{type(e).__name__}: {e}", e):
                        break
                    continue
                latched = self._robot.estop.reason if self._robot.estop.latched else None
                if latched is not None:   # a teleop key or a fault that held the arm mid-episode
                    if not self._pause(batcher, f"e-stop latched: {latched}", None):
                        break
                    continue
                if not done:   # stopped mid-episode: the learner never stores the partial episode
                    break
                self._send(batcher.flush())
                episode += 1
                self.counters["actor/episodes"] = episode
                self._metrics({"actor/episode_return": ep_return, "actor/success": float(success)})
                if p.eval_period_steps and self.counters["actor/weights_step"] >= next_eval and not self.stop.is_set():
                    next_eval = (self.counters["actor/weights_step"] // p.eval_period_steps + 1) * p.eval_period_steps
                    try:
                        self._metrics(self._evaluate(env, agent))
                    except PAUSING_FAULTS as e:
                        if not self._pause(batcher, f"{type(e).__name__} during evaluation: {e}", e):
                            break
        finally:
            env.close()
        self._metrics({"actor/finished": 1})

    def _episode(self, env: Any, agent: Any, batcher: learning.TransitionBatcher,
                 seed: int) -> tuple[float, bool, bool]:
        """One episode, its steps sent as they fill batches; (return, success, ended)."""
        p = self.p
        self._open_steps = 0
        obs, _ = env.reset(seed=seed)
        batcher.start_episode(obs)
        ep_return, success, done = 0.0, False, False
        tick = time.monotonic()
        while not done and not self.stop.is_set():
            if p.max_rate_hz:
                tick = max(tick + 1.0 / p.max_rate_hz, time.monotonic())
                time.sleep(max(0.0, tick - time.monotonic()))
            self._apply_weights(agent, batcher)
            action = agent.act(obs, self.counters["actor/steps"], eval_mode=False)
            obs, reward, terminated, truncated, info = env.step(action)
            if self._robot.estop.latched and not terminated:
                return ep_return, success, False   # the arm holds: this episode ends here, dropped
            done = terminated or truncated
            self._send(batcher.add(action, reward, obs, terminated, truncated))
            self.counters["actor/steps"] += 1
            self._open_steps += 1
            ep_return += float(reward)
            success |= bool(info.get("is_success", False))
        return ep_return, success, done

    def _pause(self, batcher: learning.TransitionBatcher, reason: str, error: Exception | None) -> bool:
        """Hold the arm, drop the open episode, wait for ``actor/continue``; False when shutting down."""
        from se_robot.train_faults import close_lost_port, hold_arm, lost_port

        robot = self._robot
        problem = hold_arm(robot, reason)
        if lost_port(error):   # the next reset opens the port again (replugged)
            problem = close_lost_port(robot) or problem
        batcher.drop_episode()
        self.counters["actor/pauses"] += 1
        self.counters["actor/dropped_steps"] += self._open_steps
        self._open_steps = 0
        self.get_logger().error(
            f"PAUSED: {reason}; {problem or 'the arm holds where it is, e-stop latched'}; the open episode "
            f"is dropped. Fix the cause, then: ros2 service call {self.resolve_service_name(names.ACTOR_CONTINUE_SERVICE)} "
            "std_srvs/srv/Trigger (on the ROS backend first arm/reset at arm_node)")
        self._metrics({"actor/paused": 1, "actor/pause_reason": reason})
        while robot.estop.latched and not self.stop.is_set():
            time.sleep(0.1)
        if self.stop.is_set():
            return False
        self._metrics({"actor/paused": 0})
        self.get_logger().info("operator continued: a new episode starts")
        return True

    def _on_learner_metrics(self, msg: String) -> None:
        import json

        try:
            owed = json.loads(msg.data).get("learner/updates_owed", 0)
            self._learner_backlog = int(owed) if isinstance(owed, (int, float)) and owed == owed else 0
        except (ValueError, AttributeError):   # not a JSON dict: nothing to go by
            return

    def _wait_for_learner(self) -> None:
        """With ``max_learner_backlog``: hold off the next episode while the learner is that far behind."""
        limit = self.p.max_learner_backlog
        if limit <= 0 or self._learner_backlog <= limit:
            return
        self._metrics({"actor/waiting_for_learner": 1, "actor/learner_backlog": self._learner_backlog})
        while self._learner_backlog > limit and not self.stop.is_set():
            time.sleep(0.05)
        self._metrics({"actor/waiting_for_learner": 0})

    def _on_continue(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        robot = self._robot
        if robot is None or not robot.estop.latched:
            response.success, response.message = False, "the actor is not paused"
            return response
        robot.estop.reset()
        response.success, response.message = True, "continuing: the arm homes for a new episode"
        return response

    def _evaluate(self, env: Any, agent: Any) -> dict[str, float]:
        """Greedy episodes with the acting weights, from the local loop's evaluation start states.

        ``eval/learner_step`` is the learner step those weights were published at: the env steps
        (of all actors) their learning saw, the x axis of a learning curve in split mode.
        """
        from se_robot.train import EVAL_SEED_OFFSET

        successes, returns = [], []
        for i in range(self.p.eval_episodes):
            obs, _ = env.reset(seed=self.cfg.seed + EVAL_SEED_OFFSET + i)
            total, success, done = 0.0, False, False
            while not done:
                obs, reward, terminated, truncated, info = env.step(agent.act(obs, self.counters["actor/steps"],
                                                                              eval_mode=True))
                total += float(reward)
                success |= bool(info.get("is_success", False))
                done = terminated or truncated
            successes.append(float(success))
            returns.append(total)
        return {"eval/success": float(np.mean(successes)), "eval/return": float(np.mean(returns)),
                "eval/weights_version": self.counters["actor/weights_version"],
                "eval/learner_step": self.counters["actor/weights_step"]}

    def close(self) -> None:
        self.stop.set()
        self._worker.join(timeout=5.0)


def main(args: list[str] | None = None) -> int:
    return run_node(ActorNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
