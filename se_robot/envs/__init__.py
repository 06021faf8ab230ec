"""Environments: the tasks on the sim twin, the real arm and over ROS, behind one Gymnasium API.

Importing this package registers ``se_robot/SimReach-v0``, ``se_robot/SimPush-v0`` and
``se_robot/SimLift-v0``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from se_robot.config import config_path, read_yaml

SIM_IDS = {"reach": "se_robot/SimReach-v0", "push": "se_robot/SimPush-v0", "lift": "se_robot/SimLift-v0"}


def _register() -> None:
    for task, env_id in SIM_IDS.items():
        if env_id in gym.registry:
            continue
        steps = read_yaml(config_path("tasks", f"{task}.yaml")).get("max_episode_steps", 100)
        gym.register(env_id, entry_point="se_robot.envs.sim_env:SimArmEnv",
                     kwargs={"task": task}, max_episode_steps=steps, disable_env_checker=True)


_register()


def make_env(task: str = "reach", backend: str = "sim", frame_stack: int = 1, action_repeat: int = 1,
             seed: int | None = None, encoder: str = "", encoder_device: Any = "cpu", **options: Any) -> gym.Env:
    """One place where an env is built and wrapped, whatever the backend.

    ``backend``: ``sim`` (MuJoCo twin), ``hardware`` (SerialArm + OpenCV camera; see
    ``make_hardware_env`` for ``port=``, ``scene_camera=``, ``camera_source=``) or ``ros`` (topics
    of arm_node/sim_node; see ``make_ros_env``). ``encoder``: a frozen pixel encoder file whose
    features replace the frame stack (``se_robot.envs.encoder_features``), run on
    ``encoder_device``. Options are those of ``EnvConfig``.
    """
    from se_robot.envs.wrappers import ActionRepeat, PixelFrameStack

    if backend == "sim":
        if task not in SIM_IDS:
            raise ValueError(f"unknown task {task!r}; allowed: {', '.join(SIM_IDS)}")
        env = gym.make(SIM_IDS[task], **options)
    elif backend == "hardware":
        from se_robot.envs.hardware_env import make_hardware_env

        env = make_hardware_env(task, **options)
    elif backend == "ros":
        from se_robot.nodes.ros_arm_env import make_ros_env

        env = make_ros_env(task, **options)
    else:
        raise ValueError(f"unknown backend {backend!r}; allowed: sim, hardware, ros")
    if action_repeat > 1:
        env = ActionRepeat(env, action_repeat)
    if frame_stack > 1 or options.get("obs_mode", "state") != "state":
        if options.get("obs_mode", "state") != "state":
            env = PixelFrameStack(env, frame_stack)
    if encoder:
        from se_robot.envs.encoder_features import wrap_with_encoder

        env = wrap_with_encoder(env, encoder, encoder_device)
    if seed is not None:
        env.action_space.seed(seed)
    return env
