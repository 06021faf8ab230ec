"""camera_node: an OpenCV camera (USB, file, MJPEG/RTSP URL) as sensor_msgs/Image + CameraInfo.

Frames are stamped with the wall-clock time at which the camera's reader thread grabbed them
(``OpenCVCamera`` measures capture on the monotonic clock; converted here), not the time of
publishing, so a consumer can tell how old an image is and RosRobot can insist on one newer
than its command. A dedicated thread publishes each new frame as soon as it is captured, at most
``camera_rate_hz`` (reliable, keep last 2, overridable: se_robot.nodes.runtime). Images are rgb8 at
``image_width`` x ``image_height``; the conversion is ours (no cv_bridge wheel exists).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from se_robot import ros_params as names
from se_robot.nodes import conversions as conv
from se_robot.nodes.params import NodeParams
from se_robot.nodes.runtime import IMAGE_PUBLISHER_QOS, run_node, sensor_publisher
from se_robot.ros_params import CameraParams

_RESTART = {"camera_source", "image_width", "image_height"}


class CameraNode(Node):
    def __init__(self, node_name: str = "camera_node", **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self.params = NodeParams(self, (CameraParams,), on_change=self._on_params)
        self._image_pub = sensor_publisher(self, Image, names.IMAGE, IMAGE_PUBLISHER_QOS)
        self._info_pub = sensor_publisher(self, CameraInfo, names.CAMERA_INFO)
        self.camera = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.frames_published = 0
        from se_robot.hardware.camera import CameraError

        try:
            self._open()
        except CameraError as e:  # a wrong source is the user's to fix: say which, without a traceback
            raise SystemExit(f"{self.get_name()}: {e}") from None

    @property
    def cfg(self) -> CameraParams:
        return self.params.get(CameraParams)

    def _open(self) -> None:
        from se_robot.hardware.camera import OpenCVCamera

        c = self.cfg
        self.camera = OpenCVCamera(c.camera_source, c.image_width, c.image_height, fps=c.camera_rate_hz)
        self.camera.connect()  # CameraError naming the source if it cannot be opened
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="camera-publish", daemon=True)
        self._thread.start()

    def _on_params(self, changed: set[str]) -> None:
        if changed & _RESTART:
            self.close()
            self._open()

    def _run(self) -> None:
        from se_robot.hardware.camera import CameraError, CameraTimeout

        last_capture = float("-inf")
        next_t = time.monotonic()
        while not self._stop.is_set():
            try:
                frame, captured = self.camera.read_newer_than(last_capture, timeout_s=1.0)
            except CameraTimeout as e:
                self.get_logger().warning(str(e), throttle_duration_sec=5.0)
                continue
            except CameraError as e:
                self.get_logger().error(f"camera stopped: {e}")
                return
            last_capture = captured
            stamp_ns = conv.monotonic_to_wall_ns(captured)
            c = self.cfg
            self._image_pub.publish(conv.image_to_msg(frame, stamp_ns, c.camera_frame_id))
            self._info_pub.publish(conv.camera_info(frame.shape[1], frame.shape[0], c.horizontal_fov_deg,
                                                    stamp_ns, c.camera_frame_id))
            self.frames_published += 1
            next_t = max(next_t + 1.0 / c.camera_rate_hz, time.monotonic() - 1.0 / c.camera_rate_hz)
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3.0)
            self._thread = None
        if self.camera is not None:
            self.camera.disconnect()
            self.camera = None


def main(args: list[str] | None = None) -> int:
    return run_node(CameraNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
