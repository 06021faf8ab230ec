"""Learned reward: labelling, episode-wise split, threshold choice, training, the CLI and the wrapper."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from se_robot.data.episodes import Episode
from se_robot.data.reward_model import (RewardModel, TrainConfig, choose_threshold, label_frames,
                                        load_reward_model, predict_proba, rates, split_by_episode, train_classifier)

pytestmark = pytest.mark.timeout(180)


def _episode(i: int, length: int, success: bool, size: int = 16) -> Episode:
    """Frames with a bright square whose brightness grows to full only in a success's last frame."""
    rng = np.random.default_rng(i)
    px = rng.integers(0, 60, (length + 1, size, size, 3), dtype=np.uint8)
    if success:
        px[-1, 4:12, 4:12] = 255
    arrays = {"pixels": px, "action": np.zeros((length, 4), np.float32)}
    return Episode(Path(f"episode_{i:06d}.npz"), arrays, success, {})


def test_labels_are_final_frames_of_successes():
    eps = [_episode(0, 5, True), _episode(1, 4, False), _episode(2, 3, True)]
    data = label_frames(eps, positive_frames=2)
    assert len(data) == 6 + 5 + 4
    assert data.labels.tolist() == [0, 0, 0, 0, 1, 1] + [0] * 5 + [0, 0, 1, 1]
    assert data.episode.tolist() == [0] * 6 + [1] * 5 + [2] * 4


def test_split_holds_out_whole_episodes_of_both_kinds():
    successes = [True] * 8 + [False] * 4
    data = label_frames([_episode(i, 3, s) for i, s in enumerate(successes)], positive_frames=1)
    train, held = split_by_episode(data, successes, holdout=0.25, seed=1)
    assert not set(train.episode) & set(held.episode)
    assert len(train) + len(held) == len(data)
    held_eps = set(held.episode.tolist())
    assert any(successes[e] for e in held_eps) and any(not successes[e] for e in held_eps)


def test_threshold_meets_the_target_false_positive_rate():
    rng = np.random.default_rng(0)
    neg = rng.uniform(0, 1, 1000)
    pos = rng.uniform(0.5, 1, 100)
    scores = np.concatenate([neg, pos])
    labels = np.concatenate([np.zeros(1000), np.ones(100)])
    for target in (0.0, 0.01, 0.1):
        th = choose_threshold(scores, labels, target)
        m = rates(scores, labels, th)
        assert m["fpr"] <= target
        assert m["false_positives"] == int(np.floor(target * 1000))  # the lowest such threshold
    m = rates(scores, labels, 0.5)
    assert m["fnr"] == 0.0 and m["positives"] == 100 and m["negatives"] == 1000


def test_training_learns_a_visible_success_and_round_trips(tmp_path):
    successes = [True] * 16 + [False] * 8
    eps = [_episode(i, 6, s) for i, s in enumerate(successes)]
    data = label_frames(eps, positive_frames=1)
    train, held = split_by_episode(data, successes, holdout=0.25, seed=0)
    model = train_classifier(train, TrainConfig(epochs=4, batch_size=32, input_size=16, shift_pad=1, lr=3e-3),
                             log=lambda s: None)
    scores = predict_proba(model, held.frames)
    m = rates(scores, held.labels, choose_threshold(scores, held.labels, 0.0))
    assert m["fpr"] == 0.0 and m["fnr"] == 0.0
    path = RewardModel(model, 0.7, {"task": "synthetic"}).save(tmp_path / "clf.pt")
    loaded = load_reward_model(path)
    assert loaded.threshold == 0.7 and loaded.info["task"] == "synthetic"
    np.testing.assert_allclose(loaded.probability(held.frames), scores, atol=1e-6)
    assert np.ndim(loaded.probability(held.frames[0])) == 0


def test_bad_classifier_files_say_what(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_reward_model(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="junk.pt: not a readable reward classifier"):
        load_reward_model(tmp_path / "junk.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an se_robot reward classifier"):
        load_reward_model(tmp_path / "other.pt")


def test_reward_train_cli_and_wrapper_on_the_twin(tmp_path, capsys):
    import se_robot.envs.experts  # noqa: F401 - required: CI must fail, not skip, without it
    from se_robot.cli import main as cli_main
    from se_robot.envs import make_env
    from se_robot.envs.reward_wrapper import LearnedRewardWrapper

    common = ["--task", "push", "--image-size", "32"]
    assert cli_main(["demos", *common, "--episodes", "4", "--out", str(tmp_path / "expert")]) == 0
    assert cli_main(["demos", *common, "--episodes", "2", "--policy", "random", "--max-steps", "8",
                     "--out", str(tmp_path / "random"), "--seed", "50"]) == 0
    out = tmp_path / "clf.pt"
    assert cli_main(["reward", "train", "--data", str(tmp_path / "expert"), "--data", str(tmp_path / "random"),
                     "--out", str(out), "--epochs", "1", "--input-size", "32", "--holdout", "0.5",
                     "--eval-sim", "1", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "held-out @" in text and "sim expert steps" in text
    metrics = json.loads(out.with_suffix(".json").read_text())
    assert {"heldout@0.5", "heldout@threshold", "threshold", "sim"} <= set(metrics)
    assert 0.0 <= metrics["sim"]["all_steps"]["fpr"] <= 1.0

    env = LearnedRewardWrapper(make_env("push", obs_mode="both", image_size=32, frame_stack=3), load_reward_model(out),
                               terminate_on_success=False)
    obs, info = env.reset(seed=0)
    assert obs["pixels"].shape == (9, 32, 32) and info["is_success"] is False
    _, reward, _, _, info = env.step(np.zeros(env.action_space.shape, np.float32))
    assert reward in (0.0, 1.0) and info["is_success"] == (reward == 1.0)
    assert 0.0 <= info["reward/success_prob"] <= 1.0 and "env_is_success" in info and "env_reward" in info
    env.close()


def test_the_wrapper_shows_the_classifier_the_newest_frame_of_the_stack():
    from se_robot.envs import make_env
    from se_robot.envs.reward_wrapper import LearnedRewardWrapper

    seen = []
    model = SimpleNamespace(threshold=0.5, probability=lambda frame: seen.append(frame) or float(len(seen) > 1))
    env = LearnedRewardWrapper(make_env("reach", obs_mode="pixels", image_size=16, frame_stack=2), model)
    env.reset(seed=0)
    obs, reward, terminated, _, info = env.step(np.full(env.action_space.shape, 0.5, np.float32))
    np.testing.assert_array_equal(seen[1], obs["pixels"][3:].transpose(1, 2, 0))   # H x W x 3, as trained
    assert reward == 1.0 and terminated and info["is_success"]
    env.close()
    with pytest.raises(ValueError, match="PixelFrameStack"):     # raw frames (dataset layout) are refused
        LearnedRewardWrapper(make_env("reach", obs_mode="pixels", image_size=16, frame_stack=0), model)


def test_a_start_the_classifier_calls_a_success_is_rejected():
    from se_robot.envs import make_env
    from se_robot.envs.operator import SceneResetError
    from se_robot.envs.reward_wrapper import LearnedRewardWrapper

    probs = iter([0.9, 0.1, 0.2])
    model = SimpleNamespace(threshold=0.5, probability=lambda frame: next(probs))
    env = LearnedRewardWrapper(make_env("push", obs_mode="pixels", image_size=16, frame_stack=1), model)
    _, info = env.reset(seed=0)   # the first start looked successful: reset ran again
    assert info["reward/success_prob"] == 0.1 and info["is_success"] is False
    always = SimpleNamespace(threshold=0.5, probability=lambda frame: 0.99)
    env = LearnedRewardWrapper(make_env("push", obs_mode="pixels", image_size=16, frame_stack=1), always,
                               start_tries=2)
    with pytest.raises(SceneResetError, match="start successful .* 2 times"):
        env.reset(seed=0)
    env.close()
