"""Environments: the tasks on any robot behind one Gymnasium env (``ArmEnv``) and one factory.

``import se_robot`` registers ``se_robot/SimReach-v0``, ``se_robot/SimPush-v0`` and
``se_robot/SimLift-v0`` (``ArmEnv`` over ``TwinRobot``; ``se_robot.SIM_IDS``). Everything else
builds its env with ``make_env``, so wrappers are composed in one place whatever the backend,
a Gymnasium env of another package (``env_id``, ``se_robot.envs.foreign``) included.
"""

from __future__ import annotations

import dataclasses
from importlib.metadata import entry_points
from typing import Any, Callable

import gymnasium as gym

from se_robot import SIM_IDS
from se_robot.envs.spaces import EnvConfig

#: options ``ArmEnv`` itself takes, besides the ``EnvConfig`` fields; the rest go to the robot
ENV_OPTIONS = frozenset(f.name for f in dataclasses.fields(EnvConfig)) | {
    "render_mode", "render_size", "detector", "home_tolerance_rad", "home_timeout_s", "frame_timeout_s",
    "object_timeout_s", "max_episode_steps", "operator", "scene_timeout_s", "scene_tries"}


ROBOT_ENTRY_POINTS = "se_robot.robots"


def robot_backend(name: str) -> Callable[..., Any]:
    """The robot factory a backend name stands for, besides the built-in ``sim`` and ``hardware``.

    Backends above this layer (``ros``: ``se_robot.nodes.ros_robot.make_ros_robot``) and robots
    of other packages are found through the ``se_robot.robots`` entry points, so an env can run on
    them without this package importing them: ``factory(arm, **robot_options) -> Robot``.
    """
    points = {ep.name: ep for ep in entry_points(group=ROBOT_ENTRY_POINTS)}
    if name not in points:
        allowed = ", ".join(["sim", "hardware", *sorted(points)])
        raise ValueError(f"unknown backend {name!r}; allowed: {allowed}")
    try:
        return points[name].load()
    except ImportError as e:
        hint = " (install the ROS 2 extra: pip install 'se_robot[ros]', or source a ROS 2 setup)" if name == "ros" else ""
        raise ImportError(f"backend {name!r} ({points[name].value}) cannot be imported: {e}{hint}") from e


def make_env(task: str = "reach", backend: str = "sim", frame_stack: int = 1, action_repeat: int = 1,
             seed: int | None = None, encoder: str = "", encoder_device: Any = "cpu", arm: str = "so101",
             reward_model: Any = "", reward_threshold: float | None = None, env_id: str = "",
             **options: Any) -> gym.Env:
    """One place where an env is built and wrapped, whatever the backend.

    ``env_id``: a Gymnasium env of another package instead of a task (``task``, ``backend`` and
    ``arm`` are then unused): ``gym.make(env_id, **options)`` through
    ``se_robot.envs.foreign.ForeignEnv`` (``obs_mode``, ``image_size`` and ``render_mode`` are its
    options; the rest go to the env), then the wrappers below as for any task.

    ``backend``: ``sim`` (the MuJoCo twin in-process), ``hardware`` (``SerialRobot``: ``port=``,
    ``calibration=`` or ``arm_id=`` (the id whose calibration ``se-robot calibrate`` stored; default
    the arm's name), ``scene_camera=`` / ``wrist_camera=`` as a name in config/cameras, a YAML
    path or an ``OpenCVCamera``, ``camera_source=`` overriding the scene camera's source,
    ``watchdog=``; the detector defaults to the scene camera YAML's ``detector`` section) or
    ``ros`` (the robot behind arm_node/sim_node topics; its options go to
    ``se_robot.nodes.ros_robot.make_ros_robot``), or any other name registered as a
    ``se_robot.robots`` entry point (``robot_backend``). Options named in ``ENV_OPTIONS`` go to ``ArmEnv``
    (``operator=``: who restores push/lift scenes on a robot that cannot, ``se_robot.envs.operator``;
    ``randomize=``: domain randomization of the twin, a preset or YAML path drawn anew at every reset,
    ``se_robot.sim.randomize``; refused on a robot that cannot randomize itself).

    ``reward_model``: a success classifier file (``se-robot reward train``) or loaded model whose
    sparse reward replaces the task's (``LearnedRewardWrapper`` right over the env: the episode
    ends on the first tick at ``reward_threshold``, default the model's own). Without one, the
    task's reward from the robot's objects or the colour detector. Reach from pixels on a robot
    that cannot see a target (the real arm: its target is virtual) is refused unless one is given.

    Wrappers: ``ActionRepeat`` when ``action_repeat > 1``; ``PixelFrameStack(frame_stack)``
    whenever the observation has pixels (so agents always see channel-first stacks), except with
    ``frame_stack=0``: the env's own H x W x 3 frames, which is what recorded episodes store;
    ``encoder``: a frozen pixel encoder file whose features replace the stack
    (``se_robot.envs.encoder_features``), run on ``encoder_device``.
    """
    from se_robot.envs.wrappers import ActionRepeat, PixelFrameStack

    if env_id:
        env = _foreign(env_id, backend, reward_model, options)
    else:
        env = _task_env(task, backend, arm, options, learned_reward=bool(reward_model))
        env = _with_reward(env, task, backend, reward_model, reward_threshold)
    if action_repeat > 1:
        env = ActionRepeat(env, action_repeat)
    if frame_stack < 0:
        raise ValueError(f"frame_stack must be >= 0 (0: no stacking, raw frames), got {frame_stack}")
    if frame_stack > 0 and "pixels" in env.observation_space.spaces:
        env = PixelFrameStack(env, frame_stack)
    if encoder:
        from se_robot.envs.encoder_features import wrap_with_encoder

        env = wrap_with_encoder(env, encoder, encoder_device)
    if seed is not None:
        env.action_space.seed(seed)
    return env


def _foreign(env_id: str, backend: str, reward_model: Any, options: dict[str, Any]) -> gym.Env:
    """A Gymnasium env of another package, with se_robot's observation keys and action range."""
    from se_robot.envs.foreign import make_foreign_env

    if backend != "sim":
        raise ValueError(f"env_id {env_id!r} runs in this process: backend {backend!r} is for the arm's tasks")
    if reward_model:
        raise ValueError("a learned reward (reward_model) judges the arm's camera frames, not another env's")
    return make_foreign_env(env_id, **options)


def _task_env(task: str, backend: str, arm: str, options: dict[str, Any], learned_reward: bool = False) -> gym.Env:
    """``ArmEnv`` for ``task`` on the robot ``backend`` names (``make_env``'s docstring);
    ``learned_reward``: a success classifier gives the reward (ArmEnv then needs no visible target)."""
    env_opts = {k: v for k, v in options.items() if k in ENV_OPTIONS}
    robot_opts = {k: v for k, v in options.items() if k not in ENV_OPTIONS}
    control_hz = float(env_opts.get("control_hz", EnvConfig.control_hz))
    if backend == "sim":
        if task not in SIM_IDS:
            raise ValueError(f"unknown task {task!r}; allowed: {', '.join(SIM_IDS)}")
        if robot_opts:
            raise TypeError(f"backend 'sim' takes no robot options: {', '.join(sorted(robot_opts))}")
        return gym.make(SIM_IDS[task], arm=arm, **env_opts)
    if backend == "hardware":
        from se_robot.envs.arm_env import make_arm_env
        from se_robot.envs.detector import make_detector
        from se_robot.hardware.serial_robot import make_serial_robot

        robot, camera_yaml = make_serial_robot(arm, control_hz=control_hz, **robot_opts)
        env_opts["detector"] = make_detector(env_opts.get("detector"), camera_yaml)
        return make_arm_env(robot, task, learned_reward=learned_reward, **env_opts)
    from se_robot.envs.arm_env import make_arm_env

    make_robot = robot_backend(backend)
    # a robot with one image topic (ROS) answers to the camera name the env reads pixels from
    robot_opts.setdefault("camera", env_opts.get("camera", EnvConfig.camera))
    return make_arm_env(make_robot(arm, **robot_opts), task, learned_reward=learned_reward, **env_opts)


def _with_reward(env: gym.Env, task: str, backend: str, reward_model: Any, threshold: float | None) -> gym.Env:
    """The learned success classifier over the env's raw frames, or the task's own reward (ArmEnv
    refuses pixel reach where the target is virtual and no classifier gives the reward)."""
    has_pixels = "pixels" in env.observation_space.spaces
    if not reward_model:
        return env
    if not has_pixels:
        raise ValueError("a learned reward (reward_model) judges camera frames: use obs_mode pixels or both")
    from se_robot.envs.reward_wrapper import LearnedRewardWrapper

    if isinstance(reward_model, (str, bytes)) or hasattr(reward_model, "__fspath__"):
        from se_robot.data.reward_model import load_reward_model

        reward_model = load_reward_model(reward_model)
    return LearnedRewardWrapper(env, reward_model, threshold, layout="raw",
                                terminate_on_success=True)
