"""The intervention wrapper on the sim twin, driven by keys typed into a pty."""

from __future__ import annotations

import os
import select

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def keyboard():
    from se_robot.teleop.keyboard import KeyboardTeleop

    master, slave = os.openpty()
    kb = KeyboardTeleop(tty_path=os.ttyname(slave), speed=1.0)
    kb.connect()

    def type_keys(data: bytes) -> None:
        os.write(master, data)
        select.select([kb._fd], [], [], 2.0)

    yield kb, type_keys
    kb.disconnect()
    os.close(master)
    os.close(slave)


def _env(action_mode="ee_delta"):
    from se_robot.envs import make_env

    return make_env("push", obs_mode="state", action_mode=action_mode)


def test_device_takes_over_and_labels(keyboard):
    from se_robot.envs.intervention import InterventionWrapper

    kb, type_keys = keyboard
    env = InterventionWrapper(_env(), kb)
    estop = env.unwrapped.robot.estop
    assert kb.estop is estop  # attached automatically: the e-stop key stops this arm
    policy = np.array([0.0, 0.0, -0.5, -1.0], np.float32)
    env.reset(seed=0)
    _, _, _, _, info = env.step(policy)
    assert info["intervention"] is False
    np.testing.assert_array_equal(info["executed_action"], policy)

    type_keys(b"w")  # deflecting the device takes over for that step
    _, _, _, _, info = env.step(policy)
    assert info["intervention"] is True
    np.testing.assert_allclose(info["executed_action"], [1.0, 0, 0, 1.0])
    np.testing.assert_array_equal(info["policy_action"], policy)
    assert info["intervention_rate"] == pytest.approx(0.5)

    type_keys(b"i")  # toggled on: the human holds control even with the keys at rest
    _, _, _, _, info = env.step(policy)
    assert info["intervention"] is True and info["executed_action"][0] == 0.0
    type_keys(b"i")
    assert env.step(policy)[4]["intervention"] is False
    assert env.intervention_steps == 2 and env.total_steps == 4

    type_keys(b"y")
    _, _, terminated, _, info = env.step(policy)
    assert terminated and info["is_success"] and info["operator_label"] == "success"
    env.reset(seed=1)
    type_keys(b"n")
    _, _, _, truncated, info = env.step(policy)
    assert truncated and info["operator_label"] == "failure"

    assert not estop.latched
    type_keys(b" ")
    _, _, _, _, info = env.step(policy)
    assert info["estop"] and estop.latched
    env.close()


def test_device_with_the_wrong_action_space_is_refused(keyboard):
    from se_robot.envs.intervention import InterventionWrapper

    kb, type_keys = keyboard
    env = InterventionWrapper(_env("joint_delta"), kb)
    env.reset(seed=0)
    type_keys(b"w")
    with pytest.raises(ValueError, match="gives actions of shape"):
        env.step(np.zeros(env.action_space.shape, np.float32))
    env.close()
