"""The observation contract: vector keys concatenated in one fixed order, single or batched."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from se_robot.agents.obs import VECTOR_KEYS, newest_frame, vector_dim, vector_keys, vector_obs


def _box(n: int) -> gym.spaces.Box:
    return gym.spaces.Box(-np.inf, np.inf, (n,), np.float32)


def test_vector_keys_order_is_features_state_task():
    assert VECTOR_KEYS == ("features", "state", "task")
    obs = {"task": np.array([7.0, 8.0]), "pixels": np.zeros((3, 2, 2), np.uint8),
           "state": np.array([3.0, 4.0, 5.0]), "features": np.array([1.0, 2.0])}
    out = vector_obs(obs)   # dict order does not matter, the contract's order does
    np.testing.assert_array_equal(out, [1, 2, 3, 4, 5, 7, 8])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(vector_obs({"task": [9.0], "state": [1.0, 2.0]}), [1, 2, 9])
    np.testing.assert_array_equal(vector_obs(obs, keys=("state", "task")), [3, 4, 5, 7, 8])


def test_vector_obs_is_batched_along_the_last_axis():
    batch = {"state": np.arange(6, dtype=np.float32).reshape(3, 2), "task": np.full((3, 1), 9.0)}
    out = vector_obs(batch)
    assert out.shape == (3, 3)
    np.testing.assert_array_equal(out[1], [2, 3, 9])


def test_space_counterpart_matches_and_refuses_what_is_not_a_vector():
    space = gym.spaces.Dict({"task": _box(3), "state": _box(10),
                             "pixels": gym.spaces.Box(0, 255, (9, 8, 8), np.uint8)})
    assert vector_keys(space) == ("state", "task") and vector_dim(space) == 13
    sample = space.sample()
    assert vector_obs(sample).shape == (vector_dim(space),)
    assert vector_dim(gym.spaces.Dict({"pixels": gym.spaces.Box(0, 255, (3, 8, 8), np.uint8)})) == 0
    with pytest.raises(TypeError, match="Dict"):
        vector_keys(_box(4))
    with pytest.raises(ValueError, match="flat vector"):
        vector_keys(gym.spaces.Dict({"state": gym.spaces.Box(0, 1, (2, 2), np.float32)}))
    with pytest.raises(KeyError, match="vector keys"):
        vector_obs({"pixels": np.zeros((3, 2, 2), np.uint8)})
    with pytest.raises(TypeError, match="dicts"):
        vector_obs(np.zeros(4))


def test_newest_frame_of_a_channel_first_stack():
    stack = np.arange(6 * 2 * 2, dtype=np.uint8).reshape(6, 2, 2)
    np.testing.assert_array_equal(newest_frame(stack), stack[3:])
    with pytest.raises(ValueError, match=r"\(3k, H, W\)"):
        newest_frame(np.zeros((2, 2, 3), np.uint8))
