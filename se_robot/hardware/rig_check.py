"""Probes of a robot rig: the serial ports and video devices, the servos answering on a port (ids,
models, firmware), what a camera delivers, and how long a control tick and a camera frame take.

``se-robot doctor`` prints these for a user's rig (and reads the servos' present positions to check
them against the arm's calibration); the bus and camera benchmarks time the same loops
against the emulator. Probing only reads: a ping, a model-number read, a sync read and a sync write
of the goals the servos already hold, so nothing moves.
"""

from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from se_robot.hardware.registers import MODELS, STS3215, X_SERIES, ServoModel
from se_robot.hardware.servo_bus import ServoBus, open_bus
from se_robot.hardware.transport import BusTimeoutError, CorruptPacketError, ServoStatusError

PROTOCOLS = ("feetech", "dynamixel")
# Register tables to ping with: every servo of a protocol keeps its model number where these do,
# and its firmware version (Feetech: major and minor at 0 and 1; Dynamixel 2.0: one byte at 6).
SCAN_MODELS: dict[str, ServoModel] = {"feetech": STS3215, "dynamixel": X_SERIES}
FIRMWARE_REGISTERS: dict[str, tuple[str, ...]] = {"feetech": ("Firmware_Major_Version", "Firmware_Minor_Version"),
                                                  "dynamixel": ("Firmware_Version",)}


@dataclass(frozen=True)
class ServoFound:
    """A servo that answered a ping: its protocol, id, model number (and the model's name if known)
    and firmware version (None when the servo did not answer the read of it)."""

    protocol: str
    servo_id: int
    model_number: int
    model_name: str | None
    firmware: str | None = None

    def describe(self) -> str:
        """``id 3 sts3215 (model 777, firmware 3.9)``: how doctor lists it."""
        firmware = self.firmware or "unread"
        return f"id {self.servo_id} {self.model_name or 'unknown model'} (model {self.model_number}, firmware {firmware})"


def list_serial_ports() -> list[tuple[str, str]]:
    """(device, description) of every serial port the OS reports with a device behind it.

    Ports described as ``n/a`` are legacy UARTs with nothing attached (``/dev/ttyS*``) and are left
    out; a pty (the emulator) is not listed by the OS, so give it with ``--port``.
    """
    from serial.tools import list_ports

    return sorted((p.device, p.description) for p in list_ports.comports() if p.description != "n/a")


def find_serial_ports(patterns: list[str] = ()) -> list[tuple[str, str]]:
    """The OS's serial ports (``list_serial_ports``) and the paths matching ``patterns`` (globs: a
    pty or a symlink to one, such as the emulator's ``--link``, is not listed by the OS), each
    device once: a symlink to a port already found is left out."""
    ports = list_serial_ports()
    seen = {os.path.realpath(dev) for dev, _ in ports}
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)) or ([pattern] if os.path.exists(pattern) else []):
            real = os.path.realpath(path)
            if real not in seen:
                seen.add(real)
                ports.append((path, f"-> {real}" if real != path else "given with --scan"))
    return ports


def list_video_devices() -> list[tuple[str, str]]:
    """(``/dev/videoN``, the driver's name for it) of every V4L2 device node (Linux); a USB camera
    usually has two, its capture node and a metadata node that delivers no frames."""
    devices = []
    for path in sorted(glob.glob("/dev/video*"), key=lambda p: (len(p), p)):
        name_file = Path("/sys/class/video4linux") / Path(path).name / "name"
        devices.append((path, name_file.read_text().strip() if name_file.is_file() else "unknown device"))
    return devices


def model_name(protocol: str, model_number: int) -> str | None:
    """se_robot's name of the servo model with this number (None: a model se_robot has no table for)."""
    return next((m.name for m in MODELS.values() if m.protocol == protocol and m.model_number == model_number), None)


def scan_bus(port: str, protocol: str, ids: list[int], baudrate: int, timeout_s: float = 0.02,
             recheck: tuple[int, ...] = (), recheck_timeout_s: float = 0.5) -> list[ServoFound]:
    """Ping each of ``ids`` on ``port`` with ``protocol``; the servos that answered, with their
    firmware versions read.

    One attempt per id with a short deadline, so a silent id costs ``timeout_s``. The ids in
    ``recheck`` (an arm's) that stayed silent on a bus where another servo answered are pinged again
    with ``recheck_timeout_s`` and a retry: a reply that comes late (a loaded machine, a busy USB
    adapter) is otherwise lost, and spoils the ping after it. Raises ``PortLostError`` when the
    port cannot be opened.
    """
    bus = open_bus(port, protocol, SCAN_MODELS[protocol], baudrate, timeout_s=timeout_s, retries=0)
    found: dict[int, ServoFound] = {}

    def ping(servo_id: int) -> None:
        try:
            number = bus.ping(servo_id)
        except (BusTimeoutError, CorruptPacketError):
            return
        found[servo_id] = ServoFound(protocol, servo_id, number, model_name(protocol, number),
                                     read_firmware(bus, protocol, servo_id, recheck_timeout_s))

    try:
        for servo_id in ids:
            ping(servo_id)
        missed = [i for i in recheck if i in ids and i not in found] if found else []
        bus.timeout_s, bus.retries = recheck_timeout_s, 1
        for servo_id in missed:
            ping(servo_id)
        bus.transport.drain(quiet_s=timeout_s)  # leave no half reply for the next user of the port
    finally:
        bus.transport.close()
    return [found[i] for i in sorted(found)]


def read_firmware(bus: ServoBus, protocol: str, servo_id: int, timeout_s: float) -> str | None:
    """The firmware version of a servo that answered a ping (``3.9``, ``52``); None if the read
    fails. The servo is there, so it is given ``timeout_s`` and a retry to answer."""
    scan_settings = bus.timeout_s, bus.retries
    bus.timeout_s, bus.retries = max(bus.timeout_s, timeout_s), max(bus.retries, 1)
    try:
        return ".".join(str(bus.read(servo_id, name)) for name in FIRMWARE_REGISTERS[protocol])
    except (BusTimeoutError, CorruptPacketError, ServoStatusError):
        return None
    finally:
        bus.timeout_s, bus.retries = scan_settings


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
