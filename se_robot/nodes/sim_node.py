"""sim_node: the MuJoCo twin in real time behind the topics, services and parameters of
arm_node + camera_node, so a launch file swaps hardware for the twin with ``use_sim`` alone.

On top of the arm interface it renders the task camera (``camera/image_raw`` + ``camera_info``,
stamped with the wall-clock time of the physics state shown) and, because only a simulator knows
object poses exactly, publishes ``sim/task_state`` (PoseArray: [target, cube]) and serves
``sim/reset_task`` (Trigger: arm to home, objects resampled from the ``seed`` parameter on).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from geometry_msgs.msg import Pose, PoseArray
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, Image
from std_srvs.srv import Trigger

from se_robot import ros_params as names
from se_robot.nodes import conversions as conv
from se_robot.nodes.arm_server import ArmServerNode, run_arm_server
from se_robot.nodes.backends import TwinBackend
from se_robot.nodes.runtime import IMAGE_QOS, SENSOR_QOS
from se_robot.ros_params import SimParams


class SimNode(ArmServerNode):
    def __init__(self, node_name: str = "sim_node", **kwargs: Any):
        super().__init__(node_name, SimParams, TwinBackend, **kwargs)
        self._camera_thread: threading.Thread | None = None
        self._camera_stop = threading.Event()
        self._next_seed = None
        self.frames_published = 0

    @property
    def twin_backend(self) -> TwinBackend | None:
        return self.backend  # type: ignore[return-value]

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_configure(state)
        if result != TransitionCallbackReturn.SUCCESS:
            return result
        self._image_pub = self.create_publisher(Image, names.IMAGE, IMAGE_QOS)
        self._info_pub = self.create_publisher(CameraInfo, names.CAMERA_INFO, IMAGE_QOS)
        self._task_pub = self.create_publisher(PoseArray, names.TASK_STATE, SENSOR_QOS)
        self._srvs.append(self.create_service(Trigger, names.TASK_RESET_SERVICE, self._on_reset_task,
                                              callback_group=self._srv_group))
        self._next_seed = self.cfg.seed
        self._start_camera()
        return result

    def _start_camera(self) -> None:
        """Render in one dedicated thread: an EGL context is current in one thread only, and the
        executor runs timer callbacks on whichever thread is free. The rate is re-read every
        frame, so a ``camera_rate_hz`` update applies at once."""
        self._camera_stop.clear()
        self._camera_thread = threading.Thread(target=self._camera_loop, name="sim-camera", daemon=True)
        self._camera_thread.start()

    def _camera_loop(self) -> None:
        backend = self.twin_backend
        next_t = time.monotonic()
        try:
            while not self._camera_stop.is_set():
                rate = self.cfg.camera_rate_hz
                if rate <= 0:
                    self._camera_stop.wait(0.1)
                    next_t = time.monotonic()
                    continue
                self._publish_frame(backend)
                next_t = max(next_t + 1.0 / rate, time.monotonic() - 1.0 / rate)
                self._camera_stop.wait(max(0.0, next_t - time.monotonic()))
        except Exception as e:  # noqa: BLE001 - report, do not die silently
            self.get_logger().error(f"camera thread stopped: {type(e).__name__}: {e}")
        finally:
            backend.close_renderers()

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

    def _publish_frame(self, backend: TwinBackend) -> None:
        c = self.cfg
        frame, stamp_ns = backend.render(c.camera, c.image_width, c.image_height)
        self._image_pub.publish(conv.image_to_msg(frame, stamp_ns, c.camera_frame_id))
        self._info_pub.publish(conv.camera_info(c.image_width, c.image_height, c.horizontal_fov_deg,
                                                stamp_ns, c.camera_frame_id))
        target, cube, task_ns = backend.task_positions()
        msg = PoseArray()
        msg.header = conv.header(task_ns, "base_link")
        for p in (target, cube):
            pose = Pose()
            pose.position.x, pose.position.y, pose.position.z = (float(v) for v in p)
            pose.orientation.w = 1.0
            msg.poses.append(pose)
        self._task_pub.publish(msg)
        self.frames_published += 1

    def _on_reset_task(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        backend = self.twin_backend
        if backend is None:
            response.success, response.message = False, "not configured"
            return response
        with self._lock:
            seed = self._next_seed
            self._next_seed = None
            sample = backend.reset_task(seed)
            self._mode, self._target, self._trajectory = "idle", None, None
        response.success = True
        response.message = (f"task reset (seed {seed if seed is not None else 'continued'}): "
                            f"target {sample.target_pos.round(3).tolist()}, cube {sample.cube_pos.round(3).tolist()}")
        return response


def main(args: list[str] | None = None) -> int:
    return run_arm_server(SimNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
