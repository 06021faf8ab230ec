"""Pretrain a pixel encoder on the sim twin: regress what the task needs from the camera image.

Why: an RL critic is a slow and noisy teacher for a conv net, and every env step it spends
learning to see is a step a real arm has to take. In sim, seeing can be learned for free: place
the arm and the objects at random, render the camera, and train the encoder to predict the
gripper, target and cube positions and the gripper opening (privileged in sim, never an input of
the policy). The frozen encoder then turns each frame into a few dozen numbers cached once in
replay (``freeze_encoder: true``), so RL on pixels costs MLP updates only, on the twin and on the
real arm, whose camera sees the same scene (sim-to-real gap permitting: colours, lighting).

Frames are sampled the way the task's policy sees the scene: the gripper anywhere in a box
around the task region (IK, pointing down, with a random opening), a share of frames with the
gripper close to the target, objects from the task's own reset distribution. A policy that
succeeds also sees scenes no reset shows, so each task adds its own (:func:`task_scene`): lift,
the gripper at the cube and the cube held in closed jaws at any height; push, the cube anywhere on
its way to the goal with the closed gripper behind it, where a push leaves them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

LABELS = ("ee_x", "ee_y", "ee_z", "target_x", "target_y", "target_z", "cube_x", "cube_y", "cube_z", "gripper")
EE_BOX = ((0.09, -0.14, 0.015), (0.26, 0.14, 0.16))   # where sampled gripper positions lie (m)
HELD_BELOW_EE_M = 0.008   # the cube's centre under the gripper site in the lift expert's grasp
PUSH_Z_M = 0.024          # gripper height while pushing (the push expert's)


def task_scene(task: str, sample, rng: np.random.Generator, share: float) -> tuple[np.ndarray, float] | None:
    """With probability ``share``, a scene of the task in progress: (gripper xyz, opening 0..1),
    moving ``sample``'s cube in place; else None (the caller's reset-like scene).

    lift: half the time the open gripper at the cube, ready to grasp; half the time the cube in
    the closed jaws, anywhere from the table up to the box's top (lifted). push: the cube
    anywhere from its start to a little past the goal (sideways slips included), the closed
    gripper behind it on the cube-goal line, at pushing height or hovering after a re-plan.
    """
    if task not in ("lift", "push") or rng.random() >= share:
        return None
    from se_robot.tasks import CUBE_HALF_M

    cube = sample.cube_pos
    if task == "lift":
        if rng.random() < 0.5:
            ee = cube + np.r_[rng.normal(0.0, 0.01, 2), HELD_BELOW_EE_M + rng.uniform(0.0, 0.06)]
            return ee, float(rng.uniform(0.6, 1.0))
        ee = np.r_[cube[:2] + rng.normal(0.0, 0.015, 2), rng.uniform(CUBE_HALF_M, EE_BOX[1][2])]
        sample.cube_pos = np.r_[ee[:2], max(CUBE_HALF_M, ee[2] - HELD_BELOW_EE_M)]
        return ee, float(rng.uniform(0.0, 0.45))
    goal = sample.target_pos[:2]
    to_goal = goal - cube[:2]
    d = to_goal / max(float(np.linalg.norm(to_goal)), 1e-6)
    xy = cube[:2] + rng.uniform(0.0, 1.15) * to_goal + rng.normal(0.0, 0.006, 2)
    sample.cube_pos = np.r_[xy, CUBE_HALF_M]
    z = PUSH_Z_M + abs(rng.normal(0.0, 0.004)) if rng.random() < 0.75 else rng.uniform(0.04, 0.08)
    ee = np.r_[xy - d * rng.uniform(0.02, 0.05) + rng.normal(0.0, 0.005, 2), z]
    return ee, float(rng.uniform(0.0, 0.2))


@dataclass
class PretrainReport:
    """Held-out errors of the trained encoder (RMSE per label, in metres; gripper as a fraction)."""

    frames: int
    steps: int
    seconds: float
    rmse: dict[str, float]
    baseline_rmse: dict[str, float]   # predicting the training mean: what "learned nothing" scores

    def lines(self) -> list[str]:
        out = [f"{self.frames} frames, {self.steps} steps, {self.seconds:.0f} s; held-out RMSE (mean-predictor in brackets):"]
        for key in self.rmse:
            unit = "" if key == "gripper" else " mm"
            k = 1.0 if key == "gripper" else 1000.0
            out.append(f"  {key:<9} {self.rmse[key] * k:8.2f}{unit}   ({self.baseline_rmse[key] * k:.2f}{unit})")
        return out


def collect_frames(task: str, frames: int, image_size: int, camera: str = "scene", seed: int = 0,
                   near_target: float = 0.3, in_progress: float = 0.4, randomize: str = "",
                   twin_camera: str = "",
                   log: Callable[[str], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``frames`` rendered views (N, 3, H, W) uint8 with their labels (N, len(LABELS)) float32.

    ``in_progress``: share of lift and push frames showing the task under way (:func:`task_scene`);
    of the rest, ``near_target`` have the gripper near the target (reach's sphere, push's goal).
    ``twin_camera``: an ``se-robot align-camera`` file, so frames are seen as the user's camera
    sees them. ``randomize``: a randomization preset or file, a new draw for every frame (from its
    own generator, so the poses and labels are those of a run without it; the labels stay true).
    """
    from se_robot.arm import load_arm
    from se_robot.sim.kinematics import Kinematics
    from se_robot.sim.twin import ArmTwin
    from se_robot.tasks import load_task

    # No env: each frame poses the twin directly (arm by IK, objects from the task), which no
    # policy could do through actions; the images are the twin's, as the env would render them.
    arm, task_def = load_arm("so101"), load_task(task)
    twin, kin = ArmTwin(arm, task_def), Kinematics(arm)
    if twin_camera:
        from se_robot.envs.camera_fit import apply_camera_config

        apply_camera_config(twin.model, twin_camera)
    randomizer, dr_rng = None, np.random.default_rng([seed, 1])
    if randomize:
        from se_robot.sim.randomize import TwinRandomizer, load_randomization

        randomizer = TwinRandomizer(twin, load_randomization(randomize))   # nominal = the aligned camera
    rng = np.random.default_rng(seed)
    images = np.empty((frames, 3, image_size, image_size), np.uint8)
    labels = np.empty((frames, len(LABELS)), np.float32)
    lo, hi = np.array(EE_BOX[0]), np.array(EE_BOX[1])
    g = arm.gripper
    start = time.perf_counter()
    try:
        for i in range(frames):
            sample = task_def.sample_reset(rng)
            scene = task_scene(task, sample, rng, in_progress)
            opening = rng.uniform()
            if scene is not None:
                ee, opening = np.clip(scene[0], lo, hi), scene[1]
            elif rng.random() < near_target:
                ee = np.clip(sample.target_pos + rng.normal(0.0, 0.02, 3), lo, hi)
            else:
                ee = rng.uniform(lo, hi)
            q = kin.ik(ee, arm.home, point_down=True, iters=30, tol_m=1e-3)
            if g is not None:
                q[arm.gripper_index] = g.closed_position + opening * (g.open_position - g.closed_position)
            if randomizer is not None:
                randomizer.new_draw(dr_rng)
            twin.reset(sample=sample, q=q)
            images[i] = twin.render(camera, image_size, image_size).transpose(2, 0, 1)
            s = twin.task_state()
            labels[i] = np.r_[s.ee_pos, s.target_pos, s.cube_pos, float(s.gripper)]
            if log and (i + 1) % 5000 == 0:
                log(f"rendered {i + 1}/{frames} frames ({time.perf_counter() - start:.0f} s)")
    finally:
        twin.close()
    return images, labels


def pretrain_encoder(images: np.ndarray, labels: np.ndarray, steps: int = 3000, batch_size: int = 128,
                     lr: float = 1e-3, keypoints: int = 32, holdout: float = 0.1, seed: int = 0,
                     device: str = "cpu", names: tuple[str, ...] = LABELS, init: str | Path | None = None,
                     log: Callable[[str], None] | None = None):
    """Train a :class:`KeypointEncoder` plus a linear head on standardised labels; returns both and a report.

    Frames get DrQ's random shift (pad 4) while training, so the features do not hinge on exact
    pixel positions. The held-out split is never trained on; its RMSE is the figure to trust.
    ``init``: an encoder file of the same size to start from (another task's: the arm and the cube
    look the same in every scene, so a few hundred steps teach it the new task's objects).
    """
    import torch
    import torch.nn as nn

    from se_robot.agents.augment import draw_shifts, shift_images_gather
    from se_robot.agents.encoders import KeypointEncoder

    if len(names) != labels.shape[1]:
        raise ValueError(f"pretrain_encoder: {len(names)} label names for {labels.shape[1]} label columns")
    torch.manual_seed(seed)
    n = len(images)
    n_val = max(1, int(round(n * holdout)))
    if n - n_val < batch_size:
        raise ValueError(f"pretrain_encoder: {n} frames leave {n - n_val} for training, fewer than a batch of {batch_size}")
    order = np.random.default_rng(seed).permutation(n)
    val, train = order[:n_val], order[n_val:]
    mean, std = labels[train].mean(0), labels[train].std(0) + 1e-6
    y_all = torch.as_tensor((labels - mean) / std)
    x_all = torch.as_tensor(images)
    size = images.shape[-2:]
    encoder = KeypointEncoder(3, tuple(size), keypoints=keypoints)
    if init is not None:
        from se_robot.agents.encoders import load_encoder

        start_from = load_encoder(init, tuple(size))
        if not isinstance(start_from, KeypointEncoder) or start_from.repr_dim != encoder.repr_dim:
            raise ValueError(f"pretrain_encoder: {init} is not a keypoint encoder with {keypoints} keypoints")
        encoder.load_state_dict(start_from.state_dict())
    encoder = encoder.to(device)
    head = nn.Sequential(nn.Linear(encoder.repr_dim, 256), nn.ReLU(), nn.Linear(256, labels.shape[1])).to(device)
    params = list(encoder.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    rng = np.random.default_rng(seed + 1)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        idx = torch.as_tensor(rng.choice(train, batch_size))
        x = shift_images_gather(x_all[idx].to(device), 4, draw_shifts(batch_size, 4, device, gen)).float()
        loss = (head(encoder(x)) - y_all[idx].to(device)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log and (step % 500 == 0 or step == steps):
            log(f"step {step}/{steps}: train loss {loss.item():.4f} ({time.perf_counter() - start:.0f} s)")
    encoder.eval()
    preds = []
    with torch.no_grad():
        for chunk in np.array_split(val, max(1, len(val) // 256)):
            preds.append(head(encoder(x_all[chunk].to(device).float())).cpu().numpy())
    pred = np.concatenate(preds) * std + mean
    err = np.sqrt(((pred - labels[val]) ** 2).mean(0))
    base = np.sqrt(((mean - labels[val]) ** 2).mean(0))
    report = PretrainReport(n, steps, time.perf_counter() - start, dict(zip(names, map(float, err))),
                            dict(zip(names, map(float, base))))
    return encoder.cpu(), head.cpu(), report


def save_pretrained(encoder, path: str | Path, image_size: int, keypoints: int) -> Path:
    """The encoder in se_robot's checkpoint format; load with ``encoder: checkpoint``."""
    from se_robot.agents.encoders import save_encoder

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_encoder(encoder, path, "keypoints", in_channels=3, image_size=(image_size, image_size), keypoints=keypoints)
    return path
