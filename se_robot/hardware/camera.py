"""OpenCV cameras (USB by index, V4L2 path, video file, MJPEG/RTSP URL) read by a background thread.

Why a thread: a control loop must never block on the camera's own clock, and OpenCV queues frames
inside the driver, so reading only when the policy wants a frame returns a stale one. The reader
thread grabs continuously and keeps only the newest frame with the ``time.monotonic()`` at which it
was grabbed; the control loop asks for "the newest frame" (``read``) or "a frame captured after my
command went out" (``read_newer_than``), and can see how old it is (``frame_age_s``).

Dropped streams (USB unplugged, Wi-Fi camera rebooting, HTTP connection closed) are not fatal: the
thread reconnects with a bounded exponential back-off and counts drops and reconnects, and readers
see stale frames (their age grows) until frames flow again. A source that cannot be opened at
``connect()`` fails at once with a ``CameraError`` that names the source.

A video file is paced at its own frame rate (or ``fps``) so it behaves like a live camera; at its
end it either loops (``loop=True``) or the camera reports end of stream.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from se_robot.config import ConfigError, from_dict, named_config, option, read_yaml


class CameraError(RuntimeError):
    """The camera cannot deliver frames; the message names the source."""


class CameraTimeout(CameraError, TimeoutError):
    """No (new enough) frame arrived within the timeout."""


@dataclass(frozen=True)
class CameraConfig:
    """One camera as written in ``config/cameras/<name>.yaml``."""

    source: int | str = option(0, help="device index, /dev/videoN, video file or http(s)/rtsp URL")
    width: int | None = option(None, help="frame width delivered to callers (px); None keeps the device's", range=(1, 8192))
    height: int | None = option(None, help="frame height delivered to callers (px)", range=(1, 8192))
    fps: float | None = option(None, help="frame rate requested from the device / file pacing", range=(0.1, 1000.0))
    fourcc: str | None = option(None, help="pixel format asked of a USB camera, e.g. MJPG (higher fps at high resolution)")
    open_timeout_s: float = option(5.0, help="how long connect() waits for the first frame", range=(0.1, 120.0))
    max_backoff_s: float = option(2.0, help="longest wait between reconnect attempts", range=(0.01, 60.0))


def load_camera_config(name_or_path: str | Path) -> CameraConfig:
    """The ``camera`` section of ``config/cameras/NAME.yaml`` (by name) or of a YAML file (by path)."""
    path = named_config("cameras", name_or_path)
    data = read_yaml(path)
    if "camera" not in data:
        raise ConfigError(str(path), "camera", "missing required section (source, width, height, fps, ...)")
    return from_dict(CameraConfig, data["camera"], str(path), prefix="camera")


def _normalize_source(source: int | str | Path) -> int | str:
    if isinstance(source, Path):
        return str(source)
    if isinstance(source, str) and source.strip().isdigit():
        return int(source.strip())
    return source


class OpenCVCamera:
    """The newest RGB frame of an OpenCV source, with its capture time, from a reader thread.

    ``source``: device index (``0``), device path (``/dev/video0``), video file, or URL
    (``http://host:port/stream.mjpg``, ``rtsp://...``). ``width``/``height``: the size callers get;
    it is requested from a device and any other delivered size is resized to it. ``fps``: requested
    from a device; for a file, the pacing rate (default: the file's own).
    """

    def __init__(self, source: int | str | Path, width: int | None = None, height: int | None = None,
                 fps: float | None = None, *, fourcc: str | None = None, loop: bool = False,
                 open_timeout_s: float = 5.0, max_backoff_s: float = 2.0, initial_backoff_s: float = 0.05):
        if (width is None) != (height is None):
            raise ValueError(f"camera {source!r}: give both width and height or neither "
                             f"(got width={width}, height={height})")
        self.source = _normalize_source(source)
        self.width, self.height, self.fps = width, height, fps
        self.fourcc = fourcc
        self.loop = loop
        self.open_timeout_s = open_timeout_s
        self.max_backoff_s = max_backoff_s
        self.initial_backoff_s = initial_backoff_s
        self.is_file = isinstance(self.source, str) and os.path.isfile(self.source)
        self.is_url = isinstance(self.source, str) and "://" in self.source
        # Counters, readable at any time (single writer: the reader thread).
        self.frames_read = 0
        self.drops = 0
        self.reconnects = 0
        self.ended = False
        self.last_error: str | None = None
        self._cap: cv2.VideoCapture | None = None
        self._cond = threading.Condition()
        self._frame: np.ndarray | None = None
        self._stamp = -np.inf
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, cfg: CameraConfig, **overrides: object) -> "OpenCVCamera":
        kwargs = dict(width=cfg.width, height=cfg.height, fps=cfg.fps, fourcc=cfg.fourcc,
                      open_timeout_s=cfg.open_timeout_s, max_backoff_s=cfg.max_backoff_s)
        kwargs.update(overrides)
        return cls(cfg.source, **kwargs)  # type: ignore[arg-type]

    # ---------------------------------------------------------------- lifecycle
    @property
    def is_connected(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def connect(self) -> "OpenCVCamera":
        """Open the source and wait for its first frame; ``CameraError`` naming the source if not."""
        if self.is_connected:
            return self
        cap = self._open()
        if cap is None:
            raise CameraError(self._open_failure_message())
        self._cap = cap
        self._stop.clear()
        self.ended = False
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.source}", daemon=True)
        self._thread.start()
        try:
            self.read(timeout_s=self.open_timeout_s)
        except CameraTimeout:
            self.disconnect()
            raise CameraError(f"camera {self.source!r} opened but delivered no frame within "
                              f"{self.open_timeout_s:.1f} s (last error: {self.last_error})") from None
        return self

    def disconnect(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._thread = None
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self) -> "OpenCVCamera":
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    def __del__(self) -> None:
        try:
            self.disconnect()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # ---------------------------------------------------------------- reading
    @property
    def frame_age_s(self) -> float:
        """Seconds since the newest frame was grabbed (``inf`` before the first)."""
        return time.monotonic() - self._stamp

    def read(self, timeout_s: float = 1.0) -> tuple[np.ndarray, float]:
        """The newest frame (RGB uint8 HxWx3, a copy the caller owns) and its capture time."""
        return self.read_newer_than(-np.inf, timeout_s)

    def read_newer_than(self, t: float, timeout_s: float = 1.0) -> tuple[np.ndarray, float]:
        """The newest frame grabbed strictly after ``t`` (``time.monotonic`` clock), waiting for it.

        Raises ``CameraTimeout`` if none arrives within ``timeout_s`` and ``CameraError`` if the
        camera is not connected or a non-looping file has ended.
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._stamp <= t:
                if not self.is_connected and self._thread is None:
                    raise CameraError(f"camera {self.source!r} is not connected; call connect() first")
                if self.ended:
                    raise CameraError(f"camera {self.source!r}: end of stream")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CameraTimeout(
                        f"camera {self.source!r}: no frame newer than t={t:.3f} within {timeout_s:.3f} s "
                        f"(newest is {self.frame_age_s:.3f} s old, drops={self.drops}, "
                        f"last error: {self.last_error})")
                self._cond.wait(remaining)
            assert self._frame is not None
            return self._frame.copy(), self._stamp

    def stats(self) -> dict[str, float]:
        """Flat counters for logs and ``info`` dicts."""
        return {"camera/frames_read": float(self.frames_read), "camera/drops": float(self.drops),
                "camera/reconnects": float(self.reconnects), "camera/frame_age_s": self.frame_age_s}

    # ---------------------------------------------------------------- internals
    def _open(self) -> cv2.VideoCapture | None:
        src = self.source
        if self.is_url:
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout_s * 1000),
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.open_timeout_s * 1000)]
            cap = cv2.VideoCapture(src, cv2.CAP_FFMPEG, params)
        else:
            cap = cv2.VideoCapture(src)
        if not cap.isOpened():
            cap.release()
            return None
        if not self.is_file and not self.is_url:  # a local device: ask for format, size, rate
            if self.fourcc:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.fourcc[:4].ljust(4)))
            if self.width is not None:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            if self.fps is not None:
                cap.set(cv2.CAP_PROP_FPS, self.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep the driver queue short: fresher frames
        return cap

    def _open_failure_message(self) -> str:
        src = self.source
        if isinstance(src, int) or (isinstance(src, str) and src.startswith("/dev/")):
            dev = f"/dev/video{src}" if isinstance(src, int) else src
            hint = (f"{dev} does not exist; is the camera plugged in? (ls /dev/video*)" if not os.path.exists(dev)
                    else f"{dev} exists but could not be opened: busy in another program, or no permission "
                         f"(add the user to the 'video' group)")
        elif self.is_url:
            hint = "is the camera/server reachable and the URL path right (e.g. /stream.mjpg)?"
        elif isinstance(src, str) and not os.path.exists(src):
            hint = "no such file"
        else:
            hint = "the file is not a video OpenCV can decode"
        return f"could not open camera source {src!r}: {hint}"

    def _pace_period_s(self) -> float | None:
        if not self.is_file:
            return None
        fps = self.fps
        if fps is None and self._cap is not None:
            fps = self._cap.get(cv2.CAP_PROP_FPS) or None
        return 1.0 / fps if fps and fps > 0 else 1.0 / 30.0

    def _run(self) -> None:
        backoff_s = self.initial_backoff_s
        period_s = self._pace_period_s()
        next_tick = time.monotonic()
        while not self._stop.is_set():
            cap = self._cap
            if cap is None:
                cap = self._open()
                if cap is None:
                    self.last_error = self._open_failure_message()
                    self._stop.wait(backoff_s)
                    backoff_s = min(backoff_s * 2.0, self.max_backoff_s)
                    continue
                self._cap = cap
                if not self.is_file:  # reopening a looping file is not a reconnect
                    self.reconnects += 1
                backoff_s = self.initial_backoff_s
            if period_s is not None:  # a file: behave like a live camera at the file's rate
                next_tick += period_s
                self._stop.wait(max(0.0, next_tick - time.monotonic()))
            ok = cap.grab()
            stamp = time.monotonic()
            frame = cap.retrieve()[1] if ok else None
            if frame is None:
                if self.is_file and not self.loop:
                    with self._cond:
                        self.ended = True
                        self._cond.notify_all()
                    return
                if not self.is_file:
                    self.drops += 1
                    self.last_error = f"camera {self.source!r}: read failed (stream dropped)"
                cap.release()
                self._cap = None
                next_tick = time.monotonic()
                if not self.is_file:
                    self._stop.wait(backoff_s)
                continue
            frame = self._to_rgb(frame)
            with self._cond:
                self._frame = frame
                self._stamp = stamp
                self.frames_read += 1
                self._cond.notify_all()

    def _to_rgb(self, frame_bgr: np.ndarray) -> np.ndarray:
        if frame_bgr.ndim == 2:
            rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_GRAY2RGB)
        else:
            rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
        if self.width is not None and (rgb.shape[1], rgb.shape[0]) != (self.width, self.height):
            rgb = cv2.resize(rgb, (self.width, self.height), interpolation=cv2.INTER_AREA)
        return rgb
