"""A scene operator reached over ROS 2: the env asks on a topic, a person answers with a service call.

On a real table somebody has to put the cube back between episodes of push and lift
(``se_robot.envs.operator``). Under ROS the env runs inside a node process (actor_node, a local
learner_node) with no terminal of its own, so the request goes out on ``scene/request``
(``std_msgs/String``, transient local: a tool started late still sees it) and the person, or a UI
or a script, answers:

    ros2 service call /scene/restored std_srvs/srv/Trigger   # done, start the episode
    ros2 service call /scene/abort std_srvs/srv/Trigger      # cannot now: SceneResetError, the run pauses

The node is created on the first request, in its own rclpy context, so an env that never needs an
operator (the twin behind sim_node resets its own scene) costs nothing.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
from std_srvs.srv import Trigger

from se_robot import ros_params as names
from se_robot.envs.operator import wait_for_answer
from se_robot.nodes.runtime import private_context
from se_robot.tasks import Task

REQUEST_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class RosSceneOperator:
    """``SceneOperator`` over ROS 2 services; see the module docstring.

    ``timeout_s``: None waits as long as it takes; a number fails after that long
    (``SceneResetTimeout``). ``namespace`` and ``domain_id`` place it beside the arm's nodes.
    """

    def __init__(self, namespace: str = "", timeout_s: float | None = None, domain_id: int | None = None,
                 node_name: str = "scene_operator"):
        self.namespace, self.timeout_s, self.domain_id, self.node_name = namespace, timeout_s, domain_id, node_name
        self._answer: bool | None = None
        self._asking = False
        self._lock = threading.Lock()
        self._node: Node | None = None
        self._executor: SingleThreadedExecutor | None = None
        self.requests = 0

    def _start(self) -> Node:
        if self._node is not None:
            return self._node
        self.context = private_context(self.domain_id)
        node = self._node = Node(self.node_name, namespace=self.namespace, context=self.context)
        self._request_pub = node.create_publisher(String, names.SCENE_REQUEST, REQUEST_QOS)
        node.create_service(Trigger, names.SCENE_RESTORED_SERVICE, lambda req, res: self._on_answer(True, res))
        node.create_service(Trigger, names.SCENE_ABORT_SERVICE, lambda req, res: self._on_answer(False, res))
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(node)
        threading.Thread(target=self._spin, name="scene-operator", daemon=True).start()
        return node

    def _spin(self) -> None:
        try:
            self._executor.spin()
        except ExternalShutdownException:
            pass

    def _on_answer(self, restored: bool, response: Any) -> Any:
        with self._lock:
            if not self._asking:
                response.success, response.message = False, "no scene reset is being asked for right now"
                return response
            self._answer = restored
        response.success = True
        response.message = ("scene restored: the episode starts" if restored else
                            "declined: the run pauses with the arm held until it is told to continue")
        return response

    def restore(self, task: Task, rng: np.random.Generator, message: str) -> bool:
        node = self._start()
        with self._lock:
            self._answer, self._asking = None, True
        self.requests += 1
        restored = node.resolve_service_name(names.SCENE_RESTORED_SERVICE)
        text = (f"[{task.name}] {message}. When done: ros2 service call {restored} std_srvs/srv/Trigger "
                f"(or {node.resolve_service_name(names.SCENE_ABORT_SERVICE)} to stop)")
        self._request_pub.publish(String(data=text))
        node.get_logger().warning(text)
        try:
            return wait_for_answer(lambda: self._answer, self.timeout_s, message)
        finally:
            with self._lock:
                self._asking = False

    def close(self) -> None:
        if self._executor is None:
            return
        self._executor.shutdown(timeout_sec=1.0)
        self._executor = None
        self._node.destroy_node()
        self._node = None
        rclpy.try_shutdown(context=self.context)
