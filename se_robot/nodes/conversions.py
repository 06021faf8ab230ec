"""numpy <-> ROS message conversions, written here because cv_bridge has no PyPI wheel.

Pure functions over message *types* (``sensor_msgs.msg`` etc. do not import rclpy), so they are
unit-tested without DDS. Every check on a received message names the field and what was seen: a
camera with a wrong ``step`` or an arm publishing joints in another order must fail loudly, not
be reshaped into a plausible-looking wrong array.

Time: ROS stamps are wall-clock (``time.time_ns``) so two machines with synchronised clocks agree;
the camera and the control loop measure with ``time.monotonic``. :func:`monotonic_to_wall_ns`
converts a capture time taken on the monotonic clock to the wall-clock stamp of that instant.
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray, Header, MultiArrayDimension

# encoding -> (channels, dtype)
ENCODINGS: dict[str, tuple[int, np.dtype]] = {
    "rgb8": (3, np.dtype(np.uint8)),
    "bgr8": (3, np.dtype(np.uint8)),
    "rgba8": (4, np.dtype(np.uint8)),
    "bgra8": (4, np.dtype(np.uint8)),
    "mono8": (1, np.dtype(np.uint8)),
    "mono16": (1, np.dtype(np.uint16)),
    "16UC1": (1, np.dtype(np.uint16)),
    "32FC1": (1, np.dtype(np.float32)),
}


class ConversionError(ValueError):
    """A message cannot be turned into the array asked for; says which field is wrong."""


# ------------------------------------------------------------------------------------------------
# Time
# ------------------------------------------------------------------------------------------------
def ns_to_time(stamp_ns: int) -> Time:
    return Time(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))


def time_to_ns(stamp: Time) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def monotonic_to_wall_ns(t_monotonic_s: float) -> int:
    """Wall-clock ns of an instant measured with ``time.monotonic()`` (sub-ms accurate)."""
    return time.time_ns() - int(round((time.monotonic() - t_monotonic_s) * 1e9))


def header(stamp_ns: int, frame_id: str) -> Header:
    return Header(stamp=ns_to_time(stamp_ns), frame_id=frame_id)


# ------------------------------------------------------------------------------------------------
# Images
# ------------------------------------------------------------------------------------------------
def image_to_msg(frame: np.ndarray, stamp_ns: int, frame_id: str = "", encoding: str = "rgb8") -> Image:
    """An HxWxC (or HxW) array as ``sensor_msgs/Image`` with a row ``step`` of W*C*itemsize."""
    if encoding not in ENCODINGS:
        raise ConversionError(f"encoding {encoding!r} not supported; supported: {sorted(ENCODINGS)}")
    channels, dtype = ENCODINGS[encoding]
    arr = np.asarray(frame)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] != channels:
        raise ConversionError(f"frame of shape {np.shape(frame)} does not fit encoding {encoding!r} "
                              f"({channels} channel(s))")
    if arr.dtype != dtype:
        raise ConversionError(f"frame dtype {arr.dtype} does not fit encoding {encoding!r} ({dtype})")
    h, w = arr.shape[:2]
    msg = Image()
    msg.header = header(stamp_ns, frame_id)
    msg.height, msg.width, msg.encoding = h, w, encoding
    msg.is_bigendian = 0
    msg.step = w * channels * dtype.itemsize
    msg.data = np.ascontiguousarray(arr).tobytes()
    return msg


def msg_to_image(msg: Image, want: str = "rgb8") -> np.ndarray:
    """A received ``Image`` as an HxWxC array (a view of the message buffer when possible).

    ``want="rgb8"`` converts bgr8/bgra8/rgba8/mono8 to RGB; other encodings come back as sent.
    """
    if msg.encoding not in ENCODINGS:
        raise ConversionError(f"Image.encoding {msg.encoding!r} not supported; supported: {sorted(ENCODINGS)}")
    channels, dtype = ENCODINGS[msg.encoding]
    row_bytes = msg.width * channels * dtype.itemsize
    if msg.step < row_bytes:
        raise ConversionError(f"Image.step {msg.step} is smaller than width*channels*itemsize = {row_bytes}")
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size != msg.step * msg.height:
        raise ConversionError(f"Image.data has {buf.size} bytes, expected step*height = "
                              f"{msg.step}*{msg.height} = {msg.step * msg.height}")
    rows = buf.reshape(msg.height, msg.step)[:, :row_bytes]
    wire_dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    arr = np.ascontiguousarray(rows).view(wire_dtype).reshape(msg.height, msg.width, channels)
    if wire_dtype != dtype:
        arr = arr.astype(dtype)
    if want != "rgb8" or msg.encoding == "rgb8":
        return arr
    if msg.encoding in ("bgr8", "bgra8"):
        return np.ascontiguousarray(arr[:, :, 2::-1])
    if msg.encoding == "rgba8":
        return np.ascontiguousarray(arr[:, :, :3])
    if msg.encoding == "mono8":
        return np.repeat(arr, 3, axis=2)
    raise ConversionError(f"cannot convert Image.encoding {msg.encoding!r} to rgb8")


def camera_info(width: int, height: int, horizontal_fov_deg: float, stamp_ns: int, frame_id: str) -> CameraInfo:
    """A distortion-free pinhole ``CameraInfo`` for a camera of the given field of view."""
    fx = 0.5 * width / math.tan(math.radians(horizontal_fov_deg) / 2.0)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    msg = CameraInfo()
    msg.header = header(stamp_ns, frame_id)
    msg.width, msg.height = width, height
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = [fx, 0.0, cx, 0.0, fx, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [fx, 0.0, cx, 0.0, 0.0, fx, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


# ------------------------------------------------------------------------------------------------
# Joints
# ------------------------------------------------------------------------------------------------
def joint_state_to_msg(names: Sequence[str], positions: np.ndarray, velocities: np.ndarray | None,
                       efforts: np.ndarray | None, stamp_ns: int, frame_id: str = "") -> JointState:
    msg = JointState()
    msg.header = header(stamp_ns, frame_id)
    msg.name = list(names)
    msg.position = np.asarray(positions, dtype=np.float64).tolist()
    msg.velocity = [] if velocities is None else np.asarray(velocities, dtype=np.float64).tolist()
    msg.effort = [] if efforts is None else np.asarray(efforts, dtype=np.float64).tolist()
    return msg


def _reorder(values: Sequence[float], msg_names: list[str], names: Sequence[str], field: str) -> np.ndarray:
    if len(values) != len(msg_names):
        raise ConversionError(f"JointState.{field} has {len(values)} entries for {len(msg_names)} names")
    index = {n: i for i, n in enumerate(msg_names)}
    missing = [n for n in names if n not in index]
    if missing:
        raise ConversionError(f"JointState.name lacks joint(s) {missing}; it has {msg_names}")
    vals = np.asarray(values, dtype=np.float64)
    return vals[[index[n] for n in names]]


def msg_to_joint_state(msg: JointState, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positions, velocities, efforts) in the order of ``names``; empty fields become zeros."""
    msg_names = list(msg.name)
    n = len(names)
    pos = _reorder(msg.position, msg_names, names, "position")
    vel = _reorder(msg.velocity, msg_names, names, "velocity") if len(msg.velocity) else np.zeros(n)
    eff = _reorder(msg.effort, msg_names, names, "effort") if len(msg.effort) else np.zeros(n)
    return pos, vel, eff


def array_msg(values: np.ndarray, label: str = "joints") -> Float64MultiArray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=label, size=arr.size, stride=arr.size)]
    msg.data = arr.tolist()
    return msg


def msg_to_command(msg: Float64MultiArray, n_joints: int) -> np.ndarray:
    """Forward-command style: exactly one target per joint, in arm.joint_names order."""
    data = np.asarray(msg.data, dtype=np.float64)
    if data.shape != (n_joints,):
        raise ConversionError(f"Float64MultiArray.data has {data.size} values, expected {n_joints} "
                              "(one target per joint, in the arm's joint order)")
    if not np.all(np.isfinite(data)):
        raise ConversionError(f"Float64MultiArray.data holds non-finite values: {data.tolist()}")
    return data
