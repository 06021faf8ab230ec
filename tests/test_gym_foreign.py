"""Bring your own env: Gymnasium envs no one here wrote train through ``se-robot train --env-id``.

Pendulum-v1 (gymnasium's own, action bounds [-2, 2]) is the state env; an image (+state) env with
lopsided action bounds is defined below, registered under a test id, for DrQ-v2 on pixels.
"""

import os
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from se_robot.config import ConfigError
from se_robot.envs import make_env
from se_robot.envs.foreign import ForeignEnv, make_foreign_env
from se_robot.train_config import load_config

pytestmark = pytest.mark.timeout(300)

LOW, HIGH = np.array([0.0, -3.0]), np.array([2.0, 5.0])


class ImageEnv(gym.Env):
    """A lit square to move onto a goal: pixels (24 x 20 x 3) and a state vector, actions in [0, 2] x [-3, 5]."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode=None, episode_steps: int = 10):
        self.render_mode, self.episode_steps = render_mode, episode_steps
        self.observation_space = gym.spaces.Dict({
            "pixels": gym.spaces.Box(0, 255, (24, 20, 3), np.uint8),
            "state": gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)})
        self.action_space = gym.spaces.Box(LOW, HIGH, dtype=np.float64)
        self.last_action = None

    def _obs(self):
        img = np.zeros((24, 20, 3), np.uint8)
        r, c = int(self.pos[0] * 23), int(self.pos[1] * 19)
        img[r, c] = 255
        return {"pixels": img, "state": self.pos.astype(np.float64)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.t = self.np_random.uniform(0, 1, 2), 0
        return self._obs(), {}

    def step(self, action):
        self.last_action = np.asarray(action)
        self.pos = np.clip(self.pos + 0.05 * (self.last_action - (LOW + HIGH) / 2) / (HIGH - LOW), 0, 1)
        self.t += 1
        reward = -float(np.abs(self.pos - 0.5).sum())
        return self._obs(), reward, False, self.t >= self.episode_steps, {}

    def render(self):
        return self._obs()["pixels"]


gym.register("se_robot_test/Image-v0", entry_point=ImageEnv, max_episode_steps=10)


def test_actions_are_rescaled_onto_the_env_bounds():
    env = ForeignEnv(ImageEnv(), obs_mode="both", image_size=16)
    env.reset(seed=0)
    assert env.action_space.low.tolist() == [-1, -1] and env.action_space.high.tolist() == [1, 1]
    for action, expected in (([-1, -1], LOW), ([1, 1], HIGH), ([0, 0], (LOW + HIGH) / 2), ([3, -7], [2.0, -3.0])):
        env.step(np.array(action, np.float32))
        np.testing.assert_allclose(env.unwrapped.last_action, expected, atol=1e-6)
        assert env.unwrapped.last_action.dtype == np.float64   # the env's own dtype


def test_observations_follow_the_declared_rule():
    pend = make_env(env_id="Pendulum-v1", obs_mode="state")
    obs, _ = pend.reset(seed=0)
    assert set(obs) == {"state"} and obs["state"].dtype == np.float32 and obs["state"].shape == (3,)
    np.testing.assert_allclose(pend.unwrapped.action_space.high, [2.0])

    both = make_env(env_id="se_robot_test/Image-v0", obs_mode="both", image_size=16, frame_stack=3)
    obs, _ = both.reset(seed=0)
    assert obs["pixels"].shape == (9, 16, 16) and obs["pixels"].dtype == np.uint8   # resized, stacked channel-first
    assert obs["state"].dtype == np.float32 and both.observation_space.contains(obs)
    only = make_env(env_id="se_robot_test/Image-v0", obs_mode="pixels", image_size=24, frame_stack=1)
    assert set(only.reset(seed=0)[0]) == {"pixels"}

    with pytest.raises(ValueError, match="needs a state vector"):
        ForeignEnv(gym.wrappers.FilterObservation(ImageEnv(), ["pixels"]), obs_mode="state")
    with pytest.raises(ValueError, match="discrete actions are not supported"):
        make_foreign_env("CartPole-v1")
    with pytest.raises(ValueError, match="render_mode='rgb_array'"):
        ForeignEnv(gym.make("Pendulum-v1"), obs_mode="pixels")   # rendered pixels need rgb_array
    unbounded = ImageEnv()
    unbounded.action_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
    with pytest.raises(ValueError, match="unbounded"):
        ForeignEnv(unbounded)


def test_the_wrapped_env_passes_gymnasiums_checker():
    for env in (make_env(env_id="Pendulum-v1", obs_mode="state"),
                make_env(env_id="se_robot_test/Image-v0", obs_mode="both", image_size=16, frame_stack=0)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_env(env, skip_render_check=True)


def test_config_defaults_follow_the_observation_and_leave_the_tasks_alone():
    state = load_config(overrides={"env_id": "Pendulum-v1", "algo": "sac"})
    assert (state.obs_mode, state.frame_stack, state.action_repeat, state.replay.n_step) == ("state", 1, 1, 1)
    asked = load_config(overrides={"env_id": "Pendulum-v1", "algo": "sac"}, set_pairs=["replay.n_step=3"])
    assert asked.replay.n_step == 3
    pixels = load_config(overrides={"env_id": "se_robot_test/Image-v0", "obs_mode": "pixels"})
    assert (pixels.frame_stack, pixels.replay.n_step, pixels.action_repeat) == (3, 3, 1)
    task = load_config()   # the arm's defaults are unchanged
    assert (task.env_id, task.obs_mode, task.frame_stack, task.action_repeat, task.replay.n_step) == \
        ("", "pixels", 3, 2, 3)
    for key, value in (("backend", "hardware"), ("teleop", "keyboard"), ("demos", "somewhere")):
        with pytest.raises(ConfigError, match=key):
            load_config(overrides={"env_id": "Pendulum-v1", key: value})


def test_random_warm_up_is_uniform_from_the_agents_own_generator():
    from se_robot.agents.registry import make_agent

    env = make_env(env_id="se_robot_test/Image-v0", obs_mode="state")
    obs, _ = env.reset(seed=0)
    for algo, cfg in (("sac", {"random_steps": 300, "hidden_dim": 16}),
                      ("mbpo", {"sac": {"random_steps": 300, "hidden_dim": 16}})):
        agent = make_agent(algo, env.observation_space, env.action_space, cfg, "cpu", seed=7)
        sac = agent.sac if algo == "mbpo" else agent
        expected = np.random.default_rng(7).uniform(-1, 1, (300, 2))
        drawn = np.stack([agent.act(obs, step, eval_mode=False) for step in range(300)])
        np.testing.assert_allclose(drawn, expected, atol=1e-6)   # uniform over the whole box, checkpointed rng
        state = sac.rng.bit_generator.state
        agent.act(obs, 300, eval_mode=False)   # after the warm-up the policy acts: no draw from the rng
        agent.act(obs, 0, eval_mode=True)      # evaluation is never random
        assert sac.rng.bit_generator.state == state
    default = make_agent("sac", env.observation_space, env.action_space, {"hidden_dim": 16}, "cpu", seed=7)
    first = default.rng.bit_generator.state
    default.act(obs, 0, eval_mode=False)
    assert default.rng.bit_generator.state == first   # random_steps 0: the policy acts from step 0, as before


def test_random_steps_flag_sets_each_algos_key():
    from se_robot.commands.train import with_random_steps

    for algo, key in (("sac", {"random_steps": 50}), ("mbpo", {"sac": {"random_steps": 50}}),
                      ("drqv2", {"num_expl_steps": 50})):
        cfg = with_random_steps(load_config(overrides={"env_id": "Pendulum-v1", "algo": algo}), 50)
        part = cfg.agent["sac"] if algo == "mbpo" else cfg.agent
        assert part.items() >= (key["sac"] if algo == "mbpo" else key).items()


TINY_SAC = ["--set", "agent.hidden_dim=32", "--set", "agent.batch_size=32", "--set", "agent.min_replay=32"]


def _train(out, *extra):
    from se_robot.cli import main

    return main(["train", "--env-id", "Pendulum-v1", "--algo", "sac", "--out", str(out), "--no-progress",
                 "--random-steps", "100", "--set", "learning_starts=100", "--set", "eval_every=200",
                 "--set", "eval_episodes=1", "--set", "eval_video=false", "--set", "checkpoint_every=200",
                 "--set", "device=cpu", "--set", "tensorboard=false", *TINY_SAC, *extra])


def _actor(run_dir):
    from se_robot import checkpoint

    return checkpoint.load(checkpoint.resolve(run_dir))["agent"]["actor"]


def test_cli_trains_sac_on_pendulum_and_resumes_exactly(tmp_path):
    """The real entry point trains on Pendulum-v1; stopped at 200 steps and resumed, the run ends
    where an uninterrupted one does (same weights, same evaluation return)."""
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "-m", "se_robot.cli", "train", "--env-id", "Pendulum-v1", "--algo", "sac",
                           "--steps", "200", "--out", str(tmp_path / "cut"), "--no-progress", "--random-steps", "100",
                           "--set", "learning_starts=100", "--set", "eval_every=200", "--set", "eval_episodes=1",
                           "--set", "eval_video=false", "--set", "checkpoint_every=200", "--set", "device=cpu",
                           "--set", "tensorboard=false", "--set", "threads=1", *TINY_SAC],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "sac on Pendulum-v1 (state, sim)" in proc.stdout
    assert (tmp_path / "cut" / "checkpoints" / "step_000000200").is_dir()

    assert _train(tmp_path / "cut", "--resume", str(tmp_path / "cut"), "--more-steps", "200") == 0
    assert _train(tmp_path / "whole", "--steps", "400") == 0
    cut, whole = _actor(tmp_path / "cut"), _actor(tmp_path / "whole")
    for name in whole:
        torch.testing.assert_close(cut[name], whole[name], rtol=0, atol=0)
    # step, success, return, length, episodes (the last column is wall-clock seconds)
    rows = [(tmp_path / run / "eval.csv").read_text().splitlines()[-1].split(",")[:5] for run in ("cut", "whole")]
    assert rows[0] == rows[1] and rows[0][0] == "400"
    assert (tmp_path / "cut" / "train.csv").read_text().count("\n") > 2   # episodes and updates logged

    from se_robot.cli import main

    assert main(["evaluate", "--checkpoint", str(tmp_path / "cut"), "--episodes", "1",
                 "--out", str(tmp_path / "eval")]) == 0
    assert '"eval/return"' in (tmp_path / "eval" / "eval.json").read_text()


def test_mbpo_learns_the_reward_of_a_foreign_env(tmp_path):
    from se_robot.train import build_trainer

    cfg = load_config(overrides={
        "env_id": "Pendulum-v1", "algo": "mbpo", "steps": 300, "learning_starts": 100, "eval_every": 300,
        "eval_episodes": 1, "eval_video": False, "tensorboard": False, "progress": False, "device": "cpu",
        "agent": {"utd_ratio": 2, "model_min_transitions": 100, "model_train_interval_steps": 100,
                  "rollout_batch_size": 200, "rollout_schedule": [0, 300, 1, 2],
                  "sac": {"random_steps": 100, "hidden_dim": 32, "batch_size": 32, "min_replay": 32},
                  "model": {"hidden_dim": 32, "num_layers": 2, "ensemble_size": 3, "num_elites": 2,
                            "max_grad_steps": 50, "min_grad_steps": 10, "batch_size": 64}}})
    trainer = build_trainer(cfg, tmp_path / "mbpo")
    assert trainer.agent.reward_fn is None   # no task reward to score rollouts with: the model's reward head
    metrics = trainer.train()
    trainer.logger.close()
    assert trainer.step == 300 and np.isfinite(metrics["eval/return"])
    assert len(trainer.agent.buffer) > 0 and trainer.agent.sac.num_updates > 0   # model rollouts feed SAC


def test_drqv2_trains_on_image_and_state_observations(tmp_path):
    from se_robot.train import build_trainer

    cfg = load_config(overrides={
        "env_id": "se_robot_test/Image-v0", "algo": "drqv2", "obs_mode": "both", "image_size": 32, "steps": 60,
        "learning_starts": 30, "eval_every": 60, "eval_episodes": 1, "eval_video": True, "tensorboard": False,
        "progress": False, "device": "cpu",
        "agent": {"batch_size": 16, "hidden_dim": 32, "feature_dim": 16, "num_expl_steps": 20,
                  "update_every_steps": 1}})
    assert (cfg.frame_stack, cfg.replay.n_step) == (3, 3)   # pixels keep the arm's stacking and n-step defaults
    trainer = build_trainer(cfg, tmp_path / "drq")
    metrics = trainer.train()
    trainer.logger.close()
    assert trainer.step == 60 and np.isfinite(metrics["eval/return"]) and trainer.agent.num_updates > 0
    assert list((tmp_path / "drq" / "videos").glob("eval_*.mp4"))   # filmed through the env's render()


def test_an_env_id_that_cannot_train_stops_before_the_run_starts(tmp_path, capsys):
    from se_robot.cli import main

    for env_id, reason in (("CartPole-v1", "discrete actions are not supported"), ("Nope-v9", "doesn't exist"),
                           ("no_such_module:Env-v0", "No module named")):
        out = tmp_path / env_id.replace(":", "_")
        assert main(["train", "--env-id", env_id, "--algo", "sac", "--out", str(out)]) == 2
        assert reason in capsys.readouterr().err and not out.exists()
