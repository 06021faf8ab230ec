"""Config loading: wrong keys, types and ranges stop with the file, the key and what is allowed."""

from dataclasses import dataclass

import pytest

from se_robot.arm import ArmDescription, load_arm
from se_robot.config import ConfigError, config_path, from_dict, load, option, read_yaml
from se_robot.tasks import load_task


@dataclass
class Demo:
    lr: float = option(1e-3, help="learning rate", range=(0.0, 1.0))
    mode: str = option("a", choices=("a", "b"))
    steps: int = option(10, range=(1, None))


def test_values_load():
    assert from_dict(Demo, {"lr": 0.5, "mode": "b", "steps": 3}) == Demo(0.5, "b", 3)


@pytest.mark.parametrize("data,key,words", [
    ({"lrr": 1}, "lrr", "unknown key"),
    ({"lr": "fast"}, "lr", "expected a number"),
    ({"lr": 2.0}, "lr", "out of range"),
    ({"mode": "c"}, "mode", "allowed: a, b"),
    ({"steps": 1.5}, "steps", "expected an integer"),
    ({"steps": True}, "steps", "expected an integer"),
])
def test_errors_name_file_key_and_allowed(tmp_path, data, key, words):
    import yaml

    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as e:
        load(Demo, path)
    msg = str(e.value)
    assert str(path) in msg and key in msg and words in msg


def test_arm_description_is_consistent():
    arm = load_arm("so101")
    assert arm.joint_names == ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
    assert arm.servo_ids == [1, 2, 3, 4, 5, 6]
    assert (arm.lower < arm.home).all() and (arm.home < arm.upper).all()


def test_bad_arm_file_names_the_problem(tmp_path):
    import yaml

    data = read_yaml(config_path("arms", "so101.yaml"))
    data["joint_limits"]["elbow_flex"]["min_position"] = 5.0
    path = tmp_path / "arm.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="min_position"):
        load_arm(path)
    data = read_yaml(config_path("arms", "so101.yaml"))
    data["joints"][1]["servo_id"] = 1
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="duplicate servo ids"):
        load_arm(path)


def test_unknown_task_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="allowed: reach, push, lift"):
        load_task("stack")
    bad = tmp_path / "t.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_task(str(bad))


def test_env_options_are_validated():
    import gymnasium as gym

    import se_robot.envs  # noqa: F401

    with pytest.raises(ConfigError, match="obs_mode"):
        gym.make("se_robot/SimReach-v0", obs_mode="depth")
    with pytest.raises(ConfigError, match="image_size"):
        gym.make("se_robot/SimReach-v0", image_size=4)
    assert isinstance(ArmDescription, type)


def test_unknown_arm_name_lists_the_arms():
    with pytest.raises(ConfigError) as e:
        load_arm("so100")
    assert "so101" in str(e.value) and "so101_calibration" not in str(e.value)
