"""camera_node reading an MJPEG stream (the protocol of IP cameras) and publishing over DDS."""

import os
import tempfile

import numpy as np
import pytest

import rclpy  # noqa: F401 - required: CI must fail, not skip, without it

from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from se_robot.nodes import conversions as conv  # noqa: E402
from tests.support import ros_harness as harness  # noqa: E402
from se_robot.nodes.runtime import IMAGE_QOS  # noqa: E402

pytestmark = pytest.mark.timeout(120)

DOMAIN = harness.pick_domain_id(4)


def test_camera_node_publishes_rgb_images_stamped_at_capture():
    from se_robot.hardware.mjpeg_server import MjpegServer

    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:, :32] = (200, 30, 30)  # left half red, right half black
    log = os.path.join(tempfile.gettempdir(), f"se_robot_camera_node_{os.getpid()}.log")
    with MjpegServer(lambda: frame, fps=30.0) as server:
        proc = harness.start_node("camera_node", DOMAIN, {"camera_source": server.url, "image_width": 64,
                                                           "image_height": 48, "camera_rate_hz": 20.0},
                                  log_path=log)
        try:
            with harness.ros_session(DOMAIN) as ros:
                images, infos = [], []
                ros.node.create_subscription(Image, "camera/image_raw", images.append, IMAGE_QOS)
                ros.node.create_subscription(CameraInfo, "camera/camera_info", infos.append, IMAGE_QOS)
                assert ros.spin_until(lambda: len(images) >= 3 and infos, 60.0), open(log).read()[-2000:]
        finally:
            harness.stop_node(proc)
    msg = images[-1]
    img = conv.msg_to_image(msg)
    assert msg.encoding == "rgb8" and img.shape == (48, 64, 3)
    assert img[:, :24, 0].mean() > 150 and img[:, 40:].mean() < 40  # colours survive JPEG, RGB order kept
    stamps = [conv.time_to_ns(m.header.stamp) for m in images]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)  # one stamp per captured frame
    assert infos[-1].width == 64 and infos[-1].k[0] > 0
