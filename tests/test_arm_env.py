"""ArmEnv over every Robot: one env class for the twin and the emulated serial arm, the fixed dict
keys of each obs_mode, the pacing of simulated and real-time robots, and homing failures."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from se_robot.arm import load_arm  # noqa: E402
from se_robot.envs import make_env  # noqa: E402
from se_robot.envs.arm_env import ArmEnv, center_square  # noqa: E402
from se_robot.hardware.emulator import VirtualArm  # noqa: E402
from se_robot.robot import HomingError, Robot  # noqa: E402
from se_robot.sim.twin_robot import TwinRobot  # noqa: E402

pytestmark = pytest.mark.timeout(180)

ARM = load_arm("so101")
N = ARM.n_joints


def test_one_env_class_for_the_twin_and_the_emulated_serial_arm():
    with VirtualArm(ARM, physics="twin", camera_port=0, camera_size=(320, 240), task="lift") as vm:
        hw = make_env("lift", backend="hardware", frame_stack=0, port=vm.port, calibration=vm.calibration,
                      scene_camera="twin_scene", camera_source=vm.camera_url, obs_mode="both", image_size=48,
                      operator=vm.scene_operator())
        sim = make_env("lift", frame_stack=0, obs_mode="both", image_size=48)
        try:
            assert type(hw.unwrapped) is ArmEnv and type(sim.unwrapped) is ArmEnv
            assert isinstance(hw.unwrapped.robot, Robot) and isinstance(sim.unwrapped.robot, Robot)
            assert hw.unwrapped.robot.realtime and not sim.unwrapped.robot.realtime
            assert hw.observation_space == sim.observation_space and hw.action_space == sim.action_space
            for env in (hw, sim):
                obs, info = env.reset(seed=0)
                assert set(obs) == {"state", "pixels"} and obs["pixels"].shape == (48, 48, 3)
                # both start at home: within the homing tolerance (0.05 rad), plus what the held arm
                # settles in the ticks between homing and the first observation (the scene restore)
                np.testing.assert_allclose(obs["state"][:N], ARM.home, atol=0.06)
                obs, _, _, _, info = env.step(np.zeros(env.action_space.shape, np.float32))
                assert env.observation_space.contains(obs)
                assert {"is_success", "safety/held", "timing/overruns", "camera/stale"} <= set(info)
        finally:
            hw.close()
            sim.close()


@pytest.mark.parametrize("obs_mode, keys", [("state", {"state", "task"}), ("both", {"state", "pixels"}),
                                            ("pixels", {"pixels"})])
@pytest.mark.parametrize("task", ["reach", "push", "lift"])
def test_observation_keys_per_obs_mode(task, obs_mode, keys):
    env = make_env(task, frame_stack=0, obs_mode=obs_mode, image_size=32)
    obs, _ = env.reset(seed=1)
    assert set(obs) == keys == set(env.observation_space.spaces)
    base = env.unwrapped
    if "state" in obs:
        assert obs["state"].dtype == np.float32 and obs["state"].shape == (2 * N + 4,)
        s = base.object_state()
        np.testing.assert_allclose(obs["state"][-3:], s.ee_pos, atol=1e-6)  # gripper xyz ends the proprio
    if "task" in obs:
        assert obs["task"].shape == (len(base.task.feature_names),)
        np.testing.assert_allclose(obs["task"], base.task.features(base.object_state()), atol=1e-6)
    if "pixels" in obs:
        assert obs["pixels"].dtype == np.uint8 and obs["pixels"].shape == (32, 32, 3)
    env.close()


def test_the_twin_is_paced_by_advancing_its_physics():
    env = make_env("reach", control_hz=20.0)
    base = env.unwrapped
    env.reset(seed=0)
    t0 = base.robot.now()
    for _ in range(4):
        _, _, _, _, info = env.step(np.zeros(env.action_space.shape, np.float32))
    assert base.clock is None and base.counters["steps"] == 4
    assert info["timing/overruns"] == 0 and info["timing/late_s"] == 0.0 and not info["timing/overrun"]
    assert base.robot.now() - t0 == pytest.approx(4 / 20.0, abs=4 * base.robot.twin.model.opt.timestep)


def test_the_serial_arm_is_paced_by_a_clock_and_counts_steps():
    with VirtualArm(ARM, physics="first_order") as vm:
        env = make_env("reach", backend="hardware", frame_stack=0, port=vm.port, calibration=vm.calibration,
                       scene_camera=None, control_hz=50.0)
        base = env.unwrapped
        try:
            env.reset(seed=0)
            for _ in range(3):
                _, _, _, _, info = env.step(np.zeros(env.action_space.shape, np.float32))
            assert base.clock is not None and base.clock.period_s == pytest.approx(1 / 50.0)
            assert base.counters["steps"] == 3 and info["timing/overruns"] == base.counters["overruns"]
            assert "camera/frame_age_s" not in info  # no camera read in obs_mode state without a detector
        finally:
            env.close()


def test_twin_homing_failure_names_the_joint():
    robot = TwinRobot(ARM, "reach")
    robot.reset_scene(np.random.default_rng(0))
    elbow = ARM.joint_names.index("elbow_flex")
    away = ARM.home.copy()
    away[elbow] += 0.6
    robot.twin.reset(np.random.default_rng(0), q=away)  # left far from home by hand
    with pytest.raises(HomingError, match="elbow_flex") as err:
        robot.home(tolerance_rad=0.05, timeout_s=0.1)  # the filter's step limit cannot get there in time
    assert "shoulder_pan" not in str(err.value)
    robot.home(tolerance_rad=0.05, timeout_s=10.0)  # given time, it does
    np.testing.assert_allclose(robot.read().positions, ARM.home, atol=0.05)
    robot.close()


def test_twin_estop_holds_and_reset_refuses_to_home():
    env = make_env("reach")
    env.reset(seed=0)
    robot = env.unwrapped.robot
    robot.trigger_estop("test")
    stopped = robot.twin.targets()
    _, _, _, _, info = env.step(np.ones(env.action_space.shape, np.float32))
    assert info["safety/held"] and "estop" in info["safety/reasons"]
    np.testing.assert_array_equal(robot.twin.targets(), stopped)  # nothing new reached the servos
    robot.twin.reset(np.random.default_rng(0), q=ARM.home + 0.3)
    with pytest.raises(HomingError, match="e-stop"):
        robot.home(0.05, 1.0)
    env.close()


def test_twin_hold_keeps_the_last_safe_goal():
    robot = TwinRobot(ARM, "reach")
    robot.reset_scene(np.random.default_rng(0))
    target = ARM.home.copy()
    target[0] += 0.05
    sent = robot.send(target)
    held = robot.hold("pause")
    np.testing.assert_array_equal(held.positions, sent.positions)
    assert held.held and "pause" in held.reasons
    robot.close()


def test_center_square_crops_then_resizes():
    frame = np.zeros((240, 320, 3), np.uint8)
    frame[:, 40:280] = 255  # the central 240 x 240 square
    out = center_square(frame, 60)
    assert out.shape == (60, 60, 3) and out.min() == 255


def test_a_stale_reading_truncates_the_episode_with_its_reason():
    """A backend whose joint topic went quiet: the step ends the episode instead of acting on old data."""
    from se_robot.robot import StaleReading
    from se_robot.sim.twin_robot import TwinRobot

    class QuietTwin(TwinRobot):
        quiet = False

        def read(self):
            if self.quiet:
                raise StaleReading("no message on /joint_states within 0.500 s")
            return super().read()

    robot = QuietTwin("so101", "reach")
    env = ArmEnv(robot, "reach")
    try:
        env.reset(seed=0)
        obs, *_ = env.step(np.zeros(env.action_space.shape, np.float32))
        robot.quiet = True
        stale_obs, reward, terminated, truncated, info = env.step(np.zeros(env.action_space.shape, np.float32))
        assert truncated and not terminated and reward == 0.0
        assert "joint_states" in info["truncation_reason"] and info["camera/stale"]
        assert env.observation_space.contains(stale_obs)
        np.testing.assert_array_equal(stale_obs["state"], obs["state"])  # the last reading, not a new one
    finally:
        env.close()
