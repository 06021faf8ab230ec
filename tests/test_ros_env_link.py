"""RosArmEnv's reset against a fake RobotLink: waiting out a node's activation, and not more."""

from __future__ import annotations

import time

import numpy as np
import pytest

from se_robot.arm import load_arm
from se_robot.envs.ros_env import Observation, ResetError, RosArmEnv
from se_robot.ros_params import HOME_NOT_ACTIVE


class FakeLink:
    has_task_state = False

    def __init__(self, inactive_for_s: float):
        self.arm = load_arm("so101")
        self.active_at = time.monotonic() + inactive_for_s
        self.home_calls = 0

    def send_command(self, q):
        return time.time_ns()

    def wait_observation(self, newer_than_ns, need_image, need_task, timeout_s):
        n = self.arm.n_joints
        return Observation(q=self.arm.home.copy(), qd=np.zeros(n), state_ns=time.time_ns(),
                           image=np.zeros((84, 84, 3), np.uint8), image_ns=time.time_ns())

    def reset_task(self, seed):
        return True, ""

    def home(self, timeout_s):
        self.home_calls += 1
        if time.monotonic() < self.active_at:
            return False, f"{HOME_NOT_ACTIVE} (configure and activate it first)"
        return True, "homed"

    def estop(self, reason):
        pass

    def close(self):
        pass


def test_reset_waits_for_a_node_that_is_still_activating():
    link = FakeLink(inactive_for_s=0.5)
    env = RosArmEnv(link, "reach", obs_mode="pixels")
    env.reset(seed=0)
    assert link.home_calls > 1


def test_reset_reports_an_arm_left_inactive():
    link = FakeLink(inactive_for_s=1e9)
    env = RosArmEnv(link, "reach", obs_mode="pixels")
    with pytest.raises(ResetError, match="not active"):
        env.reset(seed=0)
