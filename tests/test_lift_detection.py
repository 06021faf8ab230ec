"""Lift judged from one camera on the (emulated) arm: a real lift counts, a look-alike does not.

One camera fixes the cube only up to its viewing ray, so the env takes the cube to be held (and high)
when the ray passes by the gripper. A policy learning on the arm found the look-alike within a few
hundred steps: close the gripper and hold it up on the camera's line of sight to the cube, still on
the table. Every episode then "succeeded" in about 12 steps. Here the emulator's ground truth (the
twin behind the bus) says what really happened; the env only sees the camera and the joints.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from se_robot.arm import load_arm  # noqa: E402
from se_robot.envs import make_env  # noqa: E402
from se_robot.envs.experts import ScriptedExpert, expert_for  # noqa: E402
from se_robot.hardware.emulator import VirtualArm  # noqa: E402

pytestmark = pytest.mark.timeout(600)

ARM = load_arm("so101")


class OnTheRay(ScriptedExpert):
    """Gripper to the point of the camera's ray to the cube at ``height_m``, jaws at ``grip``."""

    def __init__(self, env, height_m: float, grip: float):
        self.height_m, self.grip = height_m, grip
        super().__init__(env)

    def plan(self, s):
        P = self.env.detector.calibration.P
        centre = -np.linalg.solve(P[:, :3], P[:, 3])
        ray = centre - s.cube_pos
        return s.cube_pos + ray * (self.height_m - s.cube_pos[2]) / ray[2], self.grip


def _episode(env, policy, vm) -> tuple[bool, bool, float]:
    """(the env's success, whether it ever took the cube as held, the true cube height at the end)."""
    obs, _ = env.reset(seed=0)
    policy.reset()
    success = held = False
    for _ in range(60):
        obs, _, terminated, truncated, info = env.step(policy(obs))
        success |= bool(info["is_success"])
        held |= bool(info["detector/cube_held"])
        if terminated or truncated:
            break
    with vm.physics.lock:
        true_z = float(vm.physics.twin.cube_position()[2])
    return success, held, true_z


@pytest.fixture(scope="module")
def arm():
    with VirtualArm(ARM, physics="twin", task="lift", camera_port=0, camera_size=(320, 240), scene_port=0) as vm:
        env = make_env("lift", backend="hardware", frame_stack=0, obs_mode="state", port=vm.port,
                       calibration=str(vm.calibration_path), scene_camera="twin_scene", camera_source=vm.camera_url,
                       operator=vm.scene_url, reward_type="sparse", timeout_s=0.5)
        try:
            yield env, vm
        finally:
            env.close()


@pytest.mark.parametrize("grip", [-1.0, -0.5], ids=["closed", "half_closed"])
def test_an_empty_gripper_on_the_cameras_line_of_sight_is_not_a_lift(arm, grip):
    env, vm = arm
    success, held, true_z = _episode(env, OnTheRay(env, 0.10, grip), vm)
    assert true_z < 0.02, "the cube stayed on the table"
    assert not held and not success


def test_the_scripted_lift_is_still_seen_as_one(arm):
    env, vm = arm
    success, held, true_z = _episode(env, expert_for(env), vm)
    assert success and held
    assert true_z > 0.05, f"the emulator's cube is at {true_z:.3f} m: the success was real"
