"""The split (actor/learner) path feeds the learner what the single-process loop would (pure: no DDS).

An actor's steps go through the batcher, the wire and per-actor assembly into replay; with the
same policy acting on the same episodes, that replay must equal the one the loop fills step by
step. And the weights a learner sends are enough to act: an actor agent that loads them acts as
the learner's agent does, for every algo.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from se_robot.agents.registry import make_agent
from se_robot.agents.replay import ReplayBuffer
from se_robot.envs import make_env
from se_robot.nodes import assembly, learning, wire
from se_robot.train_config import load_config

STEPS = 300


def _fill(mode: str, env, agent, cfg) -> ReplayBuffer:
    replay = ReplayBuffer(dataclasses.replace(cfg.replay), seed=0)
    asm = assembly.EpisodeAssembler(replay, assembly.BatchSpec.from_spaces(env.observation_space, env.action_space))
    batcher, seq = learning.TransitionBatcher(16), 0

    def ship(batch: dict | None) -> None:
        nonlocal seq
        if batch is not None:
            seq += 1
            asm.add(0xA1, seq, wire.decode_arrays(wire.encode_arrays(batch)))

    step = episode = 0
    while step < STEPS:
        obs, _ = env.reset(seed=episode)
        batcher.start_episode(obs) if mode == "split" else replay.add_first(obs)
        done = False
        while not done:
            action = agent.act(obs, step, eval_mode=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            done, step = terminated or truncated, step + 1
            if mode == "split":
                ship(batcher.add(action, reward, obs, terminated, truncated))
            else:
                replay.add(action, float(reward), obs, terminated, truncated)
        ship(batcher.flush())
        episode += 1
    if mode == "split":
        assert asm.transitions == replay.transitions and not asm.rejected
    return replay


def test_split_replay_equals_the_loops_replay():
    cfg = load_config(None, {"task": "reach", "algo": "sac", "obs_mode": "state", "frame_stack": 1},
                      ["replay.n_step=1", "replay.discount=0.9"], source="test")
    env = make_env("reach", backend="sim", obs_mode="state")
    try:
        agent = make_agent("sac", env.observation_space, env.action_space, dict(cfg.agent), "cpu", 0)
        loop, split = _fill("loop", env, agent, cfg), _fill("split", env, agent, cfg)
    finally:
        env.close()
    assert loop.transitions == split.transitions >= STEPS
    stored = [name for name, value in vars(loop).items() if isinstance(value, np.ndarray)]
    assert {"_action", "_reward", "_terminated", "_truncated"} <= set(stored)
    for name in stored:
        np.testing.assert_array_equal(getattr(loop, name), getattr(split, name), err_msg=name)
    for key, arr in loop._arrays.items():
        np.testing.assert_array_equal(arr, split._arrays[key], err_msg=key)
    a, b = loop.sample(64), split.sample(64)
    np.testing.assert_array_equal(a.reward, b.reward)
    np.testing.assert_array_equal(a.discount, b.discount)


@pytest.mark.parametrize("algo, obs_mode", [("sac", "state"), ("mbpo", "state"), ("drqv2", "pixels")])
def test_acting_weights_make_an_actor_act_as_the_learner(algo, obs_mode):
    env = make_env("reach", backend="sim", obs_mode=obs_mode, image_size=64)
    try:
        learner = make_agent(algo, env.observation_space, env.action_space, {}, "cpu", 1)
        actor = make_agent(algo, env.observation_space, env.action_space, {}, "cpu", 2)
        obs, _ = env.reset(seed=3)
        assert not np.allclose(learner.act(obs, 10**6, eval_mode=True), actor.act(obs, 10**6, eval_mode=True))
        version, step, state = wire.decode_weights(wire.encode_weights(learner.acting_state_dict(), 5, 40))
        actor.load_acting_state_dict(state)
        np.testing.assert_allclose(actor.act(obs, 10**6, eval_mode=True), learner.act(obs, 10**6, eval_mode=True),
                                   rtol=0, atol=1e-6)
        assert (version, step) == (5, 40)
        full = len(wire.encode_weights(learner.state_dict(), 5, 40))
        assert len(wire.encode_weights(learner.acting_state_dict(), 5, 40)) < full   # no critics or optimizers
    finally:
        env.close()
