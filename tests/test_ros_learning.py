"""actor_node and learner_node in two processes exchange transitions and weights over DDS."""

import json
import os
import tempfile

import pytest

import rclpy  # noqa: F401 - required: CI must fail, not skip, without it

from std_msgs.msg import String  # noqa: E402

from tests.support import ros_harness as harness  # noqa: E402
from se_robot.nodes.runtime import DIAGNOSTICS_QOS  # noqa: E402

pytestmark = pytest.mark.timeout(400)

DOMAIN = harness.pick_domain_id(3)


def _hostile_messages() -> list[bytes]:
    """What a broken or hostile actor sends: each must be refused and counted, none fatal."""
    import numpy as np

    from se_robot.nodes import wire

    def batch(**change):
        b = {"action": np.zeros((2, 4), np.float32), "reward": np.zeros(2, np.float32),
             "terminated": np.zeros(2, bool), "truncated": np.array([False, True]), "start": np.array([True, False]),
             "next_obs": {"state": np.zeros((2, 16), np.float32), "task": np.zeros((2, 3), np.float32)},
             "first": {"state": np.zeros((1, 16), np.float32), "task": np.zeros((1, 3), np.float32)}}
        b.update(change)
        return wire.encode_arrays({k: v for k, v in b.items() if v is not None})

    stream = 0xBAD0
    payloads = [batch(reward=np.array([np.nan, 0], np.float32)),      # NaN reward
                batch(action=np.zeros((2, 1), np.float32)),           # a 1-wide action
                batch(start=np.array([False, False]), first=None),    # starts mid-episode
                b"PK\x03\x04 not a zip at all"]                       # a damaged payload
    chunks = [c for seq, pl in enumerate(payloads, 1) for c in wire.split(1, stream, seq, pl, 4096)]
    chunks += wire.split(1, stream, 1, payloads[0], 4096)               # a re-sent chunk set
    chunks.append(wire.split(1, stream, 9, bytes(64), 4096)[0][:20])   # a short chunk
    return chunks


def test_two_actors_and_a_learner_learn_and_refuse_hostile_batches(tmp_path):
    """2 actors interleave their batches (the learner used to stop in 3 s with ``add() before
    add_first()``); a third publisher sends malformed, partial and duplicate batches: all counted.

    The actors act at 50 Hz, as a robot paces itself: free-running twins on a loaded machine can
    overflow the learner's reader history (KEEP_LAST 256), which loses samples (counted as gaps
    for an actor's batches) and would make the hostile ones' counts uncertain."""
    from std_msgs.msg import UInt8MultiArray

    from se_robot.nodes.runtime import STREAM_QOS

    logs = {n: os.path.join(tempfile.gettempdir(), f"se_robot_{n}_{os.getpid()}.log")
            for n in ("learner", "actor1", "actor2")}
    learner = harness.start_node("learner_node", DOMAIN, {
        "mode": "split", "algo": "sac", "obs_mode": "state", "learning_starts": 20, "weights_period_steps": 20,
        "total_steps": 10**6, "checkpoint_period_steps": 60, "checkpoint_dir": str(tmp_path / "run"),
        "chunk_bytes": 65536, "updates_per_transition": 0.5}, log_path=logs["learner"])
    actors = [harness.start_node("actor_node", DOMAIN, {
        "algo": "sac", "obs_mode": "state", "env_backend": "sim", "batch_transitions": 7, "seed": i,
        "chunk_bytes": 65536, "max_episode_steps": 15, "max_rate_hz": 50.0}, node_name=f"actor{i}", log_path=logs[f"actor{i}"])
        for i in (1, 2)]
    try:
        with harness.ros_session(DOMAIN) as ros:
            last: dict = {}
            ros.node.create_subscription(String, "learner/metrics",
                                         lambda m: last.__setitem__("learner", json.loads(m.data)), DIAGNOSTICS_QOS)
            ros.node.create_subscription(String, "actor/metrics",
                                         lambda m: last.__setitem__("actor", json.loads(m.data)), DIAGNOSTICS_QOS)
            hostile = ros.node.create_publisher(UInt8MultiArray, "learner/transitions", STREAM_QOS)
            assert ros.spin_until(lambda: last.get("learner", {}).get("learner/actors", 0) >= 2
                                  and hostile.get_subscription_count() > 0, 180.0), open(logs["learner"]).read()[-3000:]
            for chunk in _hostile_messages():
                hostile.publish(UInt8MultiArray(data=chunk))
                ros.spin_for(0.05)

            def done():
                lm = last.get("learner", {})
                return (lm.get("learner/transitions", 0) >= 200 and lm.get("learner/weights_version", 0) >= 3
                        and lm.get("learner/rejected_chunks/short") == 1
                        and last.get("actor", {}).get("actor/weights_version", 0) >= 2
                        and any((tmp_path / "run").rglob("agent.pt")))

            ok = ros.spin_until(done, 240.0)
            assert ok, ({k: v for k, v in last.get("learner", {}).items() if k.startswith("learner/")},
                        last.get("actor"), list((tmp_path / "run").rglob("*")))
            assert learner.poll() is None, "the learner process died"
    finally:
        for actor in actors:
            harness.stop_node(actor)
        code = harness.stop_node(learner)
    lm = last["learner"]
    assert "learner/error" not in lm and code == 0, open(logs["learner"]).read()[-3000:]
    assert lm["learner/transitions"] >= 200 and lm["learner/updates"] > 0 and lm["learner/actors"] >= 2
    assert lm["learner/weights_version"] >= 3 and lm["learner/oldest_acting_version"] >= 1
    rejected = {k: v for k, v in lm.items() if k.startswith(("learner/rejected", "learner/dropped_partials"))}
    assert rejected.get("learner/rejected_batches/nonfinite") == 1, rejected
    assert rejected.get("learner/rejected_batches/bad_shape") == 1, rejected
    assert rejected.get("learner/rejected_batches/mid_episode") == 1, rejected
    assert rejected.get("learner/rejected_batches/bad_payload") == 1, rejected
    assert "learner/rejected_batches/malformed" not in rejected, rejected
    assert rejected.get("learner/rejected_chunks/duplicate") == 1, rejected
    assert rejected.get("learner/rejected_chunks/short") == 1, rejected


def test_a_learner_whose_thread_dies_exits_non_zero(tmp_path):
    """A supervisor restarts what exits non-zero: a dead learner thread must not leave the process up."""
    (tmp_path / "file").write_text("not a directory")
    log = os.path.join(tempfile.gettempdir(), f"se_robot_learner_dies_{os.getpid()}.log")
    learner = harness.start_node("learner_node", harness.pick_domain_id(7), {
        "mode": "split", "algo": "sac", "obs_mode": "state",
        "checkpoint_dir": str(tmp_path / "file" / "run")}, log_path=log)
    try:
        code = learner.wait(120.0)
    finally:
        harness.stop_node(learner)
    assert code == 1, open(log).read()[-3000:]
    assert "learner stopped" in open(log).read()


def test_local_learner_trains_and_checkpoints(tmp_path):
    domain = harness.pick_domain_id(5)
    log = os.path.join(tempfile.gettempdir(), f"se_robot_learner_local_{os.getpid()}.log")
    learner = harness.start_node("learner_node", domain, {
        "mode": "local", "algo": "sac", "obs_mode": "state", "env_backend": "sim", "learning_starts": 10,
        "total_steps": 30, "checkpoint_period_steps": 30, "checkpoint_dir": str(tmp_path / "run"),
        "train_overrides": "eval_every=30 eval_episodes=1 eval_video=false tensorboard=false log_every=10 "
                           "replay.capacity=1000 action_repeat=1"}, log_path=log)
    try:
        with harness.ros_session(domain) as ros:
            seen = []
            ros.node.create_subscription(String, "learner/metrics", lambda m: seen.append(json.loads(m.data)),
                                         DIAGNOSTICS_QOS)
            assert ros.spin_until(lambda: any(m.get("learner/finished") == 1 for m in seen), 100.0), \
                open(log).read()[-3000:]
    finally:
        harness.stop_node(learner)
    assert any("eval/success" in m for m in seen)
    assert any((tmp_path / "run").rglob("agent.pt"))


def test_actor_and_learner_envs_see_the_frozen_encoder(tmp_path):
    """sac/mbpo on pixels over ROS: both sides build the encoder's feature space from the train config."""
    from se_robot.agents.encoders import KeypointEncoder, save_encoder
    from se_robot.nodes import learning
    from se_robot.ros_params import EnvParams

    save_encoder(KeypointEncoder(3, (32, 32), keypoints=4), tmp_path / "enc.pt", "keypoints", in_channels=3,
                 image_size=(32, 32), keypoints=4)
    params = EnvParams(obs_mode="both", image_size=32, env_backend="sim")
    cfg = learning.train_config("", f"encoder={tmp_path / 'enc.pt'} frame_stack=2 "
                                    "action_repeat=1 replay.n_step=1", params, "sac", seed=0)
    obs_space, _ = learning.spaces_for(cfg, params)
    env = learning.make_node_env(params, cfg)
    try:
        obs, _ = env.reset(seed=0)
        assert set(obs) == {"features", "state"} and obs_space.contains(obs)
        assert obs["features"].shape == (2 * 8,) and obs["state"].shape == (16,)   # 2 frames x 4 keypoints x (x, y)
    finally:
        env.close()


def test_a_learner_parameter_is_the_one_knob_for_its_training_key():
    """total_steps sets the learner's steps; train_overrides may not set steps as a second knob."""
    from se_robot.config import ConfigError
    from se_robot.nodes import learning
    from se_robot.ros_params import EnvParams

    params = EnvParams(obs_mode="state", env_backend="sim")
    cfg = learning.train_config("", "replay.capacity=500", params, "sac", seed=0, extra={"steps": 300})
    assert (cfg.steps, cfg.replay.capacity, cfg.frame_stack, cfg.replay.frame_stack) == (300, 500, 1, 1)
    with pytest.raises(ConfigError, match="train_overrides: steps: set by a node parameter"):
        learning.train_config("", "steps=50", params, "sac", seed=0, extra={"steps": 300})


def test_an_actor_waits_between_episodes_while_the_learner_is_behind():
    """max_learner_backlog: with the learner reporting a large backlog, the actor starts no episode
    (it says so on actor/metrics); once the backlog is reported paid, it runs its episodes."""
    domain = harness.pick_domain_id(23)
    log = os.path.join(tempfile.gettempdir(), f"se_robot_backlog_actor_{os.getpid()}.log")
    actor = harness.start_node("actor_node", domain, {
        "algo": "sac", "obs_mode": "state", "env_backend": "sim", "max_episode_steps": 5,
        "batch_transitions": 5, "max_learner_backlog": 10}, log_path=log)
    metrics: dict = {}
    try:
        with harness.ros_session(domain) as ros:
            pub = ros.node.create_publisher(String, "learner/metrics", DIAGNOSTICS_QOS)
            ros.node.create_subscription(String, "actor/metrics", lambda m: metrics.update(json.loads(m.data)),
                                         DIAGNOSTICS_QOS)

            def report(owed: int) -> None:
                pub.publish(String(data=json.dumps({"learner/updates_owed": owed})))

            # the learner is 500 updates behind: keep saying so until the actor says it waits
            waiting = ros.spin_until(lambda: report(500) or metrics.get("actor/waiting_for_learner") == 1
                                     or actor.poll() is not None, 300.0)
            assert waiting and actor.poll() is None, open(log).read()[-2000:]
            held_at = metrics.get("actor/episodes", 0)
            for _ in range(4):
                report(500)
                ros.spin_for(0.5)
            assert metrics.get("actor/episodes", 0) == held_at and metrics["actor/learner_backlog"] == 500
            going = ros.spin_until(lambda: report(0) or metrics.get("actor/episodes", 0) >= held_at + 2
                                   or actor.poll() is not None, 300.0)
            assert going and actor.poll() is None, (metrics, open(log).read()[-2000:])
            assert metrics["actor/waiting_for_learner"] == 0
    finally:
        harness.stop_node(actor)
