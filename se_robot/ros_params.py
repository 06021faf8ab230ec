"""ROS parameters from the same config dataclasses the rest of se_robot loads from YAML.

A node's parameters are the fields of one flat dataclass (``option(range=, choices=, help=)``), so
the descriptor a node declares (type, range, description) and the check that rejects a bad
``ros2 param set`` both come from the field metadata that already validates YAML. This module is
pure (no rclpy): ``se_robot.nodes.params`` turns :class:`ParamSpec` into rclpy descriptors, and
the static launch test reads the same specs to check a parameters file without starting ROS.

The node configuration dataclasses live here too, together with the topic and service names the
hardware nodes and the sim twin share: launch files swap one for the other with ``use_sim`` only
because both sides read these names.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Literal

from se_robot.config import ConfigError, _check_meta, _convert, from_dict, option

# ------------------------------------------------------------------------------------------------
# Names shared by arm_node, camera_node and sim_node (relative: they follow the launch namespace).
# ------------------------------------------------------------------------------------------------
JOINT_STATES = "joint_states"                  # sensor_msgs/JointState, arm.joint_names order
JOINT_COMMANDS = "arm/joint_commands"          # std_msgs/Float64MultiArray, forward-command style
JOINT_TRAJECTORY = "arm/joint_trajectory"      # trajectory_msgs/JointTrajectory
ESTOP_STATE = "arm/estopped"                   # std_msgs/Bool, transient local (latched)
ESTOP_SERVICE = "arm/estop"                    # std_srvs/Trigger: latch the e-stop
SCENE_REQUEST = "scene/request"                # std_msgs/String, transient local: what the operator is asked to do
SCENE_RESTORED_SERVICE = "scene/restored"      # std_srvs/Trigger: the operator put the scene back
SCENE_ABORT_SERVICE = "scene/abort"            # std_srvs/Trigger: the operator cannot; the env stops
RESET_SERVICE = "arm/reset"                    # std_srvs/Trigger: clear the e-stop latch
ACTOR_CONTINUE_SERVICE = "actor/continue"      # std_srvs/Trigger: a paused actor goes on (its e-stop reset)
HOME_SERVICE = "arm/home"                      # std_srvs/Trigger: drive to arm.home, verify
HOME_NOT_ACTIVE = "arm is not active"          # how HOME_SERVICE's answer starts before activation
IMAGE = "camera/image_raw"                     # sensor_msgs/Image rgb8, stamped at capture
CAMERA_INFO = "camera/camera_info"             # sensor_msgs/CameraInfo, same stamp
TASK_STATE = "sim/task_state"                  # geometry_msgs/PoseArray [target, object] (twin only)
TASK_RESET_SERVICE = "sim/reset_task"          # std_srvs/Trigger: resample object/target (twin only)
DIAGNOSTICS = "/diagnostics"                   # diagnostic_msgs/DiagnosticArray
TRANSITIONS = "learner/transitions"            # std_msgs/UInt8MultiArray chunks (se_robot.nodes.wire)
WEIGHTS = "learner/policy_weights"             # std_msgs/UInt8MultiArray chunks (se_robot.nodes.wire)
METRICS = "learner/metrics"                    # std_msgs/String, one JSON dict of flat metrics


# ------------------------------------------------------------------------------------------------
# Parameter specs
# ------------------------------------------------------------------------------------------------
ParamType = Literal["bool", "int", "float", "str", "bool_array", "int_array", "float_array", "str_array"]


@dataclass(frozen=True)
class ParamSpec:
    """What a node declares for one field: the rclpy side maps ``type`` to a ParameterType."""

    name: str
    type: ParamType
    default: Any
    description: str
    range: tuple[float | None, float | None] | None = None
    choices: tuple | None = None
    read_only: bool = False

    @property
    def additional_constraints(self) -> str:
        """Human-readable constraint text shown by ``ros2 param describe``."""
        parts = []
        if self.choices:
            parts.append(f"one of: {', '.join(map(str, self.choices))}")
        if self.range and (self.range[0] is None or self.range[1] is None):
            parts.append(f"range [{self.range[0]}, {self.range[1]}]")
        return "; ".join(parts)


_SCALARS = {bool: "bool", int: "int", float: "float", str: "str"}


def _param_type(tp: Any, where: str) -> ParamType:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp in _SCALARS:
        return _SCALARS[tp]  # type: ignore[return-value]
    if origin is Literal:
        kinds = {type(a) for a in args}
        if len(kinds) == 1 and kinds.pop() in _SCALARS:
            return _SCALARS[type(args[0])]  # type: ignore[return-value]
    if origin in (list, tuple) and args:
        items = {a for a in args if a is not Ellipsis}
        if len(items) == 1:
            item = items.pop()
            if item in _SCALARS:
                return f"{_SCALARS[item]}_array"  # type: ignore[return-value]
    raise TypeError(f"{where}: type {tp} has no ROS parameter form (use bool/int/float/str, "
                    "a Literal of one of them, or a list/tuple of one of them)")


def parameter_specs(cls: type) -> list[ParamSpec]:
    """One :class:`ParamSpec` per field of the flat dataclass ``cls`` (defaults required)."""
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        where = f"{cls.__name__}.{f.name}"
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            raise TypeError(f"{where}: a ROS parameter needs a default")
        ptype = _param_type(hints[f.name], where)
        choices = f.metadata.get("choices")
        if choices is None and typing.get_origin(hints[f.name]) is Literal:
            choices = typing.get_args(hints[f.name])
        specs.append(ParamSpec(
            name=f.name, type=ptype, default=list(default) if isinstance(default, tuple) else default,
            description=f.metadata.get("help", ""), range=f.metadata.get("range"),
            choices=tuple(choices) if choices else None,
            read_only=bool(f.metadata.get("read_only", False))))
    return specs


def check_value(cls: type, name: str, value: Any) -> str | None:
    """Why ``value`` is not acceptable for field ``name`` of ``cls``, or None when it is."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        return f"{name}: not a parameter of {cls.__name__}; parameters: {', '.join(sorted(fields))}"
    hints = typing.get_type_hints(cls)
    if isinstance(value, list) and typing.get_origin(hints[name]) is tuple:
        value = tuple(value)
    try:
        converted = _convert(value, hints[name], cls.__name__, name)
        _check_meta(converted, fields[name], cls.__name__, name)
    except ConfigError as e:
        return str(e)
    return None


def owner_of(classes: tuple[type, ...], name: str) -> type | None:
    """Which of a node's dataclasses declares parameter ``name``."""
    for cls in classes:
        if any(f.name == name for f in dataclasses.fields(cls)):
            return cls
    return None


def all_names(classes: tuple[type, ...]) -> list[str]:
    return sorted(f.name for cls in classes for f in dataclasses.fields(cls))


def config_from_params(cls: type, values: dict[str, Any], source: str = "<ros parameters>") -> Any:
    """Build ``cls`` from parameter values (arrays arrive as lists) with the usual validation."""
    hints = typing.get_type_hints(cls)
    data = {k: tuple(v) if isinstance(v, list) and typing.get_origin(hints.get(k)) is tuple else v
            for k, v in values.items()}
    return from_dict(cls, data, source)


def check_parameters_file(data: dict, node_specs: dict[str, tuple[type, ...]], source: str) -> list[str]:
    """Problems with a ``config/ros/*.yaml`` mapping: unknown nodes, unknown keys, bad values.

    ``node_specs`` maps a node name (the YAML's top-level key) to its config dataclasses.
    Returns readable problems; an empty list means the file is good.
    """
    problems = []
    for node_name, block in data.items():
        if not isinstance(block, dict) or set(block) != {"ros__parameters"}:
            problems.append(f"{source}: {node_name}: expected exactly one key 'ros__parameters'")
            continue
        classes = node_specs.get(node_name.strip("/"))
        if classes is None:
            problems.append(f"{source}: {node_name}: no node of that name; known: {sorted(node_specs)}")
            continue
        params = block["ros__parameters"] or {}
        for key, value in params.items():
            owner = owner_of(classes, key)
            reason = (check_value(owner, key, value) if owner else
                      f"{key}: not a parameter of {node_name}; parameters: {', '.join(all_names(classes))}")
            if reason:
                problems.append(f"{source}: {node_name}.ros__parameters.{reason}")
    return problems


# ------------------------------------------------------------------------------------------------
# Node configurations (one flat dataclass per node)
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CameraParams:
    """camera_node; sim_node declares the same names for its rendered camera."""

    camera_source: str = option("0", help="OpenCV source: device index, file, or http(s)/rtsp URL")
    camera_rate_hz: float = option(30.0, help="image publish rate (Hz)", range=(0.5, 240.0))
    image_width: int = option(640, help="published image width (px)", range=(16, 4096))
    image_height: int = option(480, help="published image height (px)", range=(16, 4096))
    camera_frame_id: str = option("camera_optical_frame", help="frame_id of Image and CameraInfo")
    horizontal_fov_deg: float = option(60.0, help="for the pinhole CameraInfo (deg)", range=(1.0, 179.0))


@dataclass(frozen=True)
class ArmParams:
    """arm_node; sim_node declares the same names for the twin."""

    arm: str = option("so101", help="arm description name (config/arms/NAME.yaml) or a YAML path")
    port: str = option("/dev/ttyUSB0", help="serial port of the servo bus")
    arm_id: str = option("", help="this arm's id, whose calibration `se-robot calibrate --arm-id` stored in the "
                                  "user's data directory; empty: the arm's name (so101)")
    calibration: str = option("", help="calibration YAML path; empty: the one stored for arm_id. Without either, "
                                       "configure fails naming the `se-robot calibrate` command to run")
    bus_timeout_s: float = option(0.05, help="wait for a servo's reply before a retry (s)", range=(0.001, 2.0))
    bus_retries: int = option(3, help="retries of a bus transaction before the e-stop latches", range=(0, 20))
    state_rate_hz: float = option(100.0, help="joint state publish and control loop rate (Hz)",
                                  range=(1.0, 1000.0))
    rt_priority: int = option(0, help="SCHED_FIFO priority of the control loop thread, as ros2_control's "
                                      "thread_priority (0: normal scheduling). Needs an rtprio limit or "
                                      "CAP_SYS_NICE; without, a warning and normal scheduling", range=(0, 99))
    command_timeout_s: float = option(0.25, help="watchdog: hold when no command for this long (s)",
                                      range=(0.01, 10.0))
    home_speed_rad_s: float = option(0.5, help="joint speed of the ~/home move (rad/s)", range=(0.01, 3.0))
    home_tolerance_rad: float = option(0.05, help="home succeeds when every joint is this close (rad)",
                                       range=(0.001, 0.5))
    diagnostics_period_s: float = option(1.0, help="period of /diagnostics (s)", range=(0.05, 60.0))
    joint_frame_id: str = option("base_link", help="frame_id of the JointState header")
    autostart: bool = option(False, help="configure and activate at start (torque on!)")


@dataclass(frozen=True)
class SimParams:
    """sim_node: the MuJoCo twin behind the topics and parameters of arm_node and camera_node."""

    # the arm side (names as ArmParams)
    arm: str = option("so101", help="arm description name (config/arms/NAME.yaml) or a YAML path")
    bus_timeout_s: float = option(0.05, help="unused by the twin (no bus); accepted so launch files can swap nodes",
                                  range=(0.001, 2.0))
    bus_retries: int = option(3, help="unused by the twin (no bus); accepted so launch files can swap nodes",
                              range=(0, 20))
    state_rate_hz: float = option(100.0, help="physics, control and joint state rate (Hz)", range=(1.0, 1000.0))
    rt_priority: int = option(0, help="SCHED_FIFO priority of the physics and control thread (0: normal "
                                      "scheduling); as arm_node's", range=(0, 99))
    command_timeout_s: float = option(0.25, help="watchdog: hold when no command for this long (s)",
                                      range=(0.01, 10.0))
    home_speed_rad_s: float = option(1.0, help="joint speed of the ~/home move (rad/s)", range=(0.01, 3.0))
    home_tolerance_rad: float = option(0.05, help="home succeeds when every joint is this close (rad)",
                                       range=(0.001, 0.5))
    diagnostics_period_s: float = option(1.0, help="period of /diagnostics (s)", range=(0.05, 60.0))
    joint_frame_id: str = option("base_link", help="frame_id of the JointState header")
    autostart: bool = option(True, help="configure and activate at start")
    # the camera side (names as CameraParams)
    camera_rate_hz: float = option(30.0, help="rendered image rate (Hz); 0 disables", range=(0.0, 240.0))
    image_width: int = option(84, help="rendered image width (px)", range=(16, 4096))
    image_height: int = option(84, help="rendered image height (px)", range=(16, 4096))
    camera_frame_id: str = option("camera_optical_frame", help="frame_id of Image and CameraInfo")
    horizontal_fov_deg: float = option(60.0, help="for the pinhole CameraInfo (deg)", range=(1.0, 179.0))
    # the twin
    task: str = option("reach", help="task of the scene", choices=("reach", "push", "lift"))
    camera: str = option("scene", help="which MJCF camera is published", choices=("scene", "wrist"))
    seed: int = option(0, help="seed of the task sampler (reset_task uses seed, seed+1, ...)",
                       range=(0, 2**31 - 1))
    real_time_factor: float = option(1.0, help="sim seconds per wall second", range=(0.05, 20.0))


@dataclass(frozen=True)
class EnvParams:
    """The env learner_node and actor_node step (``se_robot.envs.make_env``; over ROS: ``RosRobot``)."""

    task: str = option("reach", help="task", choices=("reach", "push", "lift"))
    arm: str = option("so101", help="arm description name or YAML path")
    obs_mode: str = option("state", help="observation", choices=("state", "pixels", "both"))
    action_mode: str = option("ee_delta", help="action space", choices=("ee_delta", "joint_delta"))
    image_size: int = option(84, help="square image side given to the agent (px)", range=(16, 512))
    control_hz: float = option(10.0, help="control rate of the env (Hz)", range=(1.0, 200.0))
    max_episode_steps: int = option(100, help="truncate after this many steps", range=(1, 100_000))
    stale_timeout_s: float = option(0.5, help="give up waiting for a fresh joint or task state after (s)",
                                    range=(0.01, 10.0))
    env_backend: str = option("ros", help="ros: the topics of sim_node/arm_node; hardware: the serial arm "
                              "wired to this computer (its port, camera and scene operator as env.* in "
                              "train_overrides, as se-robot train --backend hardware); sim: the twin in this "
                              "process (no robot, for tests)", choices=("ros", "hardware", "sim"))


@dataclass(frozen=True)
class LearnerParams:
    """learner_node: trains from transitions (local: its own env; split: actor_node's)."""

    mode: str = option("local", help="local: act and learn here; split: learn from actor_node",
                       choices=("local", "split"))
    algo: str = option("sac", help="agent (any --algo of se-robot train)")
    train_config: str = option("", help="training recipe, a name in config/recipes/ or a YAML path (empty: the defaults)")
    train_overrides: str = option("", help="space-separated key=value overrides of the training "
                                  "config, as se-robot train --set (e.g. 'replay.capacity=50000')")
    learning_starts: int = option(1000, help="transitions before the first update", range=(1, 10**9))
    checkpoint_period_steps: int = option(5000, help="checkpoint every N learner steps", range=(1, 10**9))
    total_steps: int = option(10_000, help="environment steps to train for", range=(1, 10**9))
    weights_period_steps: int = option(200, help="publish policy weights every N learner steps",
                                       range=(1, 10**7))
    updates_per_transition: float = option(1.0, help="split: agent updates per transition taken in (the local "
                                           "loop's one per env step); the learner updates while data arrives "
                                           "and never runs ahead of this ratio", range=(0.01, 100.0))
    max_actors: int = option(16, help="split: actors assembled at once (the least recently heard is dropped)",
                             range=(1, 4096))
    max_bytes_in_flight: int = option(256 * 1024 * 1024, help="split: bytes of partial messages held while "
                                      "reassembling (oldest dropped first)", range=(1 << 16, 1 << 34))
    max_partial_age_s: float = option(30.0, help="split: a partial message older than this is dropped (s)",
                                      range=(0.1, 3600.0))
    checkpoint_dir: str = option("runs/ros", help="where checkpoints and logs go")
    seed: int = option(0, help="seed", range=(0, 2**31 - 1))
    chunk_bytes: int = option(256 * 1024, help="largest message chunk on the wire (bytes)",
                              range=(1024, 64 * 1024 * 1024))


@dataclass(frozen=True)
class ActorParams:
    """actor_node: runs the policy on the robot computer and ships transitions to the learner."""

    algo: str = option("sac", help="agent (must match the learner's)")
    train_config: str = option("", help="training recipe, as the learner's (empty: the defaults); frame stack and "
                               "action repeat must match the learner's")
    train_overrides: str = option("", help="space-separated key=value overrides, as the learner's")
    episodes: int = option(0, help="episodes to run; 0: until shut down", range=(0, 10**7))
    eval_period_steps: int = option(0, help="evaluate the acting policy greedily (eval/* on actor/metrics; never "
                                    "sent to replay) after an episode once its weights are from a learner step "
                                    "past the next multiple of N; 0: never", range=(0, 10**9))
    max_rate_hz: float = option(0.0, help="env_backend sim: at most this many steps per wall second (a robot's "
                                "env paces itself at control_hz); 0: as fast as the twin runs", range=(0.0, 10_000.0))
    eval_episodes: int = option(10, help="episodes per evaluation (start states seeded as the local loop's)",
                                range=(1, 10**4))
    batch_transitions: int = option(32, help="transitions per message batch", range=(1, 100_000))
    max_learner_backlog: int = option(0, help="before each episode, wait (the arm at home) while the learner owes "
                                      "more than this many updates (learner/updates_owed on learner/metrics): "
                                      "no arm time spent acting with a policy the learner has not caught up "
                                      "with; 0: never wait", range=(0, 10**9))
    seed: int = option(0, help="seed", range=(0, 2**31 - 1))
    chunk_bytes: int = option(256 * 1024, help="largest message chunk on the wire (bytes)",
                              range=(1024, 64 * 1024 * 1024))


@dataclass(frozen=True)
class TeleopParams:
    """teleop_node: a teleoperation device publishing joint commands."""

    device: str = option("keyboard", help="teleop device", choices=("keyboard", "gamepad", "spacemouse", "leader"))
    device_path: str = option("", help="evdev node (gamepad, spacemouse), serial port (leader) or tty (keyboard)")
    arm: str = option("so101", help="arm description name or YAML path")
    leader_arm_id: str = option("", help="leader: the leader arm's id, whose calibration `se-robot calibrate "
                                         "--arm-id` stored; empty: <arm>_leader (never the follower's)")
    rate_hz: float = option(30.0, help="command rate (Hz)", range=(1.0, 500.0))
    speed: float = option(0.5, help="device deflection scale", range=(0.01, 1.0))
    ee_step_m: float = option(0.01, help="gripper move per tick at full deflection (m)", range=(1e-4, 0.05))


#: node name -> the parameter dataclasses it declares (names never collide between them).
NODE_PARAMS: dict[str, tuple[type, ...]] = {
    "camera_node": (CameraParams,),
    "arm_node": (ArmParams,),
    "sim_node": (SimParams,),
    "learner_node": (LearnerParams, EnvParams),
    "actor_node": (ActorParams, EnvParams),
    "teleop_node": (TeleopParams,),
}
