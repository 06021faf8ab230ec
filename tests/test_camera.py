"""OpenCVCamera through real seams: an MJPEG HTTP stream on loopback and a video file on disk."""

from __future__ import annotations

import threading
import time
import urllib.request

import cv2
import numpy as np
import pytest

from se_robot.hardware.camera import CameraConfig, CameraError, CameraTimeout, OpenCVCamera
from se_robot.hardware.mjpeg_server import MjpegServer, CameraGap

pytestmark = pytest.mark.timeout(120)


class CountingFrames:
    """Solid-colour frames whose top-left block encodes a counter, so tests can see frames change."""

    def __init__(self, height: int = 96, width: int = 128, color=(200, 40, 30)):
        self.height, self.width, self.color = height, width, color
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self) -> np.ndarray:
        with self.lock:
            self.count += 1
            n = self.count
        frame = np.empty((self.height, self.width, 3), np.uint8)
        frame[:] = self.color
        frame[:16, :16] = (n * 37) % 256
        return frame


@pytest.fixture
def server():
    srv = MjpegServer(CountingFrames(), fps=30).start()
    yield srv
    srv.stop()


def test_reads_rgb_frames_from_mjpeg_stream(server):
    with OpenCVCamera(server.url) as cam:
        frame, stamp = cam.read(timeout_s=5.0)
        assert frame.dtype == np.uint8 and frame.shape == (96, 128, 3)
        # RGB order survives the BGR world of OpenCV and JPEG (lossy, so compare loosely).
        assert np.allclose(frame[60, 60], (200, 40, 30), atol=12)
        assert stamp <= time.monotonic()
        assert cam.frame_age_s >= 0.0
        newer, newer_stamp = cam.read_newer_than(stamp, timeout_s=5.0)
        assert newer_stamp > stamp
        assert cam.frames_read >= 2


def test_resize_to_requested_size(server):
    with OpenCVCamera(server.url, width=64, height=48) as cam:
        frame, _ = cam.read(timeout_s=5.0)
        assert frame.shape == (48, 64, 3)


def test_read_newer_than_waits_for_a_frame_after_the_given_time(server):
    with OpenCVCamera(server.url) as cam:
        t_command = time.monotonic()
        _, stamp = cam.read_newer_than(t_command, timeout_s=5.0)
        assert stamp > t_command


def test_read_newer_than_times_out_when_frames_stop():
    frames = CountingFrames()
    srv = MjpegServer(frames, fps=30).start()
    cam = OpenCVCamera(srv.url, max_backoff_s=0.2, open_timeout_s=2.0).connect()
    try:
        srv.stop()
        with pytest.raises(CameraTimeout, match="no frame newer"):
            cam.read_newer_than(time.monotonic() + 1e-3, timeout_s=0.3)
        # The newest frame is still available, just old.
        frame, _ = cam.read(timeout_s=0.1)
        assert frame.shape == (96, 128, 3)
    finally:
        cam.disconnect()


def test_reconnects_after_connections_are_dropped(server):
    with OpenCVCamera(server.url, max_backoff_s=0.2) as cam:
        cam.read(timeout_s=5.0)
        server.drop_connections()
        # Frames flow again after the drop: the reader reconnected on its own.
        deadline = time.monotonic() + 10.0
        while cam.reconnects < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        _, stamp = cam.read_newer_than(time.monotonic(), timeout_s=5.0)
        assert cam.drops >= 1 and cam.reconnects >= 1
        assert stamp > 0


def test_reconnects_after_server_restart_on_same_port():
    frames = CountingFrames()
    srv = MjpegServer(frames, fps=30).start()
    port = srv.port
    cam = OpenCVCamera(srv.url, max_backoff_s=0.2).connect()
    try:
        srv.stop()
        deadline = time.monotonic() + 10.0
        while cam.drops < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cam.drops >= 1
        srv2 = MjpegServer(frames, port=port, fps=30).start()
        try:
            _, stamp = cam.read_newer_than(time.monotonic(), timeout_s=10.0)
            assert cam.reconnects >= 1
        finally:
            srv2.stop()
    finally:
        cam.disconnect()


def test_snapshot_endpoint_serves_one_jpeg(server):
    with urllib.request.urlopen(server.snapshot_url, timeout=5) as resp:
        assert resp.headers["Content-Type"] == "image/jpeg"
        data = resp.read()
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (96, 128, 3)


def test_stream_has_multipart_content_type(server):
    with urllib.request.urlopen(server.url, timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        head = resp.read(64)
    assert head.startswith(b"--frame\r\nContent-Type: image/jpeg")


def test_reality_gap_shifts_brightness():
    frames = CountingFrames(color=(100, 100, 100))
    with MjpegServer(frames, fps=30, gap=CameraGap(brightness=50, color_gain=(1.0, 1.0, 1.2))) as srv:
        with OpenCVCamera(srv.url) as cam:
            frame, _ = cam.read(timeout_s=5.0)
    assert np.allclose(frame[60, 60], (150, 150, 170), atol=12)


def test_reads_a_video_file(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 60.0, (80, 60))
    assert writer.isOpened()
    for i in range(12):
        bgr = np.zeros((60, 80, 3), np.uint8)
        bgr[:, :, 2] = 20 * i  # red channel grows frame by frame
        writer.write(bgr)
    writer.release()

    reds = []
    with OpenCVCamera(path) as cam:
        stamp = -np.inf
        while True:
            try:
                frame, stamp = cam.read_newer_than(stamp, timeout_s=5.0)
            except CameraError as e:
                assert "end of stream" in str(e)
                break
            reds.append(int(frame[30, 40, 0]))
    assert frame.shape == (60, 80, 3)
    assert reds == sorted(reds) and reds[-1] > reds[0]  # frames arrive in order, as RGB


def test_looping_video_file_keeps_delivering(tmp_path):
    path = tmp_path / "short.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 100.0, (32, 24))
    for _ in range(3):
        writer.write(np.full((24, 32, 3), 128, np.uint8))
    writer.release()
    with OpenCVCamera(path, loop=True) as cam:
        stamp = -np.inf
        for _ in range(8):  # more frames than the file holds
            _, stamp = cam.read_newer_than(stamp, timeout_s=5.0)
        assert cam.frames_read >= 8 and cam.reconnects == 0


def test_unopenable_sources_fail_naming_the_source(tmp_path):
    with pytest.raises(CameraError, match="could not open camera source 63"):
        OpenCVCamera(63).connect()
    missing = tmp_path / "nope.mp4"
    with pytest.raises(CameraError, match="nope.mp4.*no such file"):
        OpenCVCamera(missing).connect()
    not_video = tmp_path / "notes.txt"
    not_video.write_text("not a video")
    with pytest.raises(CameraError, match="notes.txt"):
        OpenCVCamera(not_video).connect()
    with pytest.raises(CameraError, match="127.0.0.1:9"):
        OpenCVCamera("http://127.0.0.1:9/stream.mjpg", open_timeout_s=1.0).connect()


def test_read_before_connect_is_an_error():
    with pytest.raises(CameraError, match="not connected"):
        OpenCVCamera(0).read(timeout_s=0.1)


def test_config_loads_and_builds_a_camera(server, tmp_path):
    from se_robot.config import load

    path = tmp_path / "cam.yaml"
    path.write_text(f"source: {server.url}\nwidth: 64\nheight: 48\nopen_timeout_s: 5.0\n")
    cfg = load(CameraConfig, path)
    with OpenCVCamera.from_config(cfg) as cam:
        assert cam.read(timeout_s=5.0)[0].shape == (48, 64, 3)
    path.write_text("source: 0\nwidht: 64\n")
    with pytest.raises(Exception, match="widht"):
        load(CameraConfig, path)


def test_camera_benchmark_prints_frame_age(capsys):
    from benchmarks.__main__ import main

    assert main(["camera", "--seconds", "0.6", "--fps", "30", "--width", "160", "--height", "120"]) == 0
    out = capsys.readouterr().out
    assert "frame age at read()" in out and "produce -> grab latency" in out
