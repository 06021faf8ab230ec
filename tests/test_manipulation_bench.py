"""``python -m benchmarks manipulation`` wiring at tiny sizes: every method runs on the recipe's
settings and the same recorded demos, the table, JSON and PNG are written, runs of an earlier
invocation are kept, and bad options are refused before any training. No figures are checked."""

from __future__ import annotations

import json

import pytest
import yaml

from benchmarks.__main__ import main
from benchmarks.manipulation import run_config
from se_robot.train_config import read_recipe

pytestmark = pytest.mark.timeout(400)


def _tiny_recipe(tmp_path, task: str = "lift"):
    """The task's sparse recipe, cut so that a few dozen steps update the agent from replay and demos."""
    data = read_recipe(f"{task}_sac_sparse")
    data.update(learning_starts=20)
    data["agent"] = {**data["agent"], "batch_size": 8, "min_replay": 8, "hidden_dim": 16, "utd_ratio": 1}
    path = tmp_path / f"tiny_{task}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_recipes_are_state_sparse_with_demos_half_of_each_batch():
    for task in ("lift", "push"):
        data = read_recipe(f"{task}_sac_sparse")
        assert (data["task"], data["algo"], data["obs_mode"], data["env"]["reward_type"]) == (task, "sac", "state",
                                                                                              "sparse")
        assert data["agent"]["demo_ratio"] == 0.5 and data["agent"]["critic_layer_norm"]


def test_tiny_run_of_every_method_writes_table_json_and_curves(tmp_path, capsys):
    out = tmp_path / "bench"
    recipe = _tiny_recipe(tmp_path)
    argv = ["manipulation", "--tasks", "lift", "--seeds", "0,1", "--seeds-for", "sb3=0", "--seeds-for", "no-demos=0",
            "--recipe-for", f"lift={recipe}", "--steps", "40", "--steps-for", "sb3=30", "--eval-every", "20",
            "--eval-episodes", "1", "--demo-episodes", "2", "--bc-steps", "20", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "steps to 90%" in text and "median" in text
    saved = json.loads((out / "results.json").read_text())
    runs = {(r["method"], r["seed"]): r for r in saved["results"]}
    assert set(runs) == {("demos", 0), ("demos", 1), ("bc", 0), ("bc", 1), ("sb3", 0), ("no-demos", 0)}
    assert [s for s, _ in runs[("demos", 0)]["curve"]] == [0, 20, 40]
    assert [s for s, _ in runs[("sb3", 0)]["curve"]] == [0, 20, 30]
    assert runs[("bc", 0)]["curve"][0][0] == 0 and len(runs[("bc", 0)]["curve"]) == 1
    assert all(len(r["load_avg"]) == 3 and r["wall_s"] > 0 for r in runs.values())
    assert (out / "learning_curves.png").stat().st_size > 0
    # one set of demos per (task, obs mode, image size, seed), used by the demos run and by BC
    demo_dirs = sorted(p.name for p in (out / "demos").iterdir())
    assert demo_dirs == ["lift_state_84px_seed0", "lift_state_84px_seed1"]
    assert len(list((out / "demos" / demo_dirs[0]).glob("episode_*.npz"))) == 2
    demos_cfg = yaml.safe_load((out / "lift_demos_seed0" / "config.yaml").read_text())
    plain_cfg = yaml.safe_load((out / "lift_no-demos_seed0" / "config.yaml").read_text())
    assert demos_cfg["demos"] == str((out / "demos" / demo_dirs[0]).resolve()) and plain_cfg["demos"] == ""
    assert demos_cfg["env"]["reward_type"] == "sparse" and demos_cfg["agent"]["demo_ratio"] == 0.5

    # a later invocation adds runs; the earlier ones stay in the table and the JSON
    assert main(["manipulation", "--tasks", "lift", "--methods", "bc", "--seeds", "2", "--recipe-for", f"lift={recipe}",
                 "--eval-episodes", "1", "--demo-episodes", "2", "--bc-steps", "20", "--out", str(out)]) == 0
    saved = json.loads((out / "results.json").read_text())
    assert {(r["method"], r["seed"]) for r in saved["results"]} == set(runs) | {("bc", 2)}
    capsys.readouterr()
    (out / "learning_curves.png").unlink()
    assert main(["manipulation", "--report", "--out", str(out)]) == 0   # the table and plot again, no training
    assert capsys.readouterr().out.count("lift  bc") == 4 and (out / "learning_curves.png").is_file()


@pytest.mark.parametrize("bad, message", [
    (["--methods", "demos,ppo"], "unknown"),
    (["--tasks", "reach"], "unknown"),
    (["--recipe-for", "stack=lift_sac_sparse"], "--recipe-for"),
    (["--steps-for", "sb3=lots"], "positive integers"),
    (["--seeds-for", "bc=a"], "integers"),
    (["--eval-episodes", "0"], "at least 1"),
    (["--bc-steps", "0"], "at least 1"),
    (["--report"], "no .*results.json"),
    (["--tasks", "push", "--recipe-for", "push=lift_sac_sparse"], "for task lift, not push"),
])
def test_bad_options_are_refused_before_training(tmp_path, bad, message):
    with pytest.raises(SystemExit, match=message):
        main(["manipulation", "--out", str(tmp_path / "bench")] + bad)
    assert not (tmp_path / "bench" / "results.json").exists()


def test_run_config_follows_the_recipe_and_overrides_only_the_run(tmp_path):
    import argparse

    args = argparse.Namespace(eval_every=250, eval_episodes=5, threads=1, threshold=0.9, stop_when_solved=True)
    cfg = run_config("push", "push_sac_sparse", 2, None, "", args)
    assert cfg.steps == read_recipe("push_sac_sparse")["steps"] and cfg.seed == 2 and cfg.stop_at_success == 0.9
    assert cfg.agent == read_recipe("push_sac_sparse")["agent"] and cfg.env["reward_type"] == "sparse"
    assert run_config("push", "push_sac_sparse", 2, 123, "", args).steps == 123
