"""Domain randomization of the twin: the YAML spec and its errors, seeded draws inside their
ranges, a draw reaching the renders and the model, the nominal model restored exactly, control
latency, and the env option through ``make_env``."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import yaml

from se_robot.arm import load_arm
from se_robot.config import ConfigError
from se_robot.envs import make_env
from se_robot.sim.randomize import LATE_FIELDS, RandomizationSpec, TwinRandomizer, load_randomization, sample
from se_robot.sim.twin import ArmTwin

pytestmark = pytest.mark.timeout(300)

ARM = load_arm("so101")


def _write(tmp_path, data) -> str:
    path = tmp_path / "dr.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


# ------------------------------------------------------------------ the spec
def test_presets_load_and_are_on():
    """``hard`` moves every parameter; ``mild`` every one but the later ones (its file is kept as it
    was, so its draws stay those of the runs already measured with it)."""
    for name in ("mild", "hard"):
        spec = load_randomization(name)
        assert spec.enabled
        moved = {f.name for f in dataclasses.fields(spec) if getattr(spec, f.name) != f.default}
        expected = {f.name for f in dataclasses.fields(spec)} - (set(LATE_FIELDS) if name == "mild" else set())
        assert moved == expected, name
    assert not RandomizationSpec().enabled
    assert not load_randomization({"cube_mass": [1.0, 1.0]}).enabled


def test_a_yaml_path_is_accepted(tmp_path):
    spec = load_randomization(_write(tmp_path, {"cube_mass": [0.5, 2.0], "latency_ticks": [1, 3]}))
    assert spec.cube_mass == (0.5, 2.0) and spec.latency_ticks == (1, 3) and spec.camera_pos_m == (0.0, 0.0)


@pytest.mark.parametrize("data, key, words", [
    ({"cube_mas": [1.0, 2.0]}, "cube_mas", "unknown key"),
    ({"camera_fovy_deg": [-5.0, 90.0]}, "camera_fovy_deg", "out of range"),
    ({"servo_kp": [0.0, 1.0]}, "servo_kp", "out of range"),
    ({"cube_size": [1.1, 0.9]}, "cube_size", "lo > hi"),
    ({"latency_ticks": [0.5, 1]}, "latency_ticks[0]", "integer"),
    ({"image_noise_std": 3.0}, "image_noise_std", "list"),
])
def test_yaml_errors_name_the_file_and_the_key(tmp_path, data, key, words):
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as e:
        load_randomization(path)
    assert e.value.source == path and e.value.key == key and words in e.value.message, str(e.value)


def test_an_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError, match="mild"):
        load_randomization("medium")


def test_the_same_seed_gives_the_same_draw_and_draws_stay_in_range():
    spec = load_randomization("hard")
    a, b = sample(spec, np.random.default_rng(7)), sample(spec, np.random.default_rng(7))
    for f in dataclasses.fields(a):
        np.testing.assert_array_equal(getattr(a, f.name), getattr(b, f.name))
    assert sample(spec, np.random.default_rng(8)).cube_mass != a.cube_mass
    rng = np.random.default_rng(0)
    seen_latency = set()
    for _ in range(200):
        d = sample(spec, rng)
        for f in dataclasses.fields(spec):
            lo, hi = getattr(spec, f.name)
            v = np.atleast_1d(getattr(d, f.name))
            assert (v >= lo).all() and (v <= hi).all(), f.name
        seen_latency.add(d.latency_ticks)
    assert seen_latency == {0, 1, 2}


# ------------------------------------------------------------------ applying a draw
def _model_arrays(twin: ArmTwin) -> dict[str, np.ndarray]:
    m = twin.model
    out = {}
    for name in dir(m):
        if not name.startswith("_"):
            value = getattr(m, name)
            if isinstance(value, np.ndarray):
                out[name] = value.copy()
    for name in ("meaninertia", "meanmass", "meansize", "extent", "center"):
        out[f"stat.{name}"] = np.copy(getattr(m.stat, name))
    for name in ("ambient", "diffuse"):
        out[f"headlight.{name}"] = getattr(m.vis.headlight, name).copy()
    return out


def _rollout(twin: ArmTwin, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A reset, a few commands with physics, and the scene camera's frame at the end."""
    twin.reset(np.random.default_rng(seed))
    for k in range(5):
        twin.set_targets(ARM.home + 0.05 * (k + 1))
        twin.step(0.1)
    return twin.render("scene", 48, 48), np.r_[twin.joint_positions(), twin.cube_position()]


def test_a_draw_changes_model_and_image_and_restore_is_exact():
    fresh, twin = ArmTwin(ARM, "lift"), ArmTwin(ARM, "lift")
    nominal = _model_arrays(fresh)
    image0, state0 = _rollout(fresh, 3)
    rand = TwinRandomizer(twin, load_randomization("hard"))
    draw = rand.new_draw(np.random.default_rng(1))
    changed = {k for k, v in _model_arrays(twin).items() if not np.array_equal(v, nominal[k])}
    for name in ("cam_pos", "cam_quat", "cam_fovy", "light_dir", "mat_rgba", "actuator_gainprm", "dof_damping",
                 "dof_frictionloss", "body_mass", "geom_size", "geom_friction"):
        assert name in changed, name
    image1, state1 = _rollout(twin, 3)
    assert np.abs(image1.astype(int) - image0).mean() > 2.0
    assert not np.array_equal(state1, state0)
    cube_half = twin.model.geom_size[twin.model.geom("cube_geom").id, 2]
    assert cube_half == pytest.approx(0.015 * draw.cube_size)
    twin.reset(np.random.default_rng(3))
    assert twin.cube_position()[2] == pytest.approx(cube_half)  # a resized cube rests on the table
    rand.new_draw(np.random.default_rng(2))
    rand.restore()
    after = _model_arrays(twin)
    for k, v in nominal.items():
        np.testing.assert_array_equal(after[k], v, err_msg=k)
    image2, state2 = _rollout(twin, 3)
    np.testing.assert_array_equal(image2, image0)
    np.testing.assert_array_equal(state2, state0)
    fresh.close()
    twin.close()


def test_image_noise_and_blur_are_seeded_per_episode():
    twin = ArmTwin(ARM, "push")
    twin.reset(np.random.default_rng(0))
    clean = twin.render("scene", 48, 48)
    rand = TwinRandomizer(twin, load_randomization({"image_noise_std": [5.0, 5.0], "image_blur_sigma_px": [1.0, 1.0]}))
    rand.new_draw(np.random.default_rng(4))
    a = [twin.render("scene", 48, 48) for _ in range(2)]
    rand.new_draw(np.random.default_rng(4))
    b = [twin.render("scene", 48, 48) for _ in range(2)]
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], a[1])  # fresh noise every frame
    assert 2.0 < np.abs(a[0].astype(int) - clean).mean() < 20.0
    twin.close()


def test_latency_delays_a_command_by_the_drawn_ticks():
    twin = ArmTwin(ARM, "reach")
    twin.reset(np.random.default_rng(0))
    rand = TwinRandomizer(twin, load_randomization({"latency_ticks": [2, 2]}))
    assert rand.new_draw(np.random.default_rng(0)).latency_ticks == 2
    twin.reset(np.random.default_rng(0))
    home = twin.targets()
    goals = [ARM.home + 0.01 * (k + 1) for k in range(4)]
    applied = []
    for q in goals:
        twin.set_targets(q)
        applied.append(twin.targets())
    np.testing.assert_array_equal(applied[0], home)
    np.testing.assert_array_equal(applied[1], home)
    np.testing.assert_array_equal(applied[2], goals[0])
    np.testing.assert_array_equal(applied[3], goals[1])
    twin.set_targets_now(goals[3])  # a stop does not wait behind the commands in flight
    np.testing.assert_array_equal(twin.targets(), goals[3])
    twin.set_targets(goals[0])
    np.testing.assert_array_equal(twin.targets(), goals[3])
    rand.restore()
    twin.set_targets(goals[1])
    np.testing.assert_array_equal(twin.targets(), goals[1])
    twin.close()


# ------------------------------------------------------------------ through the env factory
def _steps(env, seed: int, n: int = 4) -> list[np.ndarray]:
    obs, _ = env.reset(seed=seed)
    out = [obs["pixels"].copy()]
    for k in range(n):
        obs, *_ = env.step(np.array([0.5, -0.3, 0.2, 1.0 - 0.5 * k], np.float32))
        out.append(np.concatenate([obs["state"], obs["pixels"].ravel()]))
    return out


def test_make_env_randomizes_at_every_reset_and_off_is_the_plain_twin():
    env = make_env("push", randomize="mild", obs_mode="both", image_size=48, frame_stack=0)
    robot = env.unwrapped.robot
    plain = make_env("push", obs_mode="both", image_size=48, frame_stack=0)
    _steps(env, 5)
    d1 = robot.randomizer.draw
    # the scene (the goal) is sampled as without randomization: the draw comes from a child generator
    plain.reset(seed=5)
    np.testing.assert_array_equal(robot.twin.target_position(), plain.unwrapped.robot.twin.target_position())
    env.reset()
    assert robot.randomizer.draw.camera_pos_m.tolist() != d1.camera_pos_m.tolist()
    env.reset(seed=5)
    np.testing.assert_array_equal(robot.randomizer.draw.camera_pos_m, d1.camera_pos_m)
    robot.set_randomization(None)
    for a, b in zip(_steps(env, 9), _steps(plain, 9)):
        np.testing.assert_array_equal(a, b)
    env.close()
    plain.close()


def test_a_robot_that_cannot_randomize_refuses_the_option():
    from se_robot.envs.arm_env import ArmEnv
    from se_robot.sim.twin_robot import TwinRobot

    class FixedRobot(TwinRobot):  # a robot without the twin's randomization, as the serial arm
        set_randomization = None

    with pytest.raises(ValueError, match="domain randomization is for the sim twin"):
        ArmEnv(FixedRobot(), "reach", randomize="mild")


def test_a_wrong_randomize_option_stops_at_make_env():
    with pytest.raises(ConfigError, match="no randomization named 'milder'"):
        make_env("reach", randomize="milder")


def test_demos_command_records_with_randomization(tmp_path, capsys):
    from se_robot.cli import main as cli_main
    from se_robot.data.episodes import read_dataset_meta

    out = tmp_path / "demos"
    rc = cli_main(["demos", "--task", "reach", "--episodes", "1", "--out", str(out), "--obs-mode", "state",
                   "--randomize", "mild", "--seed", "2"])
    assert rc == 0, capsys.readouterr()
    assert read_dataset_meta(out).extra["randomize"] == "mild"


def test_train_set_env_randomize_reaches_both_envs():
    from se_robot.train import make_envs
    from se_robot.train_config import load_config

    cfg = load_config(None, {"task": "reach", "obs_mode": "state"}, ["env.randomize=hard"])
    env, eval_env = make_envs(cfg)
    for e in (env, eval_env):
        e.reset(seed=0)
        assert e.unwrapped.robot.randomizer.spec == load_randomization("hard")
        e.close()
