"""The emulator's twin reality gap: one draw per session, seen by the camera stream and the bus."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from se_robot.arm import load_arm  # noqa: E402
from se_robot.config import ConfigError  # noqa: E402
from se_robot.estop import EStop  # noqa: E402
from se_robot.hardware.emulator import VirtualArm  # noqa: E402
from se_robot.hardware.serial_arm import SerialArm  # noqa: E402
from se_robot.safety import SafetyFilter  # noqa: E402
from se_robot.sim.randomize import LATE_FIELDS, load_randomization  # noqa: E402

pytestmark = pytest.mark.timeout(180)

ARM = load_arm("so101")
ROOT = Path(__file__).resolve().parents[1]
#: a fixed camera offset (zero-width ranges), as a file describing one setup gives it
CAMERA_GAP = {"camera_pos_m": [0.02, 0.02], "camera_fovy_deg": [3.0, 3.0], "image_noise_std": [2.0, 2.0]}


def _render(vm: VirtualArm, frames: int = 1) -> np.ndarray:
    """What the stream's producer draws, from an emulator never started (the arm at home, still)."""
    try:
        return np.stack([vm.physics.render("scene", 160, 120) for _ in range(frames)]).astype(np.float64)
    finally:
        vm.physics.close_renderers()


def _assert_same_draw(a, b) -> None:
    for f in dataclasses.fields(a):
        assert np.array_equal(getattr(a, f.name), getattr(b, f.name)), f.name


def test_gapped_camera_stream_shows_the_gapped_scene():
    from se_robot.hardware.camera import OpenCVCamera

    nominal2 = _render(VirtualArm(ARM, physics="twin"), frames=2)
    gapped2 = _render(VirtualArm(ARM, physics="twin", twin_gap=CAMERA_GAP), frames=2)
    nominal, gapped = nominal2[0], gapped2[0]
    assert np.abs(gapped - nominal).mean() > 8.0   # the camera moved 2 cm and widened 3 deg
    # sensor noise (std 2), fresh every frame; the nominal renders of a still scene differ far less
    # (the renderer's first frames of a new context vary by a fraction of a level)
    assert np.abs(nominal2[0] - nominal2[1]).mean() < 0.6
    assert 1.0 < np.abs(gapped2[0] - gapped2[1]).mean() < 4.0

    means = {}
    for name, kwargs in (("gapped", {"twin_gap": CAMERA_GAP}), ("nominal", {})):
        with VirtualArm(ARM, physics="twin", camera_port=0, camera_size=(160, 120), **kwargs) as vm:
            for sid in ARM.servo_ids:   # hold the arm where it starts, so it poses as the references do
                vm.physics.set_torque(sid, True, time.monotonic())
            with OpenCVCamera(vm.camera_url) as cam:
                frame, _ = cam.read(timeout_s=30.0)
        frame = frame.astype(np.float64)
        means[name] = (np.abs(frame - gapped).mean(), np.abs(frame - nominal).mean())
    # each stream is near its own reference (JPEG, noise, a held arm's sag) and far from the other
    assert means["gapped"][0] < means["gapped"][1] / 2
    assert means["nominal"][1] < means["nominal"][0] / 2


def test_one_draw_per_session_kept_across_resets():
    a = VirtualArm(ARM, physics="twin", twin_gap="mild", twin_gap_seed=5)
    b = VirtualArm(ARM, physics="twin", twin_gap="mild", twin_gap_seed=5)
    c = VirtualArm(ARM, physics="twin", twin_gap="mild", twin_gap_seed=6)
    _assert_same_draw(a.gap_draw, b.gap_draw)
    assert not np.array_equal(a.gap_draw.camera_pos_m, c.gap_draw.camera_pos_m)

    m = a.physics.twin.model
    before = {k: getattr(m, k).copy() for k in ("cam_pos", "cam_quat", "cam_fovy", "actuator_gainprm",
                                                "dof_damping", "geom_size", "body_mass", "mat_rgba")}
    draw = a.gap_draw
    home = dict(zip(ARM.servo_ids, a.calibration.rad_to_ticks(ARM.home, ARM.joint_names)))
    for seed in range(3):   # scene resets: the arm re-homed, the cube put back somewhere else
        a.physics.reset(home)
        a.place_objects(a.physics.twin.task.sample_reset(np.random.default_rng(seed)))
    a.physics.close()
    assert a.gap_draw is draw
    for k, v in before.items():
        assert np.array_equal(getattr(m, k), v), k
    nominal = VirtualArm(ARM, physics="twin").physics.twin.model
    assert not np.array_equal(m.cam_pos, nominal.cam_pos)


def _step_response(vm: VirtualArm, step_rad: float, duration_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Shoulder pan's present position, read over the bus as a driver reads it, after a step of its goal."""
    from se_robot.sim.kinematics import Kinematics

    sid = ARM.servo_ids[0]
    robot = SerialArm(ARM, vm.port, vm.calibration, safety_filter=SafetyFilter(ARM, Kinematics(ARM), EStop()),
                      timeout_s=0.05, retries=3)
    with robot:
        bus = robot.bus
        start = bus.sync_read(ARM.servo_ids, ("Present_Position",))
        bus.sync_write("Goal_Position", {s: start[s]["Present_Position"] for s in ARM.servo_ids})
        for s in ARM.servo_ids:
            bus.write(s, "Torque_Enable", 1)
        time.sleep(0.5)
        q0 = bus.read(sid, "Present_Position")
        goal = q0 + step_rad / vm.calibration.rad_per_tick
        t0 = time.monotonic()
        bus.sync_write("Goal_Position", {sid: int(round(goal))})
        times, ticks = [], []
        while (t := time.monotonic() - t0) < duration_s:
            times.append(t)
            ticks.append(bus.read(sid, "Present_Position"))
            time.sleep(0.01)
    return np.array(times), (np.array(ticks) - q0) / (goal - q0)


def test_servo_gap_changes_the_step_response_the_driver_reads():
    """A softer servo covers half a small step later than the nominal one, a softer and later one
    later still; all get there. (A small step: a large one saturates the servo's torque, whatever kp.)"""
    soft = {"servo_kp": [0.25, 0.25]}
    cases = {"nominal": {}, "soft": {"twin_gap": soft}, "soft_late": {"twin_gap": {**soft, "latency_ticks": [2, 2]}}}
    half = {}
    for name, kwargs in cases.items():
        with VirtualArm(ARM, physics="twin", **kwargs) as vm:
            t, frac = _step_response(vm, 0.1, duration_s=2.0)
        assert frac[-1] > 0.8, (name, frac[-1])   # reached (a soft servo stops a little short against friction)
        half[name] = t[np.argmax(frac > 0.5)]
    assert half["nominal"] < half["soft"] < half["soft_late"], half


def test_servo_deadband_gap_ignores_a_small_goal_step_read_over_the_bus():
    """A goal step inside the drawn deadband (0.02 rad) leaves the joint where it is; a step past it,
    or any step without a deadband, is followed."""
    deadband = {"twin_gap": {"servo_deadband_rad": [0.02, 0.02]}}
    moved = {}
    for name, kwargs, step in (("nominal_small", {}, 0.01), ("deadband_small", deadband, 0.01),
                               ("deadband_large", deadband, 0.05)):
        with VirtualArm(ARM, physics="twin", **kwargs) as vm:
            _, frac = _step_response(vm, step, duration_s=1.0)
        moved[name] = frac[-1]
    assert moved["nominal_small"] > 0.8 and moved["deadband_large"] > 0.8, moved
    assert abs(moved["deadband_small"]) < 0.2, moved


def test_cluttered_gap_shows_texture_and_distractors_on_the_camera():
    """``cluttered`` draws what ``mild`` draws for the same seed (image noise included), plus the
    clutter: the frames differ by the table pattern and the distractors alone."""
    cluttered_vm = VirtualArm(ARM, physics="twin", twin_gap="cluttered", twin_gap_seed=2)
    draw = cluttered_vm.gap_draw
    assert draw.table_texture >= 0.2 and draw.distractors >= 1 and draw.servo_deadband_rad >= 0.002
    assert cluttered_vm.physics.twin.servo_deadband_rad == draw.servo_deadband_rad
    mild_vm = VirtualArm(ARM, physics="twin", twin_gap="mild", twin_gap_seed=2)
    _assert_same_draw(dataclasses.replace(draw, table_texture=0.0, distractors=0, servo_deadband_rad=0.0),
                      mild_vm.gap_draw)
    cluttered, mild = _render(cluttered_vm)[0], _render(mild_vm)[0]
    assert np.abs(cluttered - mild).mean() > 5.0


def test_bad_gap_file_names_file_and_key(tmp_path):
    bad = tmp_path / "my_gap.yaml"
    bad.write_text("servo_kp: [0.8, 1.2]\ncamera_fov_deg: [1.0, 1.0]\n")
    with pytest.raises(ConfigError) as e:
        VirtualArm(ARM, physics="twin", twin_gap=bad)
    assert "my_gap.yaml" in str(e.value) and "camera_fov_deg" in str(e.value)
    bad.write_text("servo_kp: [1.3, 0.9]\n")
    with pytest.raises(ConfigError, match=r"my_gap\.yaml.*servo_kp"):
        load_randomization(bad, kind="gaps")
    with pytest.raises(ConfigError, match="no gap named 'medium'.*hard.*mild"):
        VirtualArm(ARM, physics="twin", twin_gap="medium")
    with pytest.raises(ValueError, match="physics='twin'"):
        VirtualArm(ARM, twin_gap="mild")


def test_gap_presets_load_and_hard_reaches_further():
    """Over the parameters both presets set; the later ones (texture, distractors, deadband) are
    in ``cluttered`` only, so ``mild`` and ``hard`` keep the draws measured with them."""
    mild, hard = load_randomization("mild", kind="gaps"), load_randomization("hard", kind="gaps")
    for f in dataclasses.fields(mild):
        if f.name in LATE_FIELDS:
            continue
        neutral = f.default[0]

        def reach(spec):
            return max(abs(v - neutral) for v in getattr(spec, f.name))

        assert 0 < reach(mild) < reach(hard), f.name


def test_emulate_cli_with_a_gap_file(tmp_path):
    gap = tmp_path / "setup.yaml"
    gap.write_text("camera_pos_m: [0.03, 0.03]\nservo_kp: [0.7, 0.7]\nlatency_ticks: [1, 1]\n"
                   "distractors: [2, 2]\nservo_deadband_rad: [0.004, 0.004]\n")
    out = subprocess.run([sys.executable, "-m", "se_robot.cli", "emulate", "--gap", str(gap), "--gap-seed", "3",
                          "--seconds", "1"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "MUJOCO_GL": "egl"})
    assert out.returncode == 0, out.stderr
    assert "physics: twin" in out.stdout
    assert "reality gap:" in out.stdout and "seed 3" in out.stdout
    assert "moved (+0.030, +0.030, +0.030) m" in out.stdout
    assert "kp x0.700" in out.stdout and "latency 1 ticks (100 ms on the bus)" in out.stdout
    assert "2 distractors" in out.stdout and "servo deadband 0.0040 rad" in out.stdout
