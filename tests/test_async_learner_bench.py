"""``python -m benchmarks async-learner`` on lift: demos recorded once and given to every mode, on tiny budgets.

The figures themselves (sync against the background learner on lift at 20 Hz) are in
docs/benchmarks.md, "Asynchronous learner"; here only the wiring: the task's recipe, one demo dataset
for every mode, and the per-mode results.
"""

from __future__ import annotations

import argparse
import json

import pytest

from benchmarks import actors
from benchmarks import async_learner as bench
from benchmarks.__main__ import main
from tests.support.tiny_recipes import tiny_lift_recipe
from se_robot.train_config import load_config

pytestmark = pytest.mark.timeout(400)


def test_every_lift_mode_trains_on_the_one_recorded_demo_dataset(tmp_path, monkeypatch):
    recorded = []
    record = actors.record_demos

    def counted(path, task, episodes, seed, cfg):
        recorded.append((path, task, episodes, seed))
        record(path, task, episodes, seed, cfg)

    monkeypatch.setattr(actors, "record_demos", counted)
    out = tmp_path / "bench"
    assert main(["async-learner", "--tasks", "lift", "--recipe", str(tiny_lift_recipe(tmp_path, 20, 8, 16)), "--modes",
                 "sync,async-wait,async+rt", "--steps", "40", "--async-steps", "40", "--eval-every", "20",
                 "--eval-episodes", "1", "--demo-episodes", "2", "--rate-hz", "500", "--seed", "3",
                 "--out", str(out)]) == 0
    demos = (out / "demos_lift_2").resolve()
    assert recorded == [(demos, "lift", 2, 50_003)]   # once, for both modes, on seeds no run uses
    assert len(list(demos.glob("episode_*.npz"))) == 2
    results = json.loads((out / "results.json").read_text())["results"]
    assert [r["mode"] for r in results] == ["sync", "async-wait", "async+rt"]
    for r in results:
        assert r["demos"] == str(demos) and r["steps"] == 40
        # the +rt run only checks the wiring: its FIFO acting thread may finish 40 steps before the
        # learner thread gets a core on a loaded machine
        assert r["updates"] > 0 or r["mode"] == "async+rt"
        saved = load_config(saved=out / f"lift_{r['mode']}_seed3" / "config.yaml")
        assert (saved.task, saved.algo, saved.learning_starts, saved.demos) == ("lift", "sac", 20, str(demos))
        assert saved.async_learner == (r["mode"] != "sync")
        assert saved.rt_priority == (10 if r["mode"] == "async+rt" else 0)


def test_each_task_defaults_to_its_recipe_and_only_lift_to_demos(tmp_path):
    args = argparse.Namespace(recipe=None, demos=None, demo_episodes=None, out=str(tmp_path))
    assert (bench._recipe("lift", args), bench._recipe("reach", args)) == ("lift_sac_demos", "reach_mbpo_quick")
    assert bench._demos_dir("lift", args) == str((tmp_path / "demos_lift_20").resolve())
    assert bench._demos_dir("reach", args) == ""
    given = argparse.Namespace(recipe="lift_sac_demos", demos=str(tmp_path / "mine"), demo_episodes=None,
                               out=str(tmp_path))
    assert bench._demos_dir("reach", given) == str((tmp_path / "mine").resolve())
    assert bench._record_demos("lift", given) == str((tmp_path / "mine").resolve())   # given: nothing recorded
    assert not (tmp_path / "mine").exists()
