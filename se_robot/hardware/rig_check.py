"""Probes of a robot rig: the serial ports, the servos answering on one, what a camera delivers, and
how long a control tick and a camera frame take.

``se-robot doctor`` prints these for a user's rig (and reads the servos' present positions to check
them against the arm's calibration); the bus and camera benchmarks time the same loops
against the emulator. Probing only reads: a ping, a model-number read, a sync read and a sync write
of the goals the servos already hold, so nothing moves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from se_robot.hardware.registers import MODELS, STS3215, X_SERIES, ServoModel
from se_robot.hardware.servo_bus import ServoBus, open_bus
from se_robot.hardware.transport import BusTimeoutError, CorruptPacketError

PROTOCOLS = ("feetech", "dynamixel")
# Register tables to ping with: every servo of a protocol keeps its model number where these do.
SCAN_MODELS: dict[str, ServoModel] = {"feetech": STS3215, "dynamixel": X_SERIES}


@dataclass(frozen=True)
class ServoFound:
    """A servo that answered a ping: its protocol, id and model number (and the model's name if known)."""

    protocol: str
    servo_id: int
    model_number: int
    model_name: str | None


def list_serial_ports() -> list[tuple[str, str]]:
    """(device, description) of every serial port the OS reports with a device behind it.

    Ports described as ``n/a`` are legacy UARTs with nothing attached (``/dev/ttyS*``) and are left
    out; a pty (the emulator) is not listed by the OS, so give it with ``--port``.
    """
    from serial.tools import list_ports

    return sorted((p.device, p.description) for p in list_ports.comports() if p.description != "n/a")


def model_name(protocol: str, model_number: int) -> str | None:
    """se_robot's name of the servo model with this number (None: a model se_robot has no table for)."""
    return next((m.name for m in MODELS.values() if m.protocol == protocol and m.model_number == model_number), None)


def scan_bus(port: str, protocol: str, ids: list[int], baudrate: int, timeout_s: float = 0.02) -> list[ServoFound]:
    """Ping each of ``ids`` on ``port`` with ``protocol``; the servos that answered.

    One attempt per id with a short deadline, so a silent id costs ``timeout_s``. Raises
    ``PortLostError`` when the port cannot be opened.
    """
    bus = open_bus(port, protocol, SCAN_MODELS[protocol], baudrate, timeout_s=timeout_s, retries=0)
    found = []
    try:
        for servo_id in ids:
            try:
                number = bus.ping(servo_id)
            except (BusTimeoutError, CorruptPacketError):
                continue
            found.append(ServoFound(protocol, servo_id, number, model_name(protocol, number)))
        bus.transport.drain(quiet_s=timeout_s)  # leave no half reply for the next user of the port
    finally:
        bus.transport.close()
    return found


def read_present_ticks(port: str, protocol: str, model: ServoModel, ids: list[int], baudrate: int) -> dict[int, int]:
    """Each servo's ``Present_Position`` (ticks) in one sync read: a read only, nothing moves."""
    bus = open_bus(port, protocol, model, baudrate)
    try:
        raw = bus.sync_read(ids, ("Present_Position",))
    finally:
        bus.transport.close()
    return {s: int(raw[s]["Present_Position"]) for s in ids}


def time_control_ticks(bus: ServoBus, ids: list[int], ticks: int) -> np.ndarray:
    """Seconds of each of ``ticks`` control ticks: a sync read of every servo's state block, then a
    sync write of goals equal to the present positions (so nothing moves)."""
    times = np.empty(ticks)
    for i in range(ticks):
        t0 = time.perf_counter()
        state = bus.sync_read(ids, bus.model.state_block)
        bus.sync_write("Goal_Position", {s: state[s]["Present_Position"] for s in ids})
        times[i] = time.perf_counter() - t0
    return times


@dataclass(frozen=True)
class CameraProbe:
    """What a camera delivered in a short look: its frame size, rate and the age of its newest frame."""

    source: str
    width: int
    height: int
    fps: float
    frame_age_ms: float


def probe_camera(source: str, seconds: float = 1.0, open_timeout_s: float = 5.0) -> CameraProbe:
    """Open ``source`` (index, device path or URL) at its own size, count frames for ``seconds``.

    Raises ``CameraError`` (naming the source) when it cannot be opened or delivers nothing.
    """
    from se_robot.hardware.camera import OpenCVCamera

    with OpenCVCamera(source, open_timeout_s=open_timeout_s) as cam:
        frame, _ = cam.read(timeout_s=open_timeout_s)
        first = cam.frames_read
        time.sleep(seconds)
        fps = (cam.frames_read - first) / seconds
        cam.read(timeout_s=open_timeout_s)
        age_ms = cam.frame_age_s * 1e3
    return CameraProbe(str(source), frame.shape[1], frame.shape[0], fps, age_ms)


def sample_frame_timing(cam, seconds: float, control_hz: float,
                        on_frame: Callable[[np.ndarray, float], None] | None = None) -> dict[str, list[float]]:
    """Frame age and wait as a control loop at ``control_hz`` sees them, sampled for ``seconds``.

    ``age_s``: how old the newest frame is at a read at an arbitrary phase of the stream;
    ``wait_s``: how long ``read_newer_than(now)`` waits for a frame captured after the command
    (what the env's freshness rule pays). ``on_frame(frame, stamp)`` sees each fresh frame.
    """
    rng = np.random.default_rng(0)
    ages: list[float] = []
    waits: list[float] = []
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        time.sleep(rng.uniform(0.5, 1.5) / control_hz)
        _, stamp = cam.read(timeout_s=2.0)
        ages.append(time.monotonic() - stamp)
        t_cmd = time.monotonic()
        frame, stamp = cam.read_newer_than(t_cmd, timeout_s=2.0)
        waits.append(time.monotonic() - t_cmd)
        if on_frame is not None:
            on_frame(frame, stamp)
    return {"age_s": ages, "wait_s": waits}


def percentile_ms(values: list[float] | np.ndarray, q: float) -> float:
    """The ``q``-th percentile of seconds, in milliseconds (nan for no values)."""
    return float(np.percentile(values, q)) * 1e3 if len(values) else float("nan")
