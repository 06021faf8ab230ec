"""The launch files, run for real: each file's Node actions built into the command lines launch_ros
would run (tests/support/launch_mirror.py: launch/launch_ros have no PyPI wheels), those processes
started on a private DDS domain, and probed from here: every node on the graph exactly once, the
lifecycle nodes active, every sensor topic received by a subscriber with the default QoS
(reliable, as MoveIt's or ``ros2 bag record``'s), and a clean exit on Ctrl-C (SIGINT).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

import rclpy  # noqa: F401 - required: CI must fail, not skip, without it
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseArray  # noqa: E402
from lifecycle_msgs.srv import GetState  # noqa: E402
from rcl_interfaces.msg import ParameterType  # noqa: E402
from rcl_interfaces.srv import GetParameters  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from se_robot import ros_params  # noqa: E402
from se_robot.nodes.runtime import SENSOR_QOS  # noqa: E402
from tests.support import launch_mirror as lm  # noqa: E402
from tests.support import ros_harness as harness  # noqa: E402

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[1]
DOMAIN = harness.pick_domain_id(11)
DEFAULT_QOS = QoSProfile(depth=10)   # what a subscriber gets when it names only a depth: reliable
TWIN_TOPICS = {"/joint_states": JointState, "/camera/image_raw": Image, "/camera/camera_info": CameraInfo,
               "/diagnostics": DiagnosticArray, "/sim/task_state": PoseArray}
# Generous: a node imports torch/MuJoCo and DDS discovery is slow on a loaded 2-core machine.
START_S = 120.0


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> lm.LaunchMirror:
    return lm.LaunchMirror(lm.install_prefix(ROOT, tmp_path_factory.mktemp("install")))


@contextmanager
def launched(mirror: lm.LaunchMirror, launch_file: str, arguments: dict[str, str], log_dir: Path
             ) -> Iterator[list[subprocess.Popen]]:
    """Start every node of ``launch_file``; stop them with SIGINT and require a clean exit."""
    env = lm.process_env(harness.node_env(DOMAIN), ROOT, mirror.prefix)
    procs, logs = [], []
    for node in mirror.nodes(launch_file, arguments):
        log = log_dir / f"{launch_file}.{node.name}.log"
        logs.append(log)
        # launch gives a node a pipe for standard input, not the terminal
        procs.append(subprocess.Popen(node.cmd, env=env, stdin=subprocess.PIPE, stdout=open(log, "w"),
                                      stderr=subprocess.STDOUT, start_new_session=True))
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        codes = [harness.stop_node(p, timeout_s=20.0) for p in procs]
    for log, code in zip(logs, codes):
        text = log.read_text()
        assert code == 0, f"{log.name} exited {code}:\n{text[-3000:]}"
        for bad in ("Traceback", "RCLError", "never retrieved"):
            assert bad not in text, f"{log.name} printed {bad} on Ctrl-C:\n{text[-3000:]}"


def logs_of(log_dir: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(log_dir.glob("*.log")))


def wait_for_nodes(ros: harness.RosSession, names: set[str], log_dir: Path) -> Counter:
    def graph() -> Counter:
        return Counter(n for n, _ in ros.node.get_node_names_and_namespaces())

    assert ros.spin_until(lambda: names <= set(graph()), START_S), f"missing {names - set(graph())}\n{logs_of(log_dir)}"
    ros.spin_for(1.0)  # a second node of the same name would show up by now
    counts = graph()
    assert all(counts[n] == 1 for n in names), f"node names on the graph: {dict(counts)}"
    return counts


def lifecycle_state(ros: harness.RosSession, node: str) -> str:
    client = ros.node.create_client(GetState, f"/{node}/get_state")
    try:
        return ros.call(client, GetState.Request(), timeout_s=30.0).current_state.label
    finally:
        ros.node.destroy_client(client)


def wait_active(ros: harness.RosSession, node: str, log_dir: Path) -> None:
    assert ros.spin_until(lambda: lifecycle_state(ros, node) == "active", START_S), \
        f"{node} is {lifecycle_state(ros, node)}\n{logs_of(log_dir)}"


def receive_all(ros: harness.RosSession, topics: dict[str, type], log_dir: Path, qos: QoSProfile = DEFAULT_QOS
                ) -> None:
    got: Counter = Counter()
    subs = [ros.node.create_subscription(t, name, lambda m, name=name: got.update([name]), qos)
            for name, t in topics.items()]
    try:
        assert ros.spin_until(lambda: set(got) == set(topics), START_S), \
            f"nothing on {set(topics) - set(got)} with {qos.reliability.name}\n{logs_of(log_dir)}"
    finally:
        for s in subs:
            ros.node.destroy_subscription(s)


def string_parameter(ros: harness.RosSession, node: str, name: str) -> str:
    client = ros.node.create_client(GetParameters, f"/{node}/get_parameters")
    try:
        (value,) = ros.call(client, GetParameters.Request(names=[name]), timeout_s=30.0).values
    finally:
        ros.node.destroy_client(client)
    assert value.type == ParameterType.PARAMETER_STRING, f"{node}.{name} has type {value.type}"
    return value.string_value


# ------------------------------------------------------------------------------- command lines
def by_name(nodes: list[lm.NodeProcess]) -> dict[str, lm.NodeProcess]:
    return {n.name: n for n in nodes}


def merged(node: lm.NodeProcess) -> dict:
    """The parameters the node ends up with (later files win; the node's block or ``/**``)."""
    out: dict = {}
    for content in node.parameters:
        for key in ("/**", node.name, f"/{node.name}"):
            out.update(content.get(key, {}).get("ros__parameters", {}))
    return out


def test_command_lines_are_what_launch_ros_builds(mirror):
    nodes = by_name(mirror.nodes("robot.launch.py"))
    assert set(nodes) == {"arm_node", "camera_node"}
    arm = nodes["arm_node"]
    assert arm.cmd[0] == str(mirror.prefix / "lib" / "se_robot" / "arm_node")
    assert arm.cmd[1:4] == ["--ros-args", "-r", "__node:=arm_node"]
    files = [arm.cmd[i + 1] for i, a in enumerate(arm.cmd) if a == "--params-file"]
    assert files[0] == str(mirror.prefix / "share" / "se_robot" / "config" / "ros" / "robot.yaml")
    assert len(files) == 2 and all(os.path.isfile(f) for f in files)
    # launch_ros reads a bare substitution as YAML ('0' -> 0): the files wrap strings, so they stay strings
    assert merged(nodes["camera_node"])["camera_source"] == "0"
    assert merged(arm)["arm_id"] == "" and merged(arm)["port"] == "/dev/ttyUSB0" and merged(arm)["autostart"] is True
    assert lm.LaunchContext({"x": "0"}).parameter_value("camera_source", lm.LaunchConfiguration("x")) == 0
    assert merged(by_name(mirror.nodes("robot.launch.py", {"autostart": "false"}))["arm_node"])["autostart"] is False

    assert set(by_name(mirror.nodes("robot.launch.py", {"use_sim": "true"}))) == {"sim_node"}
    with pytest.raises(ValueError, match="none of true"):
        mirror.nodes("robot.launch.py", {"use_sim": "yes please"})
    assert merged(by_name(mirror.nodes("sim.launch.py", {"image_size": "96"}))["sim_node"])["image_width"] == 96

    teleop = by_name(mirror.nodes("teleop.launch.py"))
    assert set(teleop) == {"arm_node", "camera_node", "teleop_node"}
    assert teleop["teleop_node"].cmd[:2] == ["xterm", "-e"]   # the keyboard gets a terminal of its own
    gamepad = by_name(mirror.nodes("teleop.launch.py", {"device": "gamepad"}))["teleop_node"]
    assert gamepad.cmd[0].endswith("lib/se_robot/teleop_node") and merged(gamepad)["device"] == "gamepad"

    assert set(by_name(mirror.nodes("train.launch.py"))) == {"sim_node", "learner_node"}
    split = by_name(mirror.nodes("train.launch.py", {"mode": "split", "learner_here": "false"}))
    assert set(split) == {"sim_node", "actor_node"} and merged(split["actor_node"])["algo"] == "sac"


#: launch arguments that together reach every Node action of each file
VARIANTS = {"robot.launch.py": [{}, {"use_sim": "true"}], "sim.launch.py": [{}],
            "teleop.launch.py": [{}, {"use_sim": "true", "device": "gamepad"}],
            "train.launch.py": [{}, {"use_sim": "false", "mode": "split"}]}


@pytest.mark.parametrize("launch_file", sorted(VARIANTS))
def test_every_parameter_a_launch_file_passes_is_declared_with_its_type(mirror, launch_file):
    """Each node's parameters, as its files and overrides give them, are parameters the node
    declares, of the declared type and in range (a string typed as an integer fails here)."""
    assert set(VARIANTS) == {p.name for p in (ROOT / "launch").glob("*.launch.py")}
    executables = set()
    for args in VARIANTS[launch_file]:
        for node in mirror.nodes(launch_file, args):
            executables.add(node.executable)
            assert node.executable in lm.console_scripts(ROOT) and node.name == node.executable
            values = merged(node)
            assert values, f"{launch_file}: {node.name} gets no parameters"
            block = {node.name: {"ros__parameters": values}}
            assert ros_params.check_parameters_file(block, ros_params.NODE_PARAMS, f"{launch_file} {args}") == []
    assert executables


# ------------------------------------------------------------------------------ started for real
def test_sim_launch_twin_is_active_and_default_qos_receives_every_sensor_topic(mirror, tmp_path):
    with launched(mirror, "sim.launch.py", {}, tmp_path), harness.ros_session(DOMAIN) as ros:
        wait_for_nodes(ros, {"sim_node"}, tmp_path)
        wait_active(ros, "sim_node", tmp_path)
        receive_all(ros, TWIN_TOPICS, tmp_path)
        # se_robot's own subscribers are best effort: they match the reliable publishers too
        receive_all(ros, {"/joint_states": JointState}, tmp_path, SENSOR_QOS)
        assert string_parameter(ros, "sim_node", "task") == "reach"


def test_qos_overrides_choose_best_effort_per_topic(tmp_path):
    log = tmp_path / "sim_node.log"
    proc = harness.start_node("sim_node", DOMAIN, {"qos_overrides./joint_states.publisher.reliability": "best_effort",
                                                   "camera_rate_hz": 5.0}, log_path=str(log))
    try:
        with harness.ros_session(DOMAIN) as ros:
            def reliability(topic: str) -> ReliabilityPolicy | None:
                infos = ros.node.get_publishers_info_by_topic(topic)
                return infos[0].qos_profile.reliability if infos else None

            assert ros.spin_until(lambda: reliability("/camera/image_raw") is not None, START_S), log.read_text()
            assert reliability("/joint_states") == ReliabilityPolicy.BEST_EFFORT
            assert reliability("/camera/image_raw") == ReliabilityPolicy.RELIABLE
            receive_all(ros, {"/joint_states": JointState}, tmp_path, SENSOR_QOS)
    finally:
        assert harness.stop_node(proc) == 0, log.read_text()[-3000:]


def test_robot_launch_arm_and_camera_on_the_emulator(mirror, tmp_path):
    from se_robot.arm import load_arm
    from se_robot.hardware.calibration import DATA_DIR_ENV
    from se_robot.hardware.emulator import emulator_calibration_path
    from se_robot.hardware.mjpeg_server import MjpegServer

    # the user calibrated this arm once (se-robot calibrate --arm-id launch_test): arm_node finds it
    calibration_dir = Path(os.environ[DATA_DIR_ENV]) / "calibration"
    calibration_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(emulator_calibration_path(load_arm("so101")), calibration_dir / "launch_test.yaml")
    link = tmp_path / "arm_pty"
    emulator = subprocess.Popen([sys.executable, "-m", "se_robot.cli", "emulate", "--link", str(link)],
                                env=lm.process_env(dict(os.environ), ROOT, Path(sys.prefix)),
                                stdout=open(tmp_path / "emulator.log", "w"), stderr=subprocess.STDOUT,
                                start_new_session=True)
    frame = np.full((48, 64, 3), 90, np.uint8)
    try:
        deadline = time.monotonic() + START_S
        while not link.exists() and time.monotonic() < deadline and emulator.poll() is None:
            time.sleep(0.1)
        assert link.exists(), (tmp_path / "emulator.log").read_text()
        with MjpegServer(lambda: frame, fps=15.0) as camera:
            args = {"port": str(link), "arm_id": "launch_test", "camera_source": camera.url}
            with launched(mirror, "robot.launch.py", args, tmp_path), harness.ros_session(DOMAIN) as ros:
                wait_for_nodes(ros, {"arm_node", "camera_node"}, tmp_path)
                wait_active(ros, "arm_node", tmp_path)
                receive_all(ros, {k: v for k, v in TWIN_TOPICS.items() if k != "/sim/task_state"}, tmp_path)
                assert string_parameter(ros, "camera_node", "camera_source") == camera.url
    finally:
        harness.stop_node(emulator)


def test_train_launch_puts_each_node_on_the_graph_once(mirror, tmp_path):
    with launched(mirror, "train.launch.py", {"algo": "sac"}, tmp_path), harness.ros_session(DOMAIN) as ros:
        # the learner's env talks to sim_node through a helper node of its own name (ros_robot),
        # not a second learner_node (launch's __node:= remap must not reach the helper's context)
        counts = wait_for_nodes(ros, {"sim_node", "learner_node", "ros_robot"}, tmp_path)
        assert counts["learner_node"] == 1
        wait_active(ros, "sim_node", tmp_path)


def test_teleop_launch_keyboard_needs_a_terminal(mirror, tmp_path):
    controller, tty = os.openpty()
    try:
        args = {"use_sim": "true", "terminal": "", "device_path": os.ttyname(tty)}
        with launched(mirror, "teleop.launch.py", args, tmp_path), harness.ros_session(DOMAIN) as ros:
            wait_for_nodes(ros, {"sim_node", "teleop_node"}, tmp_path)
            wait_active(ros, "sim_node", tmp_path)
            commands: list[Float64MultiArray] = []
            ros.node.create_subscription(Float64MultiArray, "/arm/joint_commands", commands.append, DEFAULT_QOS)

            def press_forward() -> bool:   # 'w' on the keyboard's tty: +x, the arm is commanded
                os.write(controller, b"w")
                ros.spin_for(0.05)
                return bool(commands)

            assert ros.spin_until(press_forward, START_S), f"no command from the keyboard\n{logs_of(tmp_path)}"
    finally:
        os.close(controller)
        os.close(tty)
    # no terminal and no tty: the node says so and exits, instead of reading a pipe forever
    (teleop,) = [n for n in mirror.nodes("teleop.launch.py", {"use_sim": "true", "terminal": ""})
                 if n.name == "teleop_node"]
    out = subprocess.run(teleop.cmd, env=lm.process_env(harness.node_env(DOMAIN), ROOT, mirror.prefix),
                         stdin=subprocess.PIPE, capture_output=True, text=True, timeout=START_S)
    assert out.returncode != 0 and "standard input is not one" in out.stderr + out.stdout, out.stderr
