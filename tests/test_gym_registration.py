"""``import se_robot`` registers the sim twin's ids: ``gym.make`` works in a fresh interpreter."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(300)


def _fresh(code: str) -> str:
    """Runs ``code`` in a new interpreter (nothing of se_robot imported before it) and returns stdout."""
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_import_se_robot_registers_the_ids_and_both_checkers_pass():
    out = _fresh(
        "import sys, warnings\n"
        "import gymnasium as gym\n"
        "import se_robot\n"
        "assert 'mujoco' not in sys.modules, 'registering must not load the simulator'\n"
        "from gymnasium.utils.env_checker import check_env\n"
        "from stable_baselines3.common.env_checker import check_env as sb3_check_env\n"
        "for env_id in se_robot.SIM_IDS.values():\n"
        "    assert env_id in gym.registry, env_id\n"
        "env = gym.make('se_robot/SimLift-v0', obs_mode='both', image_size=32)\n"
        "with warnings.catch_warnings():\n"
        "    warnings.simplefilter('ignore')\n"
        "    check_env(env.unwrapped, skip_render_check=True)\n"
        "    sb3_check_env(env.unwrapped, warn=False)\n"
        "obs, info = env.reset(seed=0)\n"
        "print('steps', env.spec.max_episode_steps, sorted(obs))\n")
    assert "steps" in out and "'pixels', 'state'" in out


def test_gymnasium_module_syntax_imports_se_robot_itself():
    """``gym.make("se_robot:se_robot/SimReach-v0")``: Gymnasium imports the package, which registers."""
    out = _fresh("import gymnasium as gym\n"
                 "env = gym.make('se_robot:se_robot/SimReach-v0', obs_mode='state')\n"
                 "obs, _ = env.reset(seed=1)\n"
                 "print(env.spec.id, obs['state'].shape)\n")
    assert out.startswith("se_robot/SimReach-v0")


def test_registration_is_idempotent():
    import gymnasium as gym

    import se_robot

    spec = gym.spec("se_robot/SimPush-v0")
    se_robot.register_envs()
    assert gym.spec("se_robot/SimPush-v0") is spec
