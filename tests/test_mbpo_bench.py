"""The sample-efficiency benchmark: the task reward on state vectors matches the env, and a tiny run
of ``python -m benchmarks sample-efficiency`` trains all three learners and writes its figures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.__main__ import main
from benchmarks.common import steps_to
from se_robot.envs.spaces import state_reward_fn as task_reward_fn

pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize("task", ["reach", "push"])
def test_task_reward_fn_reproduces_env_reward_and_termination(task):
    from se_robot.agents.obs import vector_obs
    from se_robot.envs import make_env

    env = make_env(task, obs_mode="state")
    reward_fn = task_reward_fn(env)
    obs, _ = env.reset(seed=0)
    rows = []
    for _ in range(120):
        action = env.action_space.sample()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        rows.append((vector_obs(obs), action, vector_obs(next_obs), reward, terminated))
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
    s, a, ns, r, t = (np.array(c) for c in zip(*rows))
    reward, terminated = reward_fn(s, a, ns)
    np.testing.assert_allclose(reward, r, atol=1e-5)
    np.testing.assert_array_equal(terminated, t)
    assert task_reward_fn(make_env(task, obs_mode="both")) is None


def test_malformed_steps_for_fails_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit, match="--steps-for 'sb3=lots'"):
        main(["sample-efficiency", "--steps-for", "sb3=lots", "--out", str(tmp_path)])
    assert not (tmp_path / "results.json").exists()


def test_steps_to():
    curve = [{"step": s, "success": v} for s, v in [(0, 0.0), (500, 0.6), (1000, 0.9), (1500, 1.0)]]
    assert steps_to(curve, 0.9) == 1000
    assert steps_to(curve[:2], 0.9) is None


def test_tiny_run_of_all_three_learners(tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["sample-efficiency", "--tasks", "reach", "--seeds", "0", "--steps", "200",
                 "--eval-every", "100", "--eval-episodes", "1", "--learning-starts", "100",
                 "--mbpo-set", "utd_ratio=1", "--mbpo-set", "model_min_transitions=100",
                 "--mbpo-set", "rollout_batch_size=100", "--mbpo-set", "model.max_grad_steps=20",
                 "--mbpo-set", "sac.min_replay=64", "--sac-set", "min_replay=64", "--sac-set", "batch_size=32", "--threads", "1", "--out", str(out),
                 "--steps-for", "sb3=300", "--discount", "0.9"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "vs sb3" in printed and "mbpo" in printed and "sb3" in printed
    results = json.loads((out / "results.json").read_text())["results"]
    assert {r["algo"] for r in results} == {"mbpo", "sac", "sb3"}
    for r in results:   # sb3 ran its own budget (--steps-for)
        assert [step for step, _ in r["curve"]] == ([0, 100, 200, 300] if r["algo"] == "sb3" else [0, 100, 200])
    assert (out / "learning_curves.png").stat().st_size > 1000
    import yaml

    for algo in ("mbpo", "sac"):   # --discount reaches the se_robot agents' replay (and with it MBPO's rollouts)
        assert yaml.safe_load((out / f"reach_{algo}_seed0" / "config.yaml").read_text())["replay"]["discount"] == 0.9
    logged = (out / "reach_mbpo_seed0" / "model.csv").read_text()  # MBPO refitted its model inside the loop
    assert "model/holdout_loss/member_6" in logged and "model/rollout_length" in logged


def test_jobs_train_in_processes_and_give_the_same_figures(tmp_path, capsys):
    tiny = ["sample-efficiency", "--tasks", "reach", "--seeds", "0,1", "--algos", "mbpo,sac",
            "--steps", "150", "--eval-every", "75", "--eval-episodes", "1", "--learning-starts", "100",
            "--mbpo-set", "utd_ratio=1", "--mbpo-set", "model_min_transitions=100",
            "--mbpo-set", "rollout_batch_size=50", "--mbpo-set", "model.max_grad_steps=10",
            "--mbpo-set", "sac.min_replay=64", "--sac-set", "min_replay=64", "--threads", "1"]
    assert main(tiny + ["--out", str(tmp_path / "serial")]) == 0
    assert main(tiny + ["--out", str(tmp_path / "parallel"), "--jobs", "2"]) == 0
    serial, parallel = (json.loads((tmp_path / d / "results.json").read_text())["results"]
                        for d in ("serial", "parallel"))
    assert [(r["algo"], r["seed"]) for r in parallel] == [("mbpo", 0), ("mbpo", 1), ("sac", 0), ("sac", 1)]  # --algos order
    for a, b in zip(serial, parallel):  # eval success is coarse: compare the returns the runs logged
        assert a["curve"] == b["curve"]
        returns = [(tmp_path / d / f"reach_{a['algo']}_seed{a['seed']}" / "eval.csv").read_text().splitlines()
                   for d in ("serial", "parallel")]
        assert [line.split(",")[:3] for line in returns[0]] == [line.split(",")[:3] for line in returns[1]]
    assert (tmp_path / "parallel" / "learning_curves.png").exists()
    with pytest.raises(SystemExit, match="--jobs must be at least 1"):
        main(tiny + ["--out", str(tmp_path / "bad"), "--jobs", "0"])


def test_the_loop_gives_mbpo_the_task_reward(tmp_path):
    from se_robot.train import build_trainer, load_config

    base = {"task": "reach", "algo": "mbpo", "obs_mode": "state", "frame_stack": 1, "action_repeat": 1,
            "tensorboard": False, "progress": False, "replay": {"capacity": 100, "n_step": 1}}
    trainer = build_trainer(load_config(None, base), tmp_path / "a")
    assert trainer.agent.reward_fn is not None
    trainer = build_trainer(load_config(None, {**base, "action_repeat": 2}), tmp_path / "b")
    assert trainer.agent.reward_fn is None  # a repeated action's reward is a sum: learned instead
