"""sim_node: the MuJoCo twin (``TwinRobot``) in real time behind the topics, services and parameters
of arm_node + camera_node, so a launch file swaps hardware for the twin with ``use_sim`` alone.

The control loop of :class:`~se_robot.nodes.arm_server.ArmServerNode` advances the twin's
physics by the wall-clock time between ticks (times ``real_time_factor``). On top of the arm
interface it renders the task camera (``camera/image_raw`` + ``camera_info``, stamped with the
wall-clock time of the physics state shown) and, because only a simulator knows object poses
exactly, publishes ``sim/task_state`` (PoseArray: [target, cube]) with every joint state (so it
stays fresh whatever the camera rate) and serves ``sim/reset_task`` (Trigger: arm to home,
objects resampled from the ``seed`` parameter on).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from geometry_msgs.msg import Pose, PoseArray
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, Image
from std_srvs.srv import Trigger

from se_robot import ros_params as names
from se_robot.nodes import conversions as conv
from se_robot.nodes.arm_server import ArmServerNode, run_arm_server
from se_robot.nodes.runtime import IMAGE_PUBLISHER_QOS, sensor_publisher
from se_robot.robot import Robot
from se_robot.ros_params import SimParams


def make_twin_robot(cfg: SimParams) -> Robot:
    """The twin of ``cfg.arm`` in the scene of ``cfg.task``, not yet connected."""
    from se_robot.sim.twin_robot import TwinRobot

    return TwinRobot(cfg.arm, cfg.task)


def center_crop(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """The middle ``height`` x ``width`` of a square render (the robot renders squares only)."""
    h, w = frame.shape[:2]
    y0, x0 = (h - height) // 2, (w - width) // 2
    return np.ascontiguousarray(frame[y0:y0 + height, x0:x0 + width])


class SimNode(ArmServerNode):
    def __init__(self, node_name: str = "sim_node", **kwargs: Any):
        super().__init__(node_name, SimParams, make_twin_robot, **kwargs)
        self._camera_thread: threading.Thread | None = None
        self._camera_stop = threading.Event()
        self._rng = np.random.default_rng(self.cfg.seed)
        self._next_seed: int | None = None
        self._task_pub = None
        self.frames_published = 0

    def world_seconds(self, wall_elapsed_s: float) -> float:
        return wall_elapsed_s * self.cfg.real_time_factor

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_configure(state)
        if result != TransitionCallbackReturn.SUCCESS:
            return result
        with self.io_lock:
            self._rng = np.random.default_rng(self.cfg.seed)
            self.robot.reset_scene(self._rng)
        self._image_pub = sensor_publisher(self, Image, names.IMAGE, IMAGE_PUBLISHER_QOS)
        self._info_pub = sensor_publisher(self, CameraInfo, names.CAMERA_INFO)
        self._task_pub = sensor_publisher(self, PoseArray, names.TASK_STATE)
        self._srvs.append(self.create_service(Trigger, names.TASK_RESET_SERVICE, self._on_reset_task,
                                              callback_group=self._srv_group))
        self._next_seed = self.cfg.seed
        self._start_camera()
        return result

    def _start_camera(self) -> None:
        """Render in one dedicated thread: an EGL context is current in one thread only, and the
        executor runs timer callbacks on whichever thread is free. The rate is re-read every
        frame, so a ``camera_rate_hz`` update applies at once. On a normal stop this thread
        closes the robot, so its renderers are released by the thread that made them."""
        self._camera_stop.clear()
        self._camera_thread = threading.Thread(target=self._camera_loop, args=(self.robot,), name="sim-camera",
                                               daemon=True)
        self._camera_thread.start()

    def _camera_loop(self, robot: Robot) -> None:
        next_t = time.monotonic()
        try:
            while not self._camera_stop.is_set():
                rate = self.cfg.camera_rate_hz
                if rate <= 0:
                    self._camera_stop.wait(0.1)
                    next_t = time.monotonic()
                    continue
                self._publish_frame(robot)
                next_t = max(next_t + 1.0 / rate, time.monotonic() - 1.0 / rate)
                self._camera_stop.wait(max(0.0, next_t - time.monotonic()))
        except Exception as e:  # noqa: BLE001 - report, do not die silently
            self.get_logger().error(f"camera thread stopped: {type(e).__name__}: {e}")
            return
        with self.io_lock:
            robot.close()

    def _loop(self) -> None:
        super()._loop()
        robot, pub = self.robot, self._task_pub
        if robot is None or pub is None:
            return
        try:
            with self.io_lock:
                stamp_ns = time.time_ns()
                objects = robot.object_state()
        except Exception as e:  # noqa: BLE001 - e.g. the robot closing under teardown: report, keep the loop
            self._last_error = f"object state: {type(e).__name__}: {e}"
            return
        msg = PoseArray()
        msg.header = conv.header(stamp_ns, "base_link")
        for p in (objects.target_pos, objects.cube_pos):
            pose = Pose()
            pose.position.x, pose.position.y, pose.position.z = (float(v) for v in p)
            pose.orientation.w = 1.0
            msg.poses.append(pose)
        pub.publish(msg)

    def _on_params(self, changed: set[str]) -> None:
        super()._on_params(changed)
        if "seed" in changed:
            self._next_seed = self.cfg.seed

    def _teardown(self) -> None:
        self._camera_stop.set()
        if self._camera_thread is not None:
            self._camera_thread.join(timeout=5.0)
            self._camera_thread = None
        super()._teardown()

    def _publish_frame(self, robot: Robot) -> None:
        c = self.cfg
        side = max(c.image_width, c.image_height)
        with self.io_lock:
            stamp_ns = time.time_ns()
            frame = robot.capture(c.camera, side, 0.0, 0.0).image
        if frame.shape[:2] != (c.image_height, c.image_width):
            frame = center_crop(frame, c.image_height, c.image_width)
        self._image_pub.publish(conv.image_to_msg(frame, stamp_ns, c.camera_frame_id))
        self._info_pub.publish(conv.camera_info(c.image_width, c.image_height, c.horizontal_fov_deg,
                                                stamp_ns, c.camera_frame_id))
        self.frames_published += 1

    def _on_reset_task(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        robot = self.robot
        if robot is None:
            response.success, response.message = False, "not configured"
            return response
        with self._lock:
            seed = self._next_seed
            self._next_seed = None
            if seed is not None:
                self._rng = np.random.default_rng(seed)
            with self.io_lock:
                sample = robot.reset_scene(self._rng)
            self._mode, self._target, self._trajectory = "idle", None, None
        response.success = True
        response.message = (f"task reset (seed {seed if seed is not None else 'continued'}): "
                            f"target {sample.target_pos.round(3).tolist()}, cube {sample.cube_pos.round(3).tolist()}")
        return response


def main(args: list[str] | None = None) -> int:
    return run_arm_server(SimNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
