"""Export an episode dataset as a rosbag2 MCAP bag that ``ros2 bag`` and Foxglove open.

Written with ``rosbags`` (pure Python, no ROS install needed) and its Kilted type store; rclpy's
CDR bytes are not used because rosbags rejects their padding. Topics::

    /camera/<name>/image_raw   sensor_msgs/msg/Image          rgb8, one per camera per step
    /joint_states              sensor_msgs/msg/JointState      positions (and velocities) from state
    /observation/state         std_msgs/msg/Float64MultiArray  the proprioceptive state vector
    /observation/task          std_msgs/msg/Float64MultiArray  the task features (obs_mode state)
    /action                    std_msgs/msg/Float64MultiArray  the command taken after each observation
    /reward                    std_msgs/msg/Float32
    /intervention              std_msgs/msg/Bool               True where a human drove

Timestamps: episodes recorded on hardware carry wall-clock seconds and are kept; episodes from the
twin start at 0 s, so they are laid end to end from the dataset's creation time with a one second
gap, keeping their own spacing. Header stamps equal the bag's log time.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from se_robot.data.episodes import Episode, iter_episodes, read_dataset_meta

WALL_CLOCK_MIN_S = 1e9  # timestamps past 2001 are taken as wall-clock seconds
EPISODE_GAP_S = 1.0


def bag_paths(out: str | Path) -> tuple[Path, Path]:
    """(bag directory, .mcap file) for ``--out``: ``x.mcap`` gives directory ``x/`` holding ``x.mcap``."""
    out = Path(out)
    bag_dir = out.with_suffix("") if out.suffix == ".mcap" else out
    return bag_dir, bag_dir / f"{bag_dir.name}.mcap"


def _arm_joint_names(arm_name: str) -> list[str]:
    """Joint names of a known arm; an unknown arm still exports, with generic names."""
    from se_robot.arm import load_arm
    from se_robot.config import ConfigError

    try:
        return load_arm(arm_name).joint_names
    except (ConfigError, FileNotFoundError):
        return []


def _time_msg(ts: Any, t_ns: int) -> Any:
    Time = ts.types["builtin_interfaces/msg/Time"]
    return Time(sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000)


def _float_array(ts: Any, values: np.ndarray, label: str) -> Any:
    Layout = ts.types["std_msgs/msg/MultiArrayLayout"]
    Dim = ts.types["std_msgs/msg/MultiArrayDimension"]
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    layout = Layout(dim=[Dim(label=label, size=len(values), stride=len(values))], data_offset=0)
    return ts.types["std_msgs/msg/Float64MultiArray"](layout=layout, data=values)


def export_mcap(directory: str | Path, out: str | Path, episodes: Iterable[int] | None = None,
                n_joints: int | None = None) -> tuple[Path, int]:
    """Write the dataset (or the chosen episode indices) as a rosbag2 MCAP; returns (mcap path, messages)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    meta = read_dataset_meta(directory)
    bag_dir, mcap_file = bag_paths(out)
    try:
        created = datetime.datetime.fromisoformat(meta.created).timestamp()
    except ValueError:
        created = 0.0
    wanted = None if episodes is None else set(episodes)
    Header = ts.types["std_msgs/msg/Header"]
    Image = ts.types["sensor_msgs/msg/Image"]
    JointState = ts.types["sensor_msgs/msg/JointState"]
    Float32 = ts.types["std_msgs/msg/Float32"]
    Bool = ts.types["std_msgs/msg/Bool"]
    count = 0
    next_start_s = created
    with Writer(bag_dir, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns: dict[str, Any] = {}

        def put(topic: str, msgtype: str, msg: Any, t_ns: int) -> None:
            nonlocal count
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=ts)
            writer.write(conns[topic], t_ns, ts.serialize_cdr(msg, msgtype))
            count += 1

        for ep in iter_episodes(directory):
            index = int(ep.path.stem.split("_")[-1])
            if wanted is not None and index not in wanted:
                continue
            stamps_s = ep["timestamp"]
            start_s = float(stamps_s[0]) if stamps_s[0] >= WALL_CLOCK_MIN_S else next_start_s
            # integer nanoseconds: a start (to the microsecond) plus exact offsets, so float64's
            # ~200 ns resolution at today's epoch does not jitter the spacing within an episode
            stamps_ns = int(round(start_s * 1e6)) * 1000 + np.round((stamps_s - stamps_s[0]) * 1e9).astype(np.int64)
            next_start_s = start_s + float(stamps_s[-1] - stamps_s[0]) + EPISODE_GAP_S
            _write_episode(ep, stamps_ns, put, ts, Header, Image, JointState, Float32, Bool, meta.arm,
                           meta.camera, n_joints)
    return mcap_file, count


def _write_episode(ep: Episode, stamps_ns: np.ndarray, put: Any, ts: Any, Header: Any, Image: Any,
                   JointState: Any, Float32: Any, Bool: Any, arm_name: str, camera: str,
                   n_joints: int | None) -> None:
    state = ep.arrays.get("state")   # absent from episodes recorded in obs_mode pixels
    if state is not None:
        arm_names = _arm_joint_names(arm_name)
        n = min(n_joints or len(arm_names) or state.shape[1], state.shape[1])
        names = arm_names if len(arm_names) == n else [f"joint_{i}" for i in range(n)]
        has_vel = state.shape[1] >= 2 * n
    frame_ids = {k: (camera if k == "pixels" else k.removeprefix("pixels_")) for k in ep.pixel_keys}
    for t in range(ep.length + 1):
        t_ns = int(stamps_ns[t])
        stamp = _time_msg(ts, t_ns)
        for key, name in frame_ids.items():
            frame = np.ascontiguousarray(ep[key][t])
            h, w = frame.shape[:2]
            msg = Image(header=Header(stamp=stamp, frame_id=f"{name}_optical_frame"), height=h, width=w,
                        encoding="rgb8", is_bigendian=0, step=3 * w, data=frame.reshape(-1))
            put(f"/camera/{name}/image_raw", "sensor_msgs/msg/Image", msg, t_ns)
        if state is not None:
            js = JointState(header=Header(stamp=stamp, frame_id=""), name=names,
                            position=state[t, :n].astype(np.float64),
                            velocity=state[t, n:2 * n].astype(np.float64) if has_vel else np.zeros(0),
                            effort=np.zeros(0))
            put("/joint_states", "sensor_msgs/msg/JointState", js, t_ns)
            put("/observation/state", "std_msgs/msg/Float64MultiArray", _float_array(ts, state[t], "state"), t_ns)
        if "task" in ep:
            put("/observation/task", "std_msgs/msg/Float64MultiArray", _float_array(ts, ep["task"][t], "task"), t_ns)
        if t < ep.length:
            put("/action", "std_msgs/msg/Float64MultiArray", _float_array(ts, ep["action"][t], "action"), t_ns)
            put("/reward", "std_msgs/msg/Float32", Float32(data=float(ep["reward"][t])), t_ns)
            put("/intervention", "std_msgs/msg/Bool", Bool(data=bool(ep["intervention"][t])), t_ns)
