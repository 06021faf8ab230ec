"""Starting nodes as real processes on a private DDS domain (for tests and ``python -m benchmarks ros``).

Every run picks its own ``ROS_DOMAIN_ID`` so parallel test runs on one machine never hear each
other; nodes are started with ``python -m se_robot.nodes.<name> --ros-args -p k:=v`` (exactly
what the console scripts run) and stopped with SIGINT, then SIGKILL if they do not exit.
The in-process side gets its own rclpy ``Context`` bound to the same domain.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from se_robot.nodes.runtime import ensure_ament_prefix


def pick_domain_id(offset: int = 0) -> int:
    """A domain id from the process id (fastrtps allows 0..232; we use 20..219)."""
    return 20 + (os.getpid() * 7 + offset) % 200


def node_env(domain_id: int) -> dict[str, str]:
    ensure_ament_prefix()
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env.setdefault("MUJOCO_GL", "egl")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else "''"
    return repr(value)


def start_node(name: str, domain_id: int, params: dict[str, Any] | None = None,
               node_name: str | None = None, log_path: str | None = None) -> subprocess.Popen:
    """``se_robot.nodes.<name>`` in a child process; its output goes to ``log_path`` (or is dropped)."""
    cmd = [sys.executable, "-m", f"se_robot.nodes.{name}", "--ros-args"]
    for key, value in (params or {}).items():
        cmd += ["-p", f"{key}:={_param_text(value)}"]
    if node_name:
        cmd += ["-r", f"__node:={node_name}"]
    out = open(log_path, "w") if log_path else subprocess.DEVNULL
    return subprocess.Popen(cmd, env=node_env(domain_id), stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop_node(proc: subprocess.Popen, timeout_s: float = 10.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)
    return proc.returncode


class RosSession:
    """An rclpy context on ``domain_id`` with one node and an executor you spin explicitly."""

    def __init__(self, domain_id: int, name: str = "test_client"):
        ensure_ament_prefix()
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.02)
        return predicate()

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, seconds)

    def call(self, client: Any, request: Any, timeout_s: float = 10.0) -> Any:
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise TimeoutError(f"service {client.srv_name} not available within {timeout_s} s")
        future = client.call_async(request)
        if not self.spin_until(future.done, timeout_s):
            raise TimeoutError(f"service {client.srv_name} did not answer within {timeout_s} s")
        return future.result()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@contextmanager
def ros_session(domain_id: int, name: str = "test_client") -> Iterator[RosSession]:
    session = RosSession(domain_id, name)
    try:
        yield session
    finally:
        session.close()


def image_latency_ms(domain_id: int, seconds: float, topic: str = "camera/image_raw") -> list[float]:
    """Capture stamp -> callback latency (ms) of every image received for ``seconds``
    (after the first few, so discovery does not count)."""
    from sensor_msgs.msg import Image

    from se_robot.nodes import conversions as conv
    from se_robot.nodes.runtime import IMAGE_QOS

    lat: list[float] = []
    with ros_session(domain_id, "image_latency") as ros:
        def on_image(msg: Image) -> None:
            lat.append((time.time_ns() - conv.time_to_ns(msg.header.stamp)) * 1e-6)

        ros.node.create_subscription(Image, topic, on_image, IMAGE_QOS)
        ros.spin_until(lambda: len(lat) > 3, 60.0)
        lat.clear()
        ros.spin_for(seconds)
    return lat
