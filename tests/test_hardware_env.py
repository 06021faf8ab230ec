"""ArmEnv over SerialRobot end to end against the emulator: servo bytes on a pty, camera frames over MJPEG.

The scripted expert drives the env exactly as a policy would; the env only knows what a real arm
would tell it (servo registers, camera frames), so success here exercises the driver, the camera,
the detector and the task code together.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import time  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from se_robot.arm import load_arm  # noqa: E402
from se_robot.envs.detector import HsvRange, load_calibration  # noqa: E402
from se_robot.config import config_path  # noqa: E402
from se_robot.envs.experts import expert_for  # noqa: E402
from se_robot.envs import make_env  # noqa: E402
from se_robot.envs.arm_env import ArmEnv  # noqa: E402
from se_robot.hardware.camera import CameraError  # noqa: E402
from se_robot.hardware.emulator import VirtualArm, emulator_calibration_path  # noqa: E402
from se_robot.hardware.serial_robot import make_serial_robot  # noqa: E402
from se_robot.robot import HomingError  # noqa: E402

pytestmark = pytest.mark.timeout(180)

ARM = load_arm("so101")
EMULATOR_CALIBRATION = emulator_calibration_path(ARM)  # the drivers are handed it explicitly


def _virtual_arm(task: str) -> VirtualArm:
    return VirtualArm(ARM, physics="twin", camera_port=0, camera_size=(320, 240), task=task)


def _hardware_env(task: str, vm: VirtualArm | None = None, port: str = "/dev/null-no-such-port",
                  scene_camera: str | None = "twin_scene", wrist_camera: str | None = None, **options) -> ArmEnv:
    """ArmEnv over a SerialRobot on the emulator's pty (or a port never opened: spaces only)."""
    robot, camera_yaml = make_serial_robot(
        ARM, vm.port if vm else port, vm.calibration if vm else EMULATOR_CALIBRATION, scene_camera=scene_camera,
        camera_source=vm.camera_url if vm and scene_camera else None, wrist_camera=wrist_camera)
    from se_robot.envs.detector import make_detector

    detector = options.pop("detector", None) or (make_detector(None, camera_yaml) if camera_yaml else None)
    # pixel reach on the arm takes its reward from a success classifier (ArmEnv refuses the virtual
    # target otherwise); these tests are about spaces, timing and sensing, not the reward
    options.setdefault("learned_reward", task == "reach")
    return ArmEnv(robot, task, detector=detector, **options)


def _run_expert(env, max_steps: int):
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    expert = expert_for(env)
    expert.reset()
    infos = []
    for _ in range(max_steps):
        obs, reward, terminated, truncated, info = env.step(expert(obs))
        assert env.observation_space.contains(obs)
        assert np.isfinite(reward)
        infos.append(info)
        if terminated or truncated:
            break
    return infos


@pytest.mark.parametrize("task", ["reach", "push", "lift"])
def test_expert_succeeds_on_the_emulated_arm(task):
    with _virtual_arm(task) as vm:
        # pixel reach has no target the camera sees on a real table: reach observes its virtual target
        env = make_env(task, backend="hardware", frame_stack=0, port=vm.port, calibration=vm.calibration,
                       scene_camera="twin_scene", camera_source=vm.camera_url, image_size=64,
                       obs_mode="state" if task == "reach" else "both", operator=vm.scene_operator())
        try:
            infos = _run_expert(env, env.unwrapped.task.cfg.max_episode_steps)
        finally:
            env.close()
    assert infos[-1]["is_success"], f"{task}: no success in {len(infos)} steps; last info {infos[-1]}"
    for key in ("safety/clipped", "safety/held", "safety/reasons", "timing/overrun", "timing/overruns",
                "timing/late_s", "camera/frame_age_s", "camera/stale", "camera/stale_frames"):
        assert key in infos[-1]
    if task != "reach":
        assert all(i["detector/cube_visible"] for i in infos[:3])


@pytest.mark.parametrize("options", [
    dict(obs_mode="state", action_mode="ee_delta"),
    dict(obs_mode="both", image_size=64, action_mode="joint_delta"),
    dict(obs_mode="pixels", image_size=84),
])
@pytest.mark.parametrize("task", ["reach", "push"])
def test_spaces_match_the_sim_env(task, options):
    sim = make_env(task, frame_stack=0, **options)
    # The env builds its spaces without touching the port or the camera.
    hw = _hardware_env(task, **options)
    try:
        assert hw.observation_space == sim.observation_space
        assert hw.action_space == sim.action_space
    finally:
        sim.close()


def test_late_step_is_an_overrun_and_stopped_camera_is_stale():
    with _virtual_arm("reach") as vm:
        env = _hardware_env("reach", vm, obs_mode="both", image_size=64, frame_timeout_s=0.2)
        try:
            env.reset(seed=1)
            zero = np.zeros(env.action_space.shape, np.float32)
            _, _, _, _, info = env.step(zero)
            time.sleep(3 * env.period_s)  # a policy far slower than the control period
            _, _, _, _, info = env.step(zero)
            assert info["timing/overrun"] and info["timing/overruns"] >= 1 and info["timing/late_s"] > 0
            vm.camera_server.stop()  # the camera stops delivering
            _, _, _, _, info = env.step(zero)
            _, _, _, _, info = env.step(zero)
            assert info["camera/stale"] and info["camera/stale_frames"] >= 1
        finally:
            env.close()


def test_homing_failure_names_the_joint():
    with VirtualArm(ARM, physics="first_order") as vm:
        # A servo that barely moves (a jam), left far from home by hand.
        elbow = ARM.joint_names.index("elbow_flex")
        home_ticks = vm.calibration.rad_to_ticks(ARM.home, ARM.joint_names)
        vm.physics.max_speed = 5.0
        vm.physics.move_to(ARM.servo_ids[elbow], float(home_ticks[elbow]) + 400.0)
        env = _hardware_env("reach", vm, scene_camera=None, home_timeout_s=0.5)
        try:
            with pytest.raises(HomingError, match="elbow_flex") as err:
                env.reset(seed=0)
            assert "shoulder_pan" not in str(err.value)
        finally:
            env.close()


def test_reset_without_a_visible_cube_says_so():
    cal = load_calibration(config_path("cameras", "twin_scene.yaml"))
    from dataclasses import replace

    blind = replace(cal, cube=HsvRange(h_min=170, h_max=171, s_min=255, s_max=255, v_min=255, v_max=255))
    with _virtual_arm("push") as vm:
        env = _hardware_env("push", vm, detector=blind, object_timeout_s=0.5, operator=vm.scene_operator())
        try:
            with pytest.raises(CameraError, match="no cube"):
                env.reset(seed=0)
        finally:
            env.close()


def test_tasks_that_need_the_camera_refuse_to_build_without_it():
    with pytest.raises(ValueError, match="needs the scene camera"):
        _hardware_env("push", scene_camera=None)
    with pytest.raises(ValueError, match="wrist_camera"):
        _hardware_env("reach", obs_mode="pixels", camera="wrist")


def test_make_env_composes_the_hardware_backend_with_wrappers():
    with _virtual_arm("push") as vm:
        env = make_env("push", backend="hardware", frame_stack=2, port=vm.port, calibration=vm.calibration,
                       scene_camera="twin_scene", operator=vm.scene_operator(),
                       camera_source=vm.camera_url, obs_mode="both", image_size=64)
        try:
            obs, _ = env.reset(seed=0)
            assert obs["pixels"].shape == (6, 64, 64) and env.observation_space.contains(obs)
            obs, *_ = env.step(env.action_space.sample())
            assert env.observation_space.contains(obs)
            assert env.unwrapped.robot.diagnostics()["arm/ticks"] >= 1
        finally:
            env.close()
