"""A small MJPEG-over-HTTP server: the protocol real IP cameras speak, fed from any frame source.

Why it exists: the camera driver (``OpenCVCamera``) should be tested and exercised through the same
seam a real IP camera uses, not through a mock. The emulator renders frames of the MuJoCo twin and
serves them here; ``cv2.VideoCapture("http://127.0.0.1:PORT/stream.mjpg")`` then reads them exactly
as it would read a camera on the network.

Endpoints:
- ``/stream.mjpg``  ``multipart/x-mixed-replace; boundary=frame``, one JPEG part per frame;
- ``/snapshot.jpg`` the newest frame as one JPEG.

One producer thread calls ``get_frame()`` at ``fps`` (so ``get_frame`` is only ever called from that
thread; a MuJoCo ``Renderer`` used inside it must be created there too, as its GL context belongs to
the thread that made it), applies the optional reality gaps, encodes once, and every client handler thread sends the
newest encoded frame. ``drop_connections()`` closes the open streams (a network glitch) while the
server keeps accepting, which is how tests exercise the camera's reconnect.
"""

from __future__ import annotations

import collections
import http.server
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

BOUNDARY = "frame"


@dataclass(frozen=True)
class CameraGap:
    """Ways a real camera differs from a rendered frame; all off by default.

    brightness: added to every channel (0..255 scale) before clipping.
    color_gain: per-channel (R, G, B) multiplier, a white-balance error.
    noise_std: standard deviation of Gaussian pixel noise (0..255 scale).
    latency_s: frames are served this long after they were produced (USB/network delay).
    jpeg_quality: encoder quality 1..100 (compression artefacts).
    """

    brightness: float = 0.0
    color_gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    noise_std: float = 0.0
    latency_s: float = 0.0
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"CameraGap.jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if self.noise_std < 0 or self.latency_s < 0:
            raise ValueError(f"CameraGap.noise_std and latency_s must be >= 0, got "
                             f"{self.noise_std}, {self.latency_s}")
        if len(self.color_gain) != 3:
            raise ValueError(f"CameraGap.color_gain needs 3 values (R, G, B), got {self.color_gain}")

    def apply(self, frame_rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.brightness == 0 and self.color_gain == (1.0, 1.0, 1.0) and self.noise_std == 0:
            return frame_rgb
        out = frame_rgb.astype(np.float32)
        out *= np.asarray(self.color_gain, dtype=np.float32)
        out += self.brightness
        if self.noise_std > 0:
            out += rng.normal(0.0, self.noise_std, size=out.shape).astype(np.float32)
        return np.clip(out, 0, 255).astype(np.uint8)


class MjpegServer:
    """Serve frames from ``get_frame()`` (RGB uint8 HxWx3) as an MJPEG stream on loopback."""

    def __init__(self, get_frame: Callable[[], np.ndarray], host: str = "127.0.0.1", port: int = 0,
                 fps: float = 30.0, gap: CameraGap | None = None, seed: int | None = None,
                 on_producer_exit: Callable[[], None] | None = None):
        """``on_producer_exit`` runs in the producer thread as it ends: close a renderer there."""
        if fps <= 0:
            raise ValueError(f"MjpegServer fps must be > 0, got {fps}")
        self._get_frame = get_frame
        self._on_producer_exit = on_producer_exit
        self._host = host
        self._requested_port = port
        self.fps = float(fps)
        self.gap = gap or CameraGap()
        self._rng = np.random.default_rng(seed)
        self._cond = threading.Condition()
        self._jpeg: bytes | None = None
        self._seq = 0
        self._stop = threading.Event()
        self._generation = 0  # bumped by drop_connections(); handlers of older generations exit
        self._server: http.server.ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self.frames_produced = 0
        self.producer_errors = 0
        self.last_error: str | None = None

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> "MjpegServer":
        if self._server is not None:
            return self
        self._stop.clear()
        server = _Server((self._host, self._requested_port), _Handler)
        server.owner = self
        self._server = server
        self._threads = [
            threading.Thread(target=self._produce, name="mjpeg-producer", daemon=True),
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                             name="mjpeg-http", daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every client connection; the port is free afterwards."""
        if self._server is None:
            return
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._server.shutdown()
        self._server.close_all_clients()
        self._server.server_close()
        for t in self._threads:
            t.join(timeout=2.0)
        self._server = None
        self._threads = []

    def __enter__(self) -> "MjpegServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("MjpegServer is not started; call start() first")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The stream URL, e.g. ``http://127.0.0.1:8080/stream.mjpg``."""
        return f"http://{self._host}:{self.port}/stream.mjpg"

    @property
    def snapshot_url(self) -> str:
        return f"http://{self._host}:{self.port}/snapshot.jpg"

    def drop_connections(self) -> None:
        """Close every open stream now (a network glitch); new connections are still accepted."""
        with self._cond:
            self._generation += 1
            self._cond.notify_all()
        if self._server is not None:
            self._server.close_all_clients()

    # ---------------------------------------------------------------- producer
    def _produce(self) -> None:
        try:
            self._produce_loop()
        finally:
            if self._on_producer_exit is not None:
                self._on_producer_exit()

    def _produce_loop(self) -> None:
        period_s = 1.0 / self.fps
        delayed: collections.deque[tuple[float, bytes]] = collections.deque()
        next_tick = time.monotonic()
        while not self._stop.is_set():
            try:
                frame = self._get_frame()
                jpeg = self._encode(frame)
            except Exception as e:  # noqa: BLE001 - a bad frame must not kill the stream; counted
                self.producer_errors += 1
                self.last_error = f"get_frame failed: {type(e).__name__}: {e}"
                jpeg = None
            now = time.monotonic()
            if jpeg is not None:
                delayed.append((now, jpeg))
                self.frames_produced += 1
            ready = None
            while delayed and now - delayed[0][0] >= self.gap.latency_s:
                ready = delayed.popleft()[1]
            if ready is not None:
                with self._cond:
                    self._jpeg = ready
                    self._seq += 1
                    self._cond.notify_all()
            next_tick += period_s
            delay = next_tick - time.monotonic()
            if delay < 0:  # fell behind (slow renderer): do not try to catch up with a burst
                next_tick = time.monotonic()
                delay = 0
            self._stop.wait(delay)

    def _encode(self, frame_rgb: np.ndarray) -> bytes:
        frame = np.asarray(frame_rgb)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"get_frame must return uint8 HxWx3 RGB, got {frame.dtype} {frame.shape}")
        frame = self.gap.apply(frame, self._rng)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, int(self.gap.jpeg_quality)])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        return buf.tobytes()

    def _wait_frame(self, after_seq: int, generation: int, timeout_s: float) -> tuple[bytes | None, int]:
        """The newest JPEG with a sequence number above ``after_seq`` (None on stop/drop/timeout)."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: self._stop.is_set() or self._generation != generation or self._seq > after_seq,
                timeout=timeout_s)
            if not ok or self._stop.is_set() or self._generation != generation:
                return None, after_seq
            return self._jpeg, self._seq


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: MjpegServer

    def __init__(self, *args, **kwargs) -> None:
        self._clients: set[socket.socket] = set()
        self._clients_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address) -> None:  # type: ignore[override]
        with self._clients_lock:
            self._clients.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:  # type: ignore[override]
        with self._clients_lock:
            self._clients.discard(request)
        super().shutdown_request(request)

    def close_all_clients(self) -> None:
        with self._clients_lock:
            clients = list(self._clients)
        for sock in clients:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:  # quiet: tests and emulator
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        if path == "/snapshot.jpg":
            jpeg, _ = owner._wait_frame(0, owner._generation, timeout_s=5.0)
            if jpeg is None:
                self.send_error(503, "no frame yet")
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(jpeg)))
            self.end_headers()
            self.wfile.write(jpeg)
            return
        if path not in ("/stream.mjpg", "/"):
            self.send_error(404, "try /stream.mjpg or /snapshot.jpg")
            return
        self.send_response(200)
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Pragma", "no-cache")
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.end_headers()
        generation = owner._generation
        seq = 0
        while not owner._stop.is_set() and owner._generation == generation:
            jpeg, new_seq = owner._wait_frame(seq, generation, timeout_s=1.0)
            if jpeg is None:
                continue
            seq = new_seq
            try:
                self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                 f"Content-Length: {len(jpeg)}\r\n\r\n".encode("ascii"))
                self.wfile.write(jpeg)
                self.wfile.write(b"\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError, OSError):
                return
