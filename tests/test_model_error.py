"""The model-error benchmark: the cube's columns are the cube's, and a tiny run prints its table."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.__main__ import main
from benchmarks.model_error import collect, columns

pytestmark = pytest.mark.timeout(300)


def test_columns_point_at_the_gripper_and_the_cube_in_the_state_vector():
    from se_robot.agents.obs import vector_obs
    from se_robot.envs import make_env

    env = make_env("push", obs_mode="state")
    try:
        obs, _ = env.reset(seed=3)
        s = env.unwrapped.object_state()
        ee, cube = columns("push")
        v = vector_obs(obs)
        np.testing.assert_allclose(v[cube], s.cube_pos, atol=1e-5)
        np.testing.assert_allclose(v[ee], s.ee_pos, atol=1e-5)
    finally:
        env.close()
    with pytest.raises(SystemExit, match="no cube"):
        columns("reach")


def test_the_expert_pushes_the_cube_and_idle_steps_do_not():
    data = collect("push", episodes=2, expert_share=1.0, noise=0.0, seed=0)
    moved = np.linalg.norm(data["next_cube"] - data["cube"], axis=1)
    assert data["expert"].all() and (moved > 1e-3).any()
    # the cube before a step is the cube after the one before, within an episode
    same = data["episode"][1:] == data["episode"][:-1]
    np.testing.assert_allclose(data["cube"][1:][same], data["next_cube"][:-1][same], atol=1e-6)


def test_a_tiny_run_prints_the_contact_table(capsys):
    assert main(["model-error", "--task", "push", "--episodes", "4", "--expert-share", "1.0",
                 "--horizons", "1,2", "--set", "max_grad_steps=20", "--set", "min_grad_steps=0"]) == 0
    out = capsys.readouterr().out
    assert "contact steps (cube moved > 1 mm)" in out
    assert "cube position, 'the cube stays put'" in out and "after 2 steps" in out
