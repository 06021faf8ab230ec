"""se_robot: sample-efficient reinforcement learning for real robot arms, with a MuJoCo twin.

Importing the package registers the sim twin's tasks with Gymnasium, so
``import se_robot; gym.make("se_robot/SimLift-v0")`` works in a fresh interpreter (as does
``gym.make("se_robot:se_robot/SimLift-v0")`` without the import). Only the ids are registered
here: the entry point is a string, so MuJoCo and the env layer load when an env is made.
"""

from __future__ import annotations

__version__ = "0.1.0"

#: Gymnasium ids of the sim twin's tasks (``ArmEnv`` over ``TwinRobot``), by task name
SIM_IDS = {"reach": "se_robot/SimReach-v0", "push": "se_robot/SimPush-v0", "lift": "se_robot/SimLift-v0"}


def register_envs() -> None:
    """Registers :data:`SIM_IDS` (once; later calls and re-imports leave the registry alone).

    Each id's ``max_episode_steps`` is its task YAML's, so ``gym.make`` adds the same time limit
    as ``se_robot.envs.make_env``.
    """
    import gymnasium as gym

    from se_robot.config import config_path, read_yaml

    for task, env_id in SIM_IDS.items():
        if env_id in gym.registry:
            continue
        steps = read_yaml(config_path("tasks", f"{task}.yaml")).get("max_episode_steps", 100)
        gym.register(env_id, entry_point="se_robot.envs.arm_env:make_twin_env",
                     kwargs={"task": task}, max_episode_steps=steps, disable_env_checker=True)


register_envs()
