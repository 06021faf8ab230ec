"""The single-process loop with a background learner (``async_learner: true``) on the twin's reach
task from the state vector: it trains, checkpoints and resumes; updates never run ahead of the data;
the learner's weights reach the acting copy; an error on either side stops the thread."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import gymnasium as gym
import pytest
import torch

os.environ.setdefault("MUJOCO_GL", "egl")

from se_robot import checkpoint  # noqa: E402
from se_robot.agents.replay import ReplayBuffer  # noqa: E402
from se_robot.config import ConfigError  # noqa: E402
from se_robot.envs import make_env  # noqa: E402
from se_robot.logger import Logger  # noqa: E402
from se_robot.train import build_trainer, load_config  # noqa: E402
from se_robot.train_async import update_step, updates_owed  # noqa: E402

pytestmark = pytest.mark.timeout(300)

LEARNING_STARTS = 40
ASYNC_SAC = {
    "task": "reach", "algo": "sac", "obs_mode": "state", "frame_stack": 1, "action_repeat": 1, "steps": 300,
    "seed": 5, "learning_starts": LEARNING_STARTS, "eval_every": 150, "eval_episodes": 1, "eval_video": False,
    "checkpoint_every": 100, "keep_checkpoints": 5, "log_every": 25, "tensorboard": False, "progress": False,
    "device": "cpu", "threads": 1, "async_learner": True,
    "replay": {"capacity": 1000, "n_step": 1, "discount": 0.9},
    "agent": {"batch_size": 16, "hidden_dim": 32, "min_replay": 16},
}


class Paced(gym.Wrapper):
    """The twin at a robot's pace: each step takes at least ``period_s`` (so the learner can keep up)."""

    def __init__(self, env: gym.Env, period_s: float, fail_at: int | None = None):
        super().__init__(env)
        self.period_s, self.fail_at, self.steps = period_s, fail_at, 0
        self.on_reset = lambda: None

    def reset(self, **kwargs):
        self.on_reset()
        return self.env.reset(**kwargs)

    def step(self, action):
        self.steps += 1
        if self.fail_at is not None and self.steps >= self.fail_at:
            raise RuntimeError("the env failed")
        time.sleep(self.period_s)
        return self.env.step(action)


def _envs(period_s: float = 0.0, fail_at: int | None = None):
    return (Paced(make_env("reach", obs_mode="state", frame_stack=1, action_repeat=1), period_s, fail_at),
            make_env("reach", obs_mode="state", frame_stack=1, action_repeat=1))


def _record_updates(trainer) -> list[tuple[int, int, int]]:
    """(update index, transitions in the replay, step it was told) at every update the learner makes."""
    calls: list[tuple[int, int, int]] = []
    update = trainer.agent.update

    def recorded(replay, demos, step):
        calls.append((len(calls), replay.transitions, step))
        return update(replay, demos, step)

    trainer.agent.update = recorded
    return calls


def _learner_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "background-learner"]


@pytest.fixture(scope="module")
def first_half(tmp_path_factory) -> tuple[Path, list, dict]:
    """150 steps of a 300-step async run at 100 Hz, stopped there; its run dir, updates and initial weights."""
    run = tmp_path_factory.mktemp("async") / "run"
    trainer = build_trainer(load_config(None, ASYNC_SAC), run, envs=_envs(0.01))
    initial = {k: v.clone() for k, v in trainer.agent.acting_state_dict()["actor"].items()}
    calls = _record_updates(trainer)
    trainer.train(stop_at=150)
    trainer.logger.close()
    assert not _learner_threads(), "the learner thread ended with the run"
    # after the run the acting copy holds the learner's last weights
    for name, tensor in trainer.agent.acting_state_dict()["actor"].items():
        assert torch.equal(tensor, trainer.acting.acting_state_dict()["actor"][name]), name
    return run, calls, initial


def test_updates_follow_the_data_and_never_run_ahead(first_half):
    _, calls, _ = first_half
    assert calls, "the background learner updated"
    for index, transitions, step in calls:
        # the k-th update needs k + 1 transitions past learning_starts, as the synchronous loop makes it
        assert index < transitions - LEARNING_STARTS + 1, (index, transitions)
        assert step == update_step(LEARNING_STARTS, index)
    assert updates_owed(LEARNING_STARTS - 1, LEARNING_STARTS, 0) == 0
    assert updates_owed(LEARNING_STARTS, LEARNING_STARTS, 0) == 1


def test_checkpoints_hold_every_transition_and_the_learner_count(first_half):
    run, calls, _ = first_half
    saved = [checkpoint.load(c) for c in checkpoint.list_checkpoints(run)]
    assert [int(s["trainer"]["step"]) for s in saved] == [100, 150]
    for s in saved:
        step, updates = int(s["trainer"]["step"]), int(s["trainer"]["learner_updates"])
        # paused for the checkpoint, the learner had taken in every transition the loop had given
        assert ReplayBuffer.load(Path(s["path"]) / "replay").transitions == step
        assert 0 < updates <= step - LEARNING_STARTS + 1
    assert int(saved[-1]["trainer"]["learner_updates"]) == len(calls)


def test_weights_reach_the_acting_copy(first_half):
    run, calls, initial = first_half
    rows = Logger.read(run / "learner.csv")
    versions = [float(r["learner/weights_version"]) for r in rows]
    assert versions == sorted(versions) and versions[-1] > 1, versions
    ratio = [float(r["learner/updates_per_step"]) for r in rows]
    assert all(0.0 <= r <= 1.0 for r in ratio), ratio
    trained = checkpoint.load(run)["agent"]["actor"]
    assert any(not torch.equal(trained[k], initial[k]) for k in initial), "the policy learned"


def test_async_run_resumes_and_continues(first_half, tmp_path):
    run, calls, _ = first_half
    resume_from = [c for c in checkpoint.list_checkpoints(run) if not checkpoint.load(c)["trainer"]["mid_episode"]][-1]
    saved = checkpoint.load(resume_from)["trainer"]
    trainer = build_trainer(load_config(None, ASYNC_SAC), run, resume=resume_from, envs=_envs(0.005))
    assert trainer.step == int(saved["step"]) and trainer.learner_updates == int(saved["learner_updates"])
    # the acting copy starts from the checkpoint's policy, not a fresh one
    for name, tensor in trainer.agent.acting_state_dict()["actor"].items():
        assert torch.equal(tensor, trainer.acting.acting_state_dict()["actor"][name]), name
    resumed = _record_updates(trainer)
    trainer.train()
    trainer.logger.close()
    assert trainer.step == 300
    assert [int(float(r["step"])) for r in Logger.read(run / "eval.csv")][-1] == 300
    final = checkpoint.load(run)["trainer"]
    assert final["step"] == 300 and int(final["learner_updates"]) == int(saved["learner_updates"]) + len(resumed)
    for index, transitions, step in resumed:   # the count goes on from the checkpoint's
        assert step == update_step(LEARNING_STARTS, int(saved["learner_updates"]) + index)
        assert int(saved["learner_updates"]) + index < transitions - LEARNING_STARTS + 1


def test_an_env_error_stops_the_learner_thread(tmp_path):
    trainer = build_trainer(load_config(None, ASYNC_SAC), tmp_path / "run", envs=_envs(fail_at=80))
    with pytest.raises(RuntimeError, match="the env failed"):
        trainer.train()
    trainer.logger.close()
    assert trainer.learner is None and not _learner_threads()


def test_a_learner_error_stops_the_loop(tmp_path):
    trainer = build_trainer(load_config(None, ASYNC_SAC), tmp_path / "run", envs=_envs(0.002))

    def broken(replay, demos, step):
        raise ValueError("update failed")

    trainer.agent.update = broken
    with pytest.raises(RuntimeError, match="background learner failed") as info:
        trainer.train()
    trainer.logger.close()
    assert isinstance(info.value.__cause__, ValueError)
    assert trainer.step >= LEARNING_STARTS   # the first update came once the data allowed it
    assert trainer.learner is None and not _learner_threads()


def test_max_backlog_holds_episodes_until_the_learner_catches_up(tmp_path):
    config = load_config(None, {**ASYNC_SAC, "steps": 200, "eval_every": 200, "async_max_backlog": 3})
    trainer = build_trainer(config, tmp_path / "run", envs=_envs())   # an unpaced twin outruns the learner
    owed_at_reset: list[int] = []
    trainer.env.on_reset = lambda: owed_at_reset.append(trainer.learner.owed())
    trainer.train()
    trainer.logger.close()
    assert len(owed_at_reset) == 4 and owed_at_reset[0] == 0   # 50-step episodes; none owed before learning
    assert all(owed <= 3 for owed in owed_at_reset), owed_at_reset


def test_rt_priority_puts_the_acting_thread_under_fifo_and_the_learner_stays_normal(tmp_path):
    if not hasattr(os, "sched_setscheduler"):
        pytest.skip("Linux scheduling API")
    cfg = load_config(None, {**ASYNC_SAC, "steps": 80, "eval_every": 1000, "rt_priority": 10})
    train_env, eval_env = _envs(0.005)
    seen: dict[str, set] = {"acting": set(), "learner": set()}
    step, steps, learned = train_env.step, [0], threading.Event()

    def watched_step(action):
        seen["acting"].add(os.sched_getscheduler(0))
        steps[0] += 1
        if steps[0] == LEARNING_STARTS + 10:   # the learner updates at least once while the loop runs
            learned.wait(timeout=120)
        return step(action)

    train_env.step = watched_step
    trainer = build_trainer(cfg, tmp_path / "run", envs=(train_env, eval_env))
    update = trainer.agent.update

    def watched_update(replay, demos, at):
        seen["learner"].add(os.sched_getscheduler(0))
        learned.set()
        return update(replay, demos, at)

    trainer.agent.update = watched_update
    trainer.train()
    trainer.logger.close()
    events = tmp_path / "run" / "events.log"
    refused = events.exists() and "rt_priority:" in events.read_text()
    assert seen["learner"] == {os.SCHED_OTHER}, "the learner thread never runs real-time"
    if refused:   # no privilege here: the run said why and acted at normal priority
        assert seen["acting"] == {os.SCHED_OTHER} and "rtprio" in events.read_text()
    else:
        assert seen["acting"] == {os.SCHED_FIFO}
    assert os.sched_getscheduler(0) == os.SCHED_OTHER, "the thread is back to normal after the run"


def test_rt_priority_without_the_background_learner_is_refused():
    with pytest.raises(ConfigError, match="rt_priority.*needs async_learner"):
        load_config(None, {**ASYNC_SAC, "async_learner": False, "rt_priority": 10})
