"""Holds that hold, stops that stop: SerialArm against the emulator (MuJoCo twin physics, with
gravity) over a pty, and the twin robot, checked at the bus (the emulator's goal log).

Issue 17: a held arm used to sag (goal = measured position every tick ratcheted shoulder_lift
0.71 -> 0.81 rad), a latch wrote nothing, the step cap used a reading up to 0.25 s old, homing
could not leave a pose under the floor, and a second driver could open the same port.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from se_robot.arm import load_arm  # noqa: E402
from se_robot.estop import FaultKind, SafetyFault  # noqa: E402
from se_robot.hardware.emulator import VirtualArm  # noqa: E402
from se_robot.hardware.serial_arm import SerialArm  # noqa: E402
from se_robot.hardware.transport import PortInUseError  # noqa: E402

pytestmark = pytest.mark.timeout(300)

ARM = load_arm("so101")
N = ARM.n_joints
CAP = ARM.safety.max_joint_step_rad
OVERLOAD = 0x20  # Feetech status error bit
LIFT = ARM.joint_names.index("shoulder_lift")


def _arm(virtual: VirtualArm, arm=ARM) -> SerialArm:
    """Generous bus timeouts: the twin emulator shares a loaded machine with the test."""
    return SerialArm(arm, virtual.port, virtual.calibration, timeout_s=0.25, retries=4)


def _goals(virtual: VirtualArm, since: int = 0) -> list[np.ndarray]:
    log = virtual.emulator.goal_log[since:]
    return [virtual.calibration.ticks_to_rad(np.array([g.ticks for g in log[i:i + N]], dtype=np.float64),
                                             ARM.joint_names) for i in range(0, len(log) - N + 1, N)]


def _drive(arm: SerialArm, target: np.ndarray, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        arm.send_joint_targets(target)
        time.sleep(0.02)


def _lifted() -> np.ndarray:
    target = ARM.home.copy()
    target[LIFT] = 0.71
    return target


@pytest.mark.parametrize("how", ["hold", "rejected_command", "watchdog"])
def test_a_held_arm_does_not_sag(how):
    with VirtualArm(ARM, physics="twin") as virtual, _arm(virtual) as arm:
        arm.torque_on()
        _drive(arm, _lifted(), 2.0)
        arm.read_state()  # a round trip: the emulator has processed every write
        goal = _goals(virtual)[-1]
        assert abs(goal[LIFT] - 0.71) < 0.01
        n = len(virtual.emulator.goal_log)
        if how == "watchdog":
            arm.start_watchdog()
            time.sleep(4.0)
            arm.stop_watchdog()
            assert arm.counters["watchdog_trips"] == 1
        else:
            end = time.monotonic() + 4.0
            while time.monotonic() < end:
                cmd = arm.hold() if how == "hold" else arm.send_joint_targets(np.full(N, np.nan))
                assert cmd.held
                time.sleep(0.05)
        arm.read_state()  # a round trip: the emulator has processed every write
        for held_goal in _goals(virtual, n):  # every hold re-sent the last goal, never the reading
            np.testing.assert_allclose(held_goal, goal, atol=1e-9)
        # Position servos hold a goal against gravity with a small steady offset; re-writing the
        # reading instead ratcheted it down by 0.1 rad in 6 s.
        assert abs(virtual.joint_positions_rad()[LIFT] - goal[LIFT]) < 0.03


def test_after_torque_off_the_first_hold_takes_the_present_position():
    with VirtualArm(ARM) as virtual, _arm(virtual) as arm:
        arm.torque_on()
        _drive(arm, ARM.home + np.array([0.2, 0, 0, 0, 0, 0]), 0.5)
        arm.torque_off()
        virtual.physics.move_to(ARM.servo_ids[0], 2048 - 300)  # someone moves the limp arm by hand
        present = arm.read_state().positions
        cmd = arm.hold()
        np.testing.assert_allclose(cmd.positions, present)


@pytest.mark.parametrize("action", ["hold", "disable_torque"])
def test_a_fault_latch_writes_one_stop_then_nothing_and_reads_keep_working(action):
    arm_desc = dataclasses.replace(ARM, safety=dataclasses.replace(ARM.safety, estop_action=action))
    with VirtualArm(arm_desc) as virtual:
        arm = _arm(virtual, arm_desc).connect()
        arm.torque_on()
        start = arm.read_state().positions
        arm.send_joint_targets(start + np.array([CAP, 0, 0, 0, 0, 0]))  # moving when the fault comes
        arm.bus.ping(ARM.servo_ids[0])  # a round trip (no fault yet): that goal write was processed
        n = len(virtual.emulator.goal_log)
        virtual.emulator.set_fault(3, OVERLOAD)
        with pytest.raises(SafetyFault) as info:
            arm.read_state()
        assert info.value.kind is FaultKind.SERVO_STATUS and arm.estop.latched
        for _ in range(5):  # reads keep working under the latch, fault bits and all
            assert arm.read_state().positions.shape == (N,)
            assert arm.send_joint_targets(start).held
        arm.start_watchdog()
        time.sleep(3 * ARM.safety.watchdog_timeout_s)
        arm.disconnect()
        stops = _goals(virtual, n)
        torque = [virtual.emulator.register(s, "Torque_Enable") for s in ARM.servo_ids]
        if action == "hold":
            assert len(stops) == 1 and torque == [1] * N  # one hold, where the arm was, torque on
            assert np.abs(stops[0] - arm._last_state.positions).max() < 0.02
        else:
            assert stops == [] and torque == [0] * N
        assert arm.counters["estop_stops"] == 1


def test_an_operator_latch_stops_the_arm_where_it_is():
    with VirtualArm(ARM, physics="twin") as virtual, _arm(virtual) as arm:
        arm.torque_on()
        far = ARM.home + np.array([0.6, 0, 0, 0, 0, 0])
        for _ in range(4):
            arm.send_joint_targets(far)
        arm.estop.latch("operator pressed stop")  # as a teleop key or a ROS service would
        present = arm._last_state.positions
        time.sleep(0.5)
        # The stop is the present position, not the last goal the servos were coasting to.
        assert abs(virtual.joint_positions_rad()[0] - present[0]) < 0.03
        assert abs(_goals(virtual)[-1][0] - present[0]) < 1e-3


def test_the_step_cap_uses_the_last_goal_and_a_same_tick_reading():
    rng = np.random.default_rng(0)
    with VirtualArm(ARM) as virtual, _arm(virtual) as arm:
        arm.torque_on()
        readings: list[np.ndarray] = []
        real = arm.safety_filter.filter

        def recording(target, current, goal=None):
            readings.append(np.array(current))
            return real(target, current, goal)

        arm.safety_filter.filter = recording
        arm.read_state()
        n = len(virtual.emulator.goal_log)
        prev = _goals(virtual)[-1]
        for _ in range(150):
            arm.send_joint_targets(ARM.home + rng.uniform(-1.0, 1.0, N))
            time.sleep(rng.choice([0.0, 0.01, 0.1]))  # slow and fast ticks alike
        arm.read_state()
        goals = _goals(virtual, n)
        assert len(goals) == len(readings) == 150
        for goal, reading in zip(goals, readings):
            assert np.abs(goal - prev).max() <= CAP + 1e-9, "consecutive goals jumped more than the cap"
            assert np.abs(goal - reading).max() <= CAP + 1e-9, "a goal landed too far from the reading"
            prev = goal


def _under_the_floor() -> np.ndarray:
    """A pose with a link below the floor clearance whose straight way home first goes deeper
    (before issue 17 the filter held every homing command from here)."""
    from se_robot.sim.kinematics import Kinematics

    q = ARM.home.copy()
    q[1], q[2], q[3] = 0.4, 1.2, 0.8
    s = ARM.safety
    assert Kinematics(ARM).link_points(q)[:, 2].min() < s.floor_z + s.floor_clearance_m
    return q


def test_homing_climbs_out_from_under_the_floor_on_the_emulator():
    from se_robot.hardware.serial_robot import SerialRobot

    q = _under_the_floor()
    with VirtualArm(ARM) as virtual:
        for sid, ticks in zip(ARM.servo_ids, virtual.calibration.rad_to_ticks(q, ARM.joint_names)):
            virtual.physics.move_to(sid, float(ticks))  # left there with torque off, as after calibrate
        robot = SerialRobot(ARM, virtual.port, virtual.calibration, cameras={}, control_hz=50.0,
                            watchdog=False, timeout_s=0.25, retries=4)
        robot.connect()
        try:
            robot.home(tolerance_rad=0.03, timeout_s=60.0)
            assert np.abs(robot.read().positions - ARM.home).max() <= 0.03
        finally:
            robot.close()


def test_homing_climbs_out_from_under_the_floor_on_the_twin():
    from se_robot.sim.twin_robot import TwinRobot

    q = _under_the_floor()
    robot = TwinRobot(ARM)
    robot.connect()
    robot.place(q)
    robot.home(tolerance_rad=0.05, timeout_s=20.0)
    assert np.abs(robot.read().positions - ARM.home).max() <= 0.05


def test_homing_error_names_the_rule_that_blocked_it():
    from se_robot.homing import HomingPlan
    from se_robot.robot import HomingError
    from se_robot.safety import SafeCommand
    from se_robot.sim.kinematics import Kinematics

    plan = HomingPlan(ARM, Kinematics(ARM), 0.02, " on /dev/ttyTEST")
    held = SafeCommand(ARM.home.copy(), False, True, ("joint_step", "floor", "current_unsafe"))
    with pytest.raises(HomingError, match="rules: floor, current_unsafe"):
        for _ in range(plan.held_limit):
            plan.target(ARM.home)
            plan.record(held, ARM.home)


def test_the_port_is_opened_exclusively():
    with VirtualArm(ARM) as virtual, _arm(virtual) as arm:
        arm.torque_on()
        with pytest.raises(PortInUseError, match=virtual.port):
            _arm(virtual).connect()
        code = ("import sys\nfrom se_robot.hardware.transport import SerialTransport, PortInUseError\n"
                "try:\n    SerialTransport(sys.argv[1]).open()\nexcept PortInUseError as e:\n"
                "    print(e); sys.exit(3)\n")
        other = subprocess.run([sys.executable, "-c", code, virtual.port], capture_output=True, text=True,
                               timeout=120, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        assert other.returncode == 3, other.stderr
        assert virtual.port in other.stdout and "another process" in other.stdout
        arm.send_joint_targets(ARM.home)  # the first driver is untouched
        assert not arm.estop.latched


def test_the_twin_holds_and_stops_as_the_arm_does():
    from se_robot.sim.twin_robot import TwinRobot

    robot = TwinRobot(ARM)
    robot.connect()
    target = _lifted()
    for _ in range(40):
        robot.send(target)
        robot.advance(0.05)
    goal = robot._goal.copy()
    for _ in range(60):  # 6 s of physics of rejected commands: the goal is kept, nothing sags
        assert robot.send(np.full(N, np.nan)).held
        robot.advance(0.1)
    np.testing.assert_array_equal(robot._goal, goal)
    assert abs(robot.read().positions[LIFT] - goal[LIFT]) < 0.03
    for _ in range(3):
        robot.send(ARM.home)  # moving again when someone latches
    robot.advance(0.02)
    robot.estop.latch("fault elsewhere")  # not trigger_estop: any latch stops the twin
    np.testing.assert_allclose(robot._goal, robot.read().positions)
