"""``python -m benchmarks transfer`` at tiny sizes: a sim run of lift from camera + proprioception is
evaluated zero-shot on an emulated arm with the ``mild`` reality gap, fine-tuned there, and set beside a
run from scratch on the same arm, all through the ``se-robot`` commands. The figures are the benchmark's
(docs/benchmarks.md); this checks the plumbing a wrong figure would come from: the camera aligned
first, the arm demos, the arm-step count (sim steps not counted), the curves and the table."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

os.environ.setdefault("MUJOCO_GL", "egl")

from se_robot.cli import main  # noqa: E402
from se_robot.train_config import read_recipe  # noqa: E402

pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parents[1]
SIM_STEPS, ARM_STEPS, EVAL_EVERY = 20, 10, 5


def _tiny_pixel_recipe(tmp_path: Path) -> Path:
    """``lift_pixels_sparse`` with a small trainable encoder and net, short episodes."""
    data = read_recipe("lift_pixels_sparse")
    data.update(image_size=32, frame_stack=2, steps=SIM_STEPS, learning_starts=5, eval_every=1000, eval_episodes=1,
                checkpoint_every=1000, progress=False, tensorboard=False, device="cpu",
                replay={"capacity": 500}, env={"reward_type": "sparse", "max_episode_steps": 8})
    data["agent"] = {**data["agent"], "encoder": "drqv2", "encoder_checkpoint": "", "freeze_encoder": False,
                     "batch_size": 8, "hidden_dim": 32, "feature_dim": 16, "num_critics": 2}
    path = tmp_path / "tiny_pixels.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_transfer_benchmark_on_a_gapped_emulated_arm(tmp_path):
    recipe, sim_run, out = _tiny_pixel_recipe(tmp_path), tmp_path / "sim", tmp_path / "bench"
    assert main(["train", "--config", str(recipe), "--out", str(sim_run), "--set", "env.randomize=mild",
                 "--no-progress"]) == 0
    cmd = [sys.executable, "-m", "benchmarks", "transfer", "--sim", f"dr={sim_run}", "--gaps", "mild",
           "--steps", str(ARM_STEPS), "--scratch-steps", str(ARM_STEPS), "--recipe", str(recipe),
           "--arm-demos", "1", "--zero-shot-episodes", "1", "--eval-every", str(EVAL_EVERY), "--eval-episodes", "1",
           "--report-at", f"{EVAL_EVERY},{ARM_STEPS}", "--set", "learning_starts=3", "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=840)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    here = out / "mild"
    camera = yaml.safe_load((here / "camera.yaml").read_text())
    assert {"detector", "twin_camera"} <= set(camera) and camera["twin_camera"]["fit_points"] >= 12
    assert len(list((here / "arm_demos").glob("episode_*.npz"))) == 1
    # the emulator's audit saw the expert's lift (a failed attempt may add one: at least as many)
    lifts = re.search(r"1 demos written; real lifts the emulator saw: (\d+)", (here / "demos.log").read_text())
    assert lifts and int(lifts.group(1)) >= 1
    results = {r["name"]: r for r in json.loads((out / "results.json").read_text())["results"]}
    assert set(results) == {"dr", "scratch"}
    dr, scratch = results["dr"], results["scratch"]
    # the fine-tune's curve: zero-shot at arm step 0, then its evaluations counted in arm steps
    assert dr["sim_steps"] == SIM_STEPS and dr["curve"][0] == [0, dr["zero_shot"]]
    assert [s for s, _ in dr["curve"]] == [0, EVAL_EVERY, ARM_STEPS]
    assert [s for s, _ in scratch["curve"]] == [0, EVAL_EVERY, ARM_STEPS] and scratch["zero_shot"] is None
    assert all(0.0 <= v <= 1.0 for r in results.values() for _, v in r["curve"])
    # the emulator counted the real lifts; no run reported a success that was not one
    assert all(r["true_lifts"] >= r["claimed"] >= 0 for r in results.values()), results
    # the fine-tune ran on the arm from the sim run's weights, its step count continued
    log = (here / "dr.log").read_text()
    assert f"resumed at step {SIM_STEPS}, training to step {SIM_STEPS + ARM_STEPS}" in log
    assert "--backend hardware" in log and "--scene-operator http://" in log
    assert "gap mild" in done.stdout and "zero-shot" in done.stdout and (out / "transfer.png").stat().st_size > 1000
    again = subprocess.run([*cmd, "--report"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "gap mild" in again.stdout
    # --steps 0: zero-shot only, into the same results (mild's camera and demos are reused); gap
    # none: the twin itself behind the bus and camera
    zero = subprocess.run([*cmd, "--runs", "dr", "--steps", "0", "--gaps", "mild,none"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert zero.returncode == 0, zero.stdout[-3000:] + zero.stderr[-3000:]
    results = {(r["gap"], r["name"]): r for r in json.loads((out / "results.json").read_text())["results"]}
    assert set(results) == {("mild", "dr"), ("mild", "scratch"), ("none", "dr")}
    assert results["mild", "scratch"] == scratch
    for key in (("mild", "dr"), ("none", "dr")):
        assert results[key]["budget"] == 0 and [s for s, _ in results[key]["curve"]] == [0]
    # no gap: the aligned camera projects the table where the twin's own camera does (a planar grid
    # leaves distance against field of view loosely pinned, so the pose itself is not compared)
    from se_robot.config import config_path
    from se_robot.envs.detector import load_calibration

    aligned, nominal = (load_calibration(p).P for p in (out / "none" / "camera.yaml",
                                                       config_path("cameras", "twin_scene.yaml")))
    table = np.array([[x, y, 0.015, 1.0] for x in (0.12, 0.2, 0.28) for y in (-0.1, 0.0, 0.1)]).T
    px = [(P @ table)[:2] / (P @ table)[2] for P in (aligned, nominal)]
    assert np.abs(px[0] - px[1]).max() < 3.0, px
