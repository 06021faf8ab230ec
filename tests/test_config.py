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


# ---------------------------------------------------------------- layers: one merge, one loader
def test_merge_is_deep_and_leaves_its_inputs_alone():
    from se_robot.config import merge

    base = {"agent": {"sac": {"actor_lr": 1e-3, "critic_lr": 1e-3}, "utd_ratio": 10}, "steps": 5}
    top = {"agent": {"sac": {"actor_lr": 3e-4}}, "env": {"reward_type": "dense"}}
    assert merge(base, top) == {"agent": {"sac": {"actor_lr": 3e-4, "critic_lr": 1e-3}, "utd_ratio": 10},
                                "steps": 5, "env": {"reward_type": "dense"}}
    assert base["agent"]["sac"]["actor_lr"] == 1e-3


def test_file_overrides_deep_merge_as_set_does(tmp_path):
    """``config.load`` and ``resolve`` share the deep merge: an override keeps the file's siblings."""
    import yaml

    from se_robot.agents.mbpo import MBPOConfig

    path = tmp_path / "mbpo.yaml"
    path.write_text(yaml.safe_dump({"model": {"hidden_dim": 64, "num_layers": 2}}))
    cfg = load(MBPOConfig, path, {"model": {"num_layers": 3}})
    assert (cfg.model.hidden_dim, cfg.model.num_layers) == (64, 3)


def test_set_deep_merges_into_a_nested_section_of_a_recipe():
    from se_robot.train_config import load_config, read_recipe

    recipe = read_recipe("reach_mbpo_quick")["agent"]
    cfg = load_config("reach_mbpo_quick", set_pairs=["agent.sac.actor_lr=3e-4", "agent.model.hidden_dim=64"])
    assert cfg.agent["sac"]["actor_lr"] == 3e-4 and cfg.agent["model"]["hidden_dim"] == 64
    assert cfg.agent["sac"]["critic_lr"] == recipe["sac"]["critic_lr"]          # siblings kept
    assert cfg.agent["model"]["num_layers"] == recipe["model"]["num_layers"]
    assert cfg.agent["rollout_schedule"] == recipe["rollout_schedule"]


def test_a_recipe_by_name_is_a_diff_over_the_defaults():
    from se_robot.config import named_config
    from se_robot.train_config import TrainConfig, load_config, recipe_path

    cfg = load_config("reach_mbpo_quick")
    assert (cfg.algo, cfg.obs_mode, cfg.frame_stack, cfg.action_repeat, cfg.steps) == ("mbpo", "state", 1, 1, 3000)
    assert cfg.task == TrainConfig().task and cfg.eval_episodes == TrainConfig().eval_episodes
    assert load_config(recipe_path("reach_mbpo_quick")) == cfg                  # the same file by path
    assert recipe_path("reach_mbpo_quick") == named_config("recipes", "reach_mbpo_quick")
    pixels = load_config("reach_drqv2_pixels", {"agent": {"encoder_checkpoint": "enc.pt"}})
    assert (pixels.algo, pixels.obs_mode, pixels.image_size, pixels.agent["encoder"]) == \
        ("drqv2", "both", 64, "checkpoint")
    with pytest.raises(ConfigError) as e:
        load_config("reach_sac_quick")
    assert "reach_mbpo_quick" in str(e.value) and "reach_drqv2_pixels" in str(e.value)


def test_every_recipe_loads():
    from se_robot.train_config import load_config

    for path in sorted(config_path("recipes").glob("*.yaml")):
        load_config(path, {"agent": {"encoder_checkpoint": "enc.pt"}} if "pixels" in path.stem else None)


@pytest.mark.parametrize("pairs,old,new", [
    (["replay.frame_stack=2"], "replay.frame_stack", "use frame_stack"),
    (["algo=mbpo", "replay.n_step=1", "obs_mode=state", "agent.sac.gamma=0.9"], "agent.sac.gamma",
     "use replay.discount"),
    (["algo=sac", "obs_mode=state", "agent.gamma=0.9"], "agent.gamma", "use replay.discount"),
    (["total_steps=500"], "total_steps", "use steps"),
])
def test_an_old_key_names_the_key_that_replaces_it(tmp_path, pairs, old, new):
    import yaml

    from se_robot.config import parse_set
    from se_robot.train_config import load_config

    with pytest.raises(ConfigError) as e:
        load_config(set_pairs=pairs)
    assert e.value.source == "--set" and e.value.key == old and new in str(e.value)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(parse_set(pairs)))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.source == str(path) and e.value.key == old and new in str(e.value)


def test_the_derived_values_follow_their_one_knob():
    from se_robot.train_config import load_config

    cfg = load_config("reach_mbpo_quick", set_pairs=["replay.discount=0.95", "frame_stack=2"])
    assert cfg.agent["sac"]["gamma"] == 0.95 == cfg.replay.discount
    assert cfg.replay.frame_stack == 2 == cfg.frame_stack
    assert load_config("reach_mbpo_quick").agent["sac"]["gamma"] == 0.9     # the recipe's discount
    assert "gamma" not in load_config(set_pairs=["algo=sac", "obs_mode=state"]).agent


def test_a_saved_run_config_resumes_with_its_derived_values_derived_again(tmp_path):
    """A run's config.yaml records derived values; loading it back (resume) derives them anew."""
    import yaml

    from se_robot.config import to_dict
    from se_robot.train_config import load_config

    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(to_dict(load_config("reach_mbpo_quick"))))
    assert load_config(saved=saved) == load_config("reach_mbpo_quick")
    resumed = load_config(saved=saved, set_pairs=["replay.discount=0.8", "steps=6000"])
    assert (resumed.agent["sac"]["gamma"], resumed.steps) == (0.8, 6000)


def test_errors_name_the_layer_that_set_the_key(tmp_path):
    import yaml

    from se_robot.train_config import load_config

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"replay": {"capacity": 1}}))
    with pytest.raises(ConfigError) as e:
        load_config(path, {"steps": 10}, ["eval_every=5"], source="command line")
    assert (e.value.source, e.value.key) == (str(path), "replay.capacity")
    with pytest.raises(ConfigError) as e:
        load_config(None, {"algo": "ppo"}, source="command line")
    assert (e.value.source, e.value.key) == ("command line", "algo")
    with pytest.raises(ConfigError) as e:
        load_config(path, None, ["replay.capacity=-5"])
    assert (e.value.source, e.value.key) == ("--set", "replay.capacity")
    with pytest.raises(ConfigError) as e:       # n_step is the defaults' (3): no layer is blamed for it
        load_config(None, {"algo": "mbpo", "obs_mode": "state"}, ["replay.capacity=500"])
    assert e.value.key == "replay.n_step" and e.value.source not in ("--set", "<overrides>")
