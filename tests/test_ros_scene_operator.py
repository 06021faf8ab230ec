"""The scene operator over ROS 2: the env's request goes out on a topic, a service call answers it."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import rclpy  # noqa: F401 - required: CI must fail, not skip, without it
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from se_robot import ros_params as names  # noqa: E402
from se_robot.envs.operator import SceneResetTimeout  # noqa: E402
from se_robot.nodes.runtime import ensure_ament_prefix  # noqa: E402
from se_robot.nodes.scene_operator import REQUEST_QOS, RosSceneOperator  # noqa: E402
from se_robot.tasks import load_task  # noqa: E402
from tests.support import ros_harness as harness  # noqa: E402

DOMAIN = harness.pick_domain_id(7)
WAIT_S = 60.0   # discovery over loopback DDS on a loaded machine: generous, never a timing assertion


class Person:
    """Another process's view of the graph: reads the request topic and calls the two services."""

    def __init__(self):
        ensure_ament_prefix()
        self.context = Context()
        rclpy.init(context=self.context, domain_id=DOMAIN)
        self.node = Node("person", context=self.context)
        self.requests: list[str] = []
        self.heard = threading.Event()
        self.node.create_subscription(String, names.SCENE_REQUEST, self._on_request, REQUEST_QOS)
        self.restored = self.node.create_client(Trigger, names.SCENE_RESTORED_SERVICE)
        self.abort = self.node.create_client(Trigger, names.SCENE_ABORT_SERVICE)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()

    def _on_request(self, msg: String) -> None:
        self.requests.append(msg.data)
        self.heard.set()

    def call(self, client) -> Trigger.Response:
        assert client.wait_for_service(timeout_sec=WAIT_S)
        done = threading.Event()
        future = client.call_async(Trigger.Request())
        future.add_done_callback(lambda f: done.set())
        assert done.wait(WAIT_S)
        return future.result()

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def _ask(operator: RosSceneOperator, answers: list) -> threading.Thread:
    task, rng = load_task("push"), np.random.default_rng(0)
    thread = threading.Thread(target=lambda: answers.append(operator.restore(task, rng, "put the cube back")))
    thread.start()
    return thread


def test_a_person_answers_the_request_with_a_service_call():
    operator, person = RosSceneOperator(domain_id=DOMAIN, timeout_s=WAIT_S), Person()
    try:
        # nothing asked yet: the node is not even started, and an answer then would mean nothing
        assert operator.requests == 0
        answers: list[bool] = []
        thread = _ask(operator, answers)
        assert person.heard.wait(WAIT_S)
        assert "put the cube back" in person.requests[-1] and "scene/restored" in person.requests[-1]
        assert person.call(person.restored).success
        thread.join(WAIT_S)
        assert answers == [True]
        late = person.call(person.restored)   # an answer with no request pending changes nothing
        assert not late.success and "no scene reset" in late.message

        person.heard.clear()
        thread = _ask(operator, answers)
        assert person.heard.wait(WAIT_S)
        assert person.call(person.abort).success
        thread.join(WAIT_S)
        assert answers == [True, False]
    finally:
        person.close()
        operator.close()


def test_nobody_answering_is_a_timeout_naming_the_request():
    operator = RosSceneOperator(domain_id=DOMAIN, timeout_s=0.5)
    try:
        with pytest.raises(SceneResetTimeout, match="put the cube back"):
            operator.restore(load_task("lift"), np.random.default_rng(0), "put the cube back")
    finally:
        operator.close()
