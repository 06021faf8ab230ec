"""SAC and MBPO on pixels: a frozen pretrained encoder turns each camera frame into features."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import yaml

os.environ.setdefault("MUJOCO_GL", "egl")

from se_robot.agents.encoders import KeypointEncoder, load_encoder, save_encoder  # noqa: E402
from se_robot.config import ConfigError  # noqa: E402
from se_robot.envs import make_env  # noqa: E402
from se_robot.envs.encoder_features import wrap_with_encoder  # noqa: E402
from se_robot.train import build_trainer, load_config  # noqa: E402

pytestmark = pytest.mark.timeout(300)

SIZE, KEYPOINTS = 32, 4


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("enc") / "enc.pt"
    save_encoder(KeypointEncoder(3, (SIZE, SIZE), keypoints=KEYPOINTS), path, "keypoints", in_channels=3,
                 image_size=(SIZE, SIZE), keypoints=KEYPOINTS)
    return path


def test_features_are_the_encoder_on_every_stacked_frame_and_state_passes_through(encoder_file):
    raw = make_env("reach", obs_mode="both", image_size=SIZE, frame_stack=2)
    wrapped = wrap_with_encoder(make_env("reach", obs_mode="both", image_size=SIZE, frame_stack=2), encoder_file)
    encoder = load_encoder(encoder_file, (SIZE, SIZE))
    obs_raw, _ = raw.reset(seed=4)
    obs, _ = wrapped.reset(seed=4)
    action = raw.action_space.sample()
    for _ in range(3):   # after steps the two stacked frames differ
        obs_raw = raw.step(action)[0]
        obs = wrapped.step(action)[0]
    assert set(obs) == {"features", "state"} and wrapped.observation_space.contains(obs)
    frames = torch.as_tensor(obs_raw["pixels"]).reshape(2, 3, SIZE, SIZE).float()
    with torch.no_grad():
        expected = encoder(frames).reshape(-1).numpy()
    assert obs["features"].shape == (2 * 2 * KEYPOINTS,)
    np.testing.assert_allclose(obs["features"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(obs["state"], obs_raw["state"])
    assert not np.allclose(obs["features"][: 2 * KEYPOINTS], obs["features"][2 * KEYPOINTS:])
    with pytest.raises(ValueError, match="obs_mode pixels or both"):
        wrap_with_encoder(make_env("reach", obs_mode="state"), encoder_file)
    with pytest.raises(ValueError, match=r"\(3k, H, W\)"):          # raw H x W x 3 frames are not a stack
        wrap_with_encoder(make_env("reach", obs_mode="both", image_size=SIZE, frame_stack=0), encoder_file)


BASE = {"task": "reach", "obs_mode": "pixels", "image_size": SIZE, "frame_stack": 2, "action_repeat": 1,
        "steps": 80, "seed": 2, "learning_starts": 40, "eval_every": 80, "eval_episodes": 1, "eval_video": False,
        "checkpoint_every": 80, "tensorboard": False, "progress": False, "device": "cpu", "threads": 1,
        "replay": {"capacity": 500, "n_step": 1, "discount": 0.99}}
TINY_MBPO = {"utd_ratio": 1, "model_min_transitions": 40, "model_train_interval_steps": 40, "rollout_batch_size": 32,
             "rollout_schedule": [0, 100, 1, 2],
             "model": {"ensemble_size": 3, "num_elites": 2, "hidden_dim": 16, "num_layers": 2, "max_grad_steps": 20},
             "sac": {"batch_size": 16, "hidden_dim": 16, "min_replay": 16}}


def test_mbpo_trains_on_pixels_through_the_frozen_encoder(encoder_file, tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**BASE, "algo": "mbpo", "encoder": str(encoder_file),
                                                     "agent": TINY_MBPO}))
    trainer = build_trainer(load_config(tmp_path / "c.yaml"), tmp_path / "run")
    agent = trainer.agent
    assert agent.obs_keys == ("features",) and agent.sac.obs_dim == 2 * 2 * KEYPOINTS
    assert agent.reward_fn is None        # features do not carry the task: the reward is learned
    trainer.train()
    trainer.logger.close()
    assert set(trainer.replay.sample(4).obs) == {"features"}
    assert agent.last_fit_step is not None and len(agent.buffer) > 0   # the model was fitted and rolled out


@pytest.mark.parametrize("changes, message", [
    ({"algo": "sac"}, "give a pretrained encoder file"),
    ({"algo": "drqv2", "encoder": "enc.pt"}, "agent.encoder_checkpoint"),
    ({"algo": "sac", "obs_mode": "state", "encoder": "enc.pt"}, "needs obs_mode pixels or both"),
])
def test_config_errors_name_the_encoder_key(tmp_path, changes, message):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**BASE, "replay": {**BASE["replay"], "n_step": 1}, **changes}))
    with pytest.raises(ConfigError, match=message) as err:
        load_config(tmp_path / "c.yaml")
    assert "encoder" in str(err.value)


def test_demos_reach_the_agent_as_the_features_it_sees_live(encoder_file, tmp_path):
    """Recorded single frames are stacked and encoded as the live env would have: replaying a demo's
    actions in the wrapped env gives the stored features step by step."""
    from se_robot.data.episodes import load_episode
    from se_robot.data.recording import dataset_meta_for, record_scripted
    from se_robot.envs.experts import expert_for

    env = make_env("reach", obs_mode="both", image_size=SIZE, frame_stack=0)   # datasets keep raw frames
    record_scripted(env, expert_for(env), tmp_path / "demos", dataset_meta_for(env, "reach"), 1, seed=1,
                    log=lambda s: None)   # seed 1: a 4-step episode
    env.close()
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        **BASE, "obs_mode": "both", "frame_stack": 3,
        "algo": "sac", "encoder": str(encoder_file), "demos": str(tmp_path / "demos"),
        "steps": 60, "learning_starts": 30, "agent": {"batch_size": 16, "hidden_dim": 16, "min_replay": 16}}))
    trainer = build_trainer(load_config(tmp_path / "c.yaml"), tmp_path / "run")
    assert trainer.demos.episodes == 1
    actions = load_episode(next((tmp_path / "demos").glob("episode_*.npz")))["action"]
    stored = {k: trainer.demos._arrays[k][: len(actions) + 1] for k in ("features", "state")}
    live = wrap_with_encoder(make_env("reach", obs_mode="both", image_size=SIZE, frame_stack=3), encoder_file)
    steps = [live.reset(seed=1)[0]] + [live.step(a)[0] for a in actions]
    assert len(actions) >= 3
    for key in ("features", "state"):
        np.testing.assert_allclose(stored[key], np.stack([o[key] for o in steps]), rtol=1e-4, atol=1e-5)
    stored = stored["features"]
    frames = stored[:, : 3 * 2 * KEYPOINTS].reshape(len(stored), 3, -1)   # per stacked frame, oldest first
    np.testing.assert_allclose(frames[1, 0], frames[1, 1])                 # the first frame pads the stack
    assert not np.allclose(frames[1, 1], frames[1, 2]) and not np.allclose(frames[3, 0], frames[3, 1])
    trainer.train()   # SAC draws half of each batch from the encoded demos
    trainer.logger.close()
    assert set(trainer.demos.sample(4).obs) == {"features", "state"}


def test_encode_episode_rejects_what_is_not_rgb_frames(encoder_file):
    wrapped = wrap_with_encoder(make_env("reach", obs_mode="pixels", image_size=SIZE), encoder_file)
    with pytest.raises(ValueError, match="uint8 RGB frames"):
        wrapped.encode_episode({"pixels": np.zeros((3, SIZE, SIZE, 4), np.uint8)})
    with pytest.raises(ValueError, match="uint8 RGB frames"):
        wrapped.encode_episode({"pixels": np.zeros((3, SIZE, SIZE, 3), np.float32)})
