"""Encoder pretraining on the sim twin: the keypoint net, frame collection, training and the file."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("MUJOCO_GL", "egl")

from se_robot.agents.encoders import KeypointEncoder, load_encoder, make_pixel_encoder  # noqa: E402
from se_robot.cli import main  # noqa: E402
from se_robot.pretrain import EE_BOX, LABELS, collect_frames, pretrain_encoder, save_pretrained  # noqa: E402

pytestmark = pytest.mark.timeout(300)


def _dots(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Black frames with one bright 3x3 square; the label is where it is."""
    rng = np.random.default_rng(seed)
    xy = rng.integers(2, size - 2, (n, 2))
    images = np.zeros((n, 3, size, size), np.uint8)
    for i, (x, y) in enumerate(xy):
        images[i, :, y - 1:y + 2, x - 1:x + 2] = 255
    return images, xy.astype(np.float32)


def test_keypoints_are_image_coordinates_of_the_feature_mass():
    enc = KeypointEncoder(3, (32, 32), keypoints=4)
    out = enc(torch.rand(5, 3, 32, 32) * 255)
    assert out.shape == (5, 8) and enc.repr_dim == 8 and enc.frame_wise
    assert out.abs().max() <= 1.0 + 1e-6


def test_pretraining_learns_to_locate_a_dot_far_better_than_the_mean(tmp_path):
    images, xy = _dots(1500, 32, seed=0)
    torch.set_num_threads(1)
    encoder, head, report = pretrain_encoder(images, xy, steps=300, batch_size=64, keypoints=8, seed=0,
                                             names=("x", "y"))
    for key in ("x", "y"):   # pixels; the mean predictor is ~8 px off
        assert report.rmse[key] < 0.35 * report.baseline_rmse[key], report.lines()
    path = save_pretrained(encoder, tmp_path / "enc.pt", image_size=32, keypoints=8)
    loaded = load_encoder(path, (32, 32))
    x = torch.as_tensor(images[:4]).float()
    assert torch.equal(loaded(x), encoder(x))
    stacked = make_pixel_encoder("checkpoint", 3, (32, 32), str(path))   # frame-wise over a 3-frame stack
    assert stacked(x.repeat(1, 3, 1, 1)).shape == (4, 3 * 16)
    with pytest.raises(ValueError, match="trained for image size"):
        load_encoder(path, (48, 48))
    # --init starts from that file (here unchanged: no learning rate); other keypoint counts are refused
    again, _, _ = pretrain_encoder(images[:200], xy[:200], steps=1, batch_size=64, keypoints=8, lr=0.0, init=path,
                                   names=("x", "y"))
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), encoder.state_dict().values()))
    with pytest.raises(ValueError, match="not a keypoint encoder with 4 keypoints"):
        pretrain_encoder(images[:200], xy[:200], steps=1, batch_size=64, keypoints=4, init=path, names=("x", "y"))


def test_collected_frames_show_the_scene_with_consistent_labels():
    images, labels = collect_frames("reach", 12, 32, seed=3, near_target=0.5)
    assert images.shape == (12, 3, 32, 32) and images.dtype == np.uint8
    assert labels.shape == (12, len(LABELS))
    ee, target = labels[:, 0:3], labels[:, 3:6]
    lo, hi = np.array(EE_BOX[0]) - 0.03, np.array(EE_BOX[1]) + 0.03
    assert np.all((ee >= lo) & (ee <= hi)), ee      # IK reached the sampled box (servo sag allowed)
    assert np.all((target >= [0.13, -0.08, 0.03]) & (target <= [0.21, 0.08, 0.11]))
    assert len({img.tobytes() for img in images}) == 12   # every frame is a different scene
    red = (images[:, 0] > 180) & (images[:, 1] < 90) & (images[:, 2] < 90)
    assert red.any(axis=(1, 2)).mean() > 0.5   # the red reach target is seen in most frames


def test_lift_frames_show_the_cube_at_the_gripper_and_held_up_in_it():
    """What a lift policy sees once it works: the open gripper at the cube, the cube lifted in the jaws."""
    images, labels = collect_frames("lift", 40, 32, seed=5, in_progress=1.0)
    ee, cube, opening = labels[:, 0:3], labels[:, 6:9], labels[:, 9]
    lifted = cube[:, 2] > 0.03
    assert 0.2 < lifted.mean() < 0.8, cube[:, 2]
    near = np.linalg.norm(ee - cube, axis=1)
    assert np.all(near[lifted] < 0.03), near[lifted]       # held: the cube moves with the gripper
    assert np.all(opening[lifted] < 0.5)                    # in closed jaws
    assert np.all(near < 0.1) and (opening[~lifted] > 0.55).any()   # and the open gripper at the cube


def test_push_frames_show_the_cube_on_its_way_to_the_goal_with_the_gripper_behind_it():
    from se_robot.tasks import load_task

    task = load_task("push")
    images, labels = collect_frames("push", 40, 32, seed=6, in_progress=1.0)
    ee, goal, cube = labels[:, 0:3], labels[:, 3:5], labels[:, 6:8]
    start_lo, start_hi = np.array(task.cfg.object_min), np.array(task.cfg.object_max)
    outside_starts = np.any((cube < start_lo - 0.003) | (cube > start_hi + 0.003), axis=1)
    assert outside_starts.any()                             # cubes pushed beyond where resets put them
    assert np.median(np.linalg.norm(cube - goal, axis=1)) < 0.06
    assert np.all(np.linalg.norm(ee[:, :2] - cube, axis=1) < 0.08)
    blue = (images[:, 2] > 150) & (images[:, 0] < 90)
    assert blue.any(axis=(1, 2)).mean() > 0.5               # the goal disc is in view


def test_cli_rejects_too_few_frames(tmp_path):
    with pytest.raises(SystemExit, match="too few"):
        main(["pretrain-encoder", "--frames", "10", "--out", str(tmp_path / "e.pt")])


def test_the_pixels_recipe_trains_on_a_frozen_pretrained_encoder(tmp_path):
    """The reach_drqv2_pixels recipe as the README uses it (short): features cached, encoder untouched."""
    from se_robot.train import build_trainer, load_config

    path = save_pretrained(KeypointEncoder(3, (64, 64), keypoints=8), tmp_path / "enc.pt", 64, 8)
    cfg = load_config("reach_drqv2_pixels", {
        "steps": 30, "learning_starts": 20, "eval_every": 30, "eval_episodes": 1, "eval_video": False,
        "progress": False, "tensorboard": False, "checkpoint_every": 1000,
        "agent": {"encoder_checkpoint": str(path), "batch_size": 8, "hidden_dim": 16}})
    trainer = build_trainer(cfg, tmp_path / "run")
    before = {k: v.clone() for k, v in trainer.agent.encoder.state_dict().items()}
    trainer.train()
    trainer.logger.close()
    assert trainer.step == 30 and trainer.agent.num_updates > 0
    for key, value in trainer.agent.encoder.state_dict().items():
        assert torch.equal(value, before[key]), f"frozen encoder changed: {key}"


def test_frames_through_randomization_and_an_aligned_camera_keep_the_poses(tmp_path):
    import yaml

    from se_robot.config import ConfigError

    plain_img, plain_lab = collect_frames("lift", 6, 48, seed=4)
    dr_img, dr_lab = collect_frames("lift", 6, 48, seed=4, randomize="hard")
    # the same poses and scenes (the draws use their own generator): the gripper labels agree
    np.testing.assert_allclose(dr_lab[:, :3], plain_lab[:, :3], atol=2e-3)
    assert np.abs(dr_img.astype(int) - plain_img.astype(int)).mean() > 2.0
    aligned = tmp_path / "aligned.yaml"
    aligned.write_text(yaml.safe_dump({"twin_camera": {"camera": "scene", "pos_offset_m": [0.03, 0.0, 0.0],
                                                       "rot_offset_rad": [0.0, 0.05, 0.0], "fovy_offset_deg": 3.0}}))
    cam_img, cam_lab = collect_frames("lift", 6, 48, seed=4, twin_camera=str(aligned))
    np.testing.assert_array_equal(cam_lab, plain_lab)
    assert np.abs(cam_img.astype(int) - plain_img.astype(int)).mean() > 2.0
    with pytest.raises(ConfigError):
        collect_frames("lift", 2, 48, randomize="no-such-preset")
