"""The lift recipe and ``python -m benchmarks actors --task lift`` wiring, on tiny budgets.

The recipe must load, validate and build its agent; the benchmark must give the recipe and the same
recorded demos to the loop and to the split learner, put the task on every node, and write each
run's curve (with arm-minutes) and the plot. The figures themselves are in docs/benchmarks.md.
"""

from __future__ import annotations

import json

import pytest

import rclpy  # noqa: F401 - required: CI must fail, not skip, without it

from benchmarks.__main__ import main
from tests.support.tiny_recipes import tiny_lift_recipe
from se_robot.config import ConfigError
from se_robot.train_config import load_config

pytestmark = pytest.mark.timeout(400)


def test_lift_recipe_loads_validates_and_builds_its_agent(tmp_path):
    from se_robot.agents.registry import make_agent
    from se_robot.envs import make_env

    cfg = load_config("lift_sac_demos", {"demos": str(tmp_path)})
    assert (cfg.task, cfg.algo, cfg.obs_mode, cfg.frame_stack, cfg.action_repeat) == ("lift", "sac", "state", 1, 1)
    assert cfg.agent == {"utd_ratio": 2, "critic_layer_norm": True, "demo_ratio": 0.5}
    env = make_env("lift", obs_mode="state")
    try:
        agent = make_agent(cfg.algo, env.observation_space, env.action_space, dict(cfg.agent), "cpu", cfg.seed)
    finally:
        env.close()
    assert agent.cfg.utd_ratio == 2 and agent.cfg.critic_layer_norm and agent.cfg.demo_ratio == 0.5
    with pytest.raises(ConfigError, match="utd_ratio"):   # a misspelt agent value is refused, not ignored
        make_agent("sac", env.observation_space, env.action_space, {**cfg.agent, "utd_ratio": 0}, "cpu", 0)


def test_tiny_lift_runs_share_recipe_and_demos_and_write_curves(tmp_path, capsys):
    out = tmp_path / "bench"
    common = ["actors", "--task", "lift", "--figures", "efficiency", "--recipe", str(tiny_lift_recipe(tmp_path, 40, 16, 32)),
              "--steps", "100", "--eval-every", "50", "--eval-episodes", "1", "--demo-episodes", "2",
              "--out", str(out)]
    assert main(common + ["--actors", ""]) == 0   # the loop only
    demos = out / "demos_lift_2"
    assert len(list(demos.glob("episode_*.npz"))) == 2
    loop = json.loads((out / "loop.json").read_text())
    assert loop["settings"]["demos"] == str(demos.resolve()) and loop["settings"]["task"] == "lift"
    saved = load_config(saved=out / "loop" / "config.yaml")
    assert (saved.task, saved.algo, saved.learning_starts, saved.demos) == ("lift", "sac", 40, str(demos.resolve()))
    assert [r["step"] for r in loop["curve"]] == [0, 50, 100]
    assert all(r["arm_min"] == pytest.approx(r["step"] / 10.0 / 60.0) for r in loop["curve"])

    # a finished loop run is taken as is when its learning settings match, and refused when not
    assert main(common + ["--actors", "", "--loop-run", str(out / "loop")]) == 0
    capsys.readouterr()
    assert main(common + ["--actors", "", "--loop-run", str(out / "loop"), "--seed", "3"]) == 2
    assert "seed: 0 where the benchmark's loop has 3" in capsys.readouterr().err

    # split: the learner and one actor on lift with the same recipe and demos
    assert main(common + ["--actors", "1", "--actor-hz", "200", "--no-baseline"]) == 0
    split = json.loads((out / "split_1.json").read_text())
    assert split["curve"] and split["learner"]["learner/finished"] == 1
    assert split["learner"]["learner/transitions"] >= 100 and split["learner"]["learner/updates"] > 0
    assert not {k: v for k, v in split["learner"].items() if k.startswith("learner/rejected") and v}
    # the learner trained with the loop's recipe and demos (its checkpoint records its config)
    learner_cfg = load_config(saved=next((out / "split_1").rglob("config.yaml")))
    assert (learner_cfg.task, learner_cfg.learning_starts, learner_cfg.demos) == ("lift", 40, str(demos.resolve()))
    assert learner_cfg.agent == saved.agent
    report = capsys.readouterr().out
    assert "loop" in report and "split_1" in report
    assert (out / "actors_lift.png").stat().st_size > 1000
