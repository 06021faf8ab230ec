"""arm_node against the servo emulator over its pty, through real DDS on loopback."""

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import pytest

import rclpy  # noqa: F401 - required: CI must fail, not skip, without it

from builtin_interfaces.msg import Duration  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint  # noqa: E402

from se_robot.arm import load_arm  # noqa: E402
from se_robot.nodes import conversions as conv  # noqa: E402
from tests.support import ros_harness as harness  # noqa: E402
from se_robot.nodes.runtime import COMMAND_QOS, DIAGNOSTICS_QOS, SENSOR_QOS  # noqa: E402

pytestmark = pytest.mark.timeout(150)

DOMAIN = harness.pick_domain_id(2)
ARM = load_arm("so101")
PAN = 0  # shoulder_pan index

COMMANDER = textwrap.dedent("""
    import time, numpy as np, rclpy
    from rclpy.node import Node
    from std_msgs.msg import Float64MultiArray
    from se_robot.nodes import conversions as conv
    from se_robot.nodes.runtime import COMMAND_QOS
    q = np.array([float(x) for x in "{q}".split(",")])
    rclpy.init(); n = Node("commander")
    pub = n.create_publisher(Float64MultiArray, "arm/joint_commands", COMMAND_QOS)
    print("ready", flush=True)
    while True:  # a slow ramp of the pan joint, 20 Hz, until killed
        q[0] += 0.01
        pub.publish(conv.array_msg(q)); time.sleep(0.05)
""")


@pytest.fixture(scope="module")
def rig():
    from se_robot.hardware.emulator import VirtualArm

    log = os.path.join(tempfile.gettempdir(), f"se_robot_arm_node_{os.getpid()}.log")
    with VirtualArm(ARM, physics="first_order") as varm:
        # The emulator answers from a Python thread of this test process: on a loaded CI machine a
        # reply can take longer than a real servo's, so the bus waits longer before giving up.
        proc = harness.start_node("arm_node", DOMAIN, {"port": varm.port, "calibration": str(varm.calibration_path),
                                                        "autostart": True, "state_rate_hz": 50.0,
                                                        "bus_timeout_s": 0.3, "bus_retries": 5,
                                                        "command_timeout_s": 0.25, "diagnostics_period_s": 0.2},
                                  log_path=log)
        try:
            with harness.ros_session(DOMAIN) as ros:
                states = []
                ros.node.create_subscription(JointState, "joint_states", states.append, SENSOR_QOS)
                assert ros.spin_until(lambda: bool(states), 30.0), open(log).read()
                pub = ros.node.create_publisher(Float64MultiArray, "arm/joint_commands", COMMAND_QOS)
                assert ros.spin_until(lambda: pub.get_subscription_count() > 0, 30.0), "arm_node never matched"
                yield varm, ros, pub, states
        finally:
            harness.stop_node(proc)


def measured(states):
    return conv.msg_to_joint_state(states[-1], ARM.joint_names)[0]


def stream(ros, pub, q, seconds, ramp_rad=0.0):
    """Publish q every 20 ms for ``seconds``, adding ``ramp_rad`` to the pan joint each time."""
    q = q.copy()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        q[PAN] += ramp_rad
        pub.publish(conv.array_msg(q))
        ros.spin_for(0.02)
    return q


def trigger(ros, name):
    client = ros.node.create_client(Trigger, name)
    try:
        return ros.call(client, Trigger.Request())
    finally:
        ros.node.destroy_client(client)


def goals_written(varm):
    return len(varm.emulator.goal_log)


def test_commands_and_trajectories_move_the_emulated_servos(rig):
    varm, ros, pub, states = rig
    q0 = varm.joint_positions_rad()
    target = q0.copy()
    target[PAN] += 0.3
    stream(ros, pub, target, 1.5)
    assert abs(varm.joint_positions_rad()[PAN] - target[PAN]) < 0.05
    ros.spin_until(lambda: abs(measured(states)[PAN] - target[PAN]) < 0.05, 5.0)
    assert abs(measured(states)[PAN] - target[PAN]) < 0.05  # JointState reports the bus

    traj_pub = ros.node.create_publisher(JointTrajectory, "arm/joint_trajectory", 10)
    msg = JointTrajectory(joint_names=["shoulder_pan"])
    msg.points = [JointTrajectoryPoint(positions=[float(q0[PAN] - 0.1)], time_from_start=Duration(sec=0, nanosec=500_000_000))]
    # DDS discovery of a new publisher takes a moment (longer on a loaded machine): a message sent
    # before the node's subscription matches is dropped, not queued.
    assert ros.spin_until(lambda: traj_pub.get_subscription_count() > 0, 10.0), "arm_node never matched"
    traj_pub.publish(msg)
    ros.spin_until(lambda: abs(varm.joint_positions_rad()[PAN] - (q0[PAN] - 0.1)) < 0.03, 10.0)
    assert abs(varm.joint_positions_rad()[PAN] - (q0[PAN] - 0.1)) < 0.03


def test_estop_service_stops_motion_at_the_bus(rig):
    varm, ros, pub, states = rig
    start = varm.joint_positions_rad()
    q = stream(ros, pub, start, 0.3, ramp_rad=0.01)  # moving at 0.5 rad/s
    assert trigger(ros, "/arm/estop").success
    ros.spin_for(0.3)
    stopped_at = varm.joint_positions_rad()
    writes = goals_written(varm)
    stream(ros, pub, q, 0.8, ramp_rad=0.01)  # commands keep coming: nothing may reach the bus
    assert goals_written(varm) == writes
    assert abs(varm.joint_positions_rad()[PAN] - stopped_at[PAN]) < 0.01
    assert trigger(ros, "/arm/reset").success
    stream(ros, pub, stopped_at, 0.3)
    assert goals_written(varm) > writes  # reset: commands flow again


def test_killing_the_commanding_node_makes_the_watchdog_hold(rig):
    varm, ros, pub, states = rig
    diags = []
    ros.node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, DIAGNOSTICS_QOS)
    q = varm.joint_positions_rad()
    code = COMMANDER.format(q=",".join(f"{v:.6f}" for v in q))
    commander = subprocess.Popen([sys.executable, "-c", code], env=harness.node_env(DOMAIN),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert commander.stdout.readline().strip() == "ready"
        assert ros.spin_until(lambda: varm.joint_positions_rad()[PAN] > q[PAN] + 0.03, 20.0), "commander never moved the arm"
    finally:
        commander.send_signal(signal.SIGKILL)
        commander.wait(5)
    ros.spin_for(1.0)  # > command_timeout_s: the node and SerialArm's own watchdog have held
    writes, pos = goals_written(varm), varm.joint_positions_rad()
    ros.spin_for(0.6)
    assert goals_written(varm) == writes, "the node kept driving the arm after its commander died"
    np.testing.assert_allclose(varm.joint_positions_rad(), pos, atol=0.01)

    def holds():
        for d in reversed(diags):
            for s in d.status:
                if s.name.endswith("loop"):
                    return int(next(kv.value for kv in s.values if kv.key == "watchdog_holds"))
        return 0
    assert ros.spin_until(lambda: holds() >= 1, 5.0)


def test_lifecycle_deactivate_holds_and_activate_resumes(rig):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    varm, ros, pub, states = rig
    change = ros.node.create_client(ChangeState, "/arm_node/change_state")
    get = ros.node.create_client(GetState, "/arm_node/get_state")
    try:
        assert ros.call(get, GetState.Request()).current_state.label == "active"
        req = ChangeState.Request(transition=Transition(id=Transition.TRANSITION_DEACTIVATE))
        assert ros.call(change, req).success
        ros.spin_for(0.2)
        writes = goals_written(varm)
        stream(ros, pub, varm.joint_positions_rad(), 0.5, ramp_rad=0.01)
        assert goals_written(varm) == writes  # inactive: commands do not reach the bus
        assert ros.call(get, GetState.Request()).current_state.label == "inactive"
        req = ChangeState.Request(transition=Transition(id=Transition.TRANSITION_ACTIVATE))
        assert ros.call(change, req).success
        stream(ros, pub, varm.joint_positions_rad(), 0.3)
        assert goals_written(varm) > writes
    finally:
        ros.node.destroy_client(change)
        ros.node.destroy_client(get)


def test_arm_node_reads_the_calibration_stored_for_its_arm_id(tmp_path, monkeypatch):
    from se_robot.hardware.calibration import calibration_file, save_calibration
    from se_robot.hardware.emulator import VirtualArm
    from se_robot.nodes.arm_node import make_serial_robot
    from se_robot.ros_params import ArmParams

    monkeypatch.setenv("SE_ROBOT_DATA_DIR", str(tmp_path))
    factory = VirtualArm(ARM).calibration
    save_calibration(factory, calibration_file("ros_so101"))
    robot = make_serial_robot(ArmParams(port="/dev/null-never-opened", arm_id="ros_so101"))
    assert robot.device.arm_id == "ros_so101" and robot.calibration == factory


def test_arm_node_without_a_calibration_refuses_to_configure_naming_the_command(tmp_path):
    """autostart: configure fails with the calibrate command in the log, and the node keeps running
    (unconfigured, so nothing was opened or powered)."""
    log = tmp_path / "arm_node.log"
    port = "/dev/se_robot_never_opened"
    proc = harness.start_node("arm_node", DOMAIN, {"port": port, "arm_id": "never_calibrated", "autostart": True},
                              log_path=str(log))
    try:
        expected = f"se-robot calibrate --port {port} --arm so101 --arm-id never_calibrated"
        deadline = time.monotonic() + 60.0
        while expected not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        text = log.read_text()
        assert "configure failed: CalibrationError" in text and expected in text, text
        assert proc.poll() is None, text
    finally:
        harness.stop_node(proc)
