"""Homing from under the floor (issue 17): every goal ``drive_home`` sends keeps the lowest link
where it is or higher while it is under the floor clearance, stays within the step cap of the
measured pose and inside the soft limits; poses the arm can climb out of are homed; a pose no
safe move leaves ends in a ``HomingError`` that says what blocked it and what a person should do.

Goals are recorded through the ``Robot`` interface (the instance's ``send``), as ``drive_home``
sees it, so the same checks hold for any backend.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from se_robot.arm import load_arm  # noqa: E402
from se_robot.homing import HomingPlan  # noqa: E402
from se_robot.robot import HomingError  # noqa: E402
from se_robot.safety import SafetyFilter, soft_limits  # noqa: E402
from se_robot.sim.kinematics import Kinematics  # noqa: E402
from se_robot.sim.twin_robot import TwinRobot  # noqa: E402

pytestmark = pytest.mark.timeout(300)

ARM = load_arm("so101")
KIN = Kinematics(ARM)
S = ARM.safety
FLOOR = S.floor_z + S.floor_clearance_m
CAP = S.max_joint_step_rad
LOWER, UPPER = soft_limits(ARM)

# Drawn as ``python -m benchmarks homing --seed 0`` draws them (poses 0, 3 and 24 there): a
# link 0.6 to 4.0 cm under the floor clearance, pressed into the twin's table.
ON_THE_TABLE = [
    [0.4095, 0.8032, 0.1483, 1.4792, 1.7056, -0.0464],
    [-1.1539, 1.5474, -0.4586, -1.3413, 0.6972, 1.1553],
    [-1.1588, 0.477, 0.9821, 0.3628, -1.6654, 0.1029],
]
# Pose 17 of the same draw: the arm folded back over its base, the gripper behind the workspace
# face x = 0.05 m. Every way home first takes the gripper further behind that face (the filter
# forbids it) or a link deeper under the floor, so no command may leave it.
FOLDED_BACK = [-0.4063, 1.7221, 1.4407, -1.1832, 0.4858, 0.8551]


def _clearance(q: np.ndarray) -> float:
    return float(KIN.link_points(q)[:, 2].min() - FLOOR)


def _recording(robot: TwinRobot) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """(measured, sent, held) for every command ``drive_home`` sends through ``robot``."""
    log: list[tuple[np.ndarray, np.ndarray, bool]] = []
    send = robot.send

    def send_and_record(target: np.ndarray):
        q = robot.read().positions
        cmd = send(target)
        log.append((q, cmd.positions.copy(), cmd.held))
        return cmd
    robot.send = send_and_record
    return log


def _assert_safe(log: list[tuple[np.ndarray, np.ndarray, bool]]) -> None:
    assert log
    for q, goal, held in log:
        if held:
            continue
        assert np.abs(goal - q).max() <= CAP + 1e-9, (q, goal)
        assert np.all(goal >= np.minimum(LOWER, q) - 1e-9) and np.all(goal <= np.maximum(UPPER, q) + 1e-9)
        # under the floor clearance the lowest link never goes lower (0.1 mm: numerical noise)
        assert _clearance(goal) >= min(_clearance(q), 0.0) - 1e-4, (q, goal)


@pytest.mark.parametrize("pose", ON_THE_TABLE)
def test_twin_homes_from_the_table_without_pressing_a_link_deeper(pose):
    q = np.array(pose)
    assert _clearance(q) < 0
    robot = TwinRobot(ARM)
    robot.connect()
    robot.place(q)
    log = _recording(robot)
    try:
        robot.home(tolerance_rad=0.05, timeout_s=20.0)
        assert np.abs(robot.read().positions - ARM.home).max() <= 0.05
    finally:
        robot.close()
    _assert_safe(log)


def test_folded_back_pose_fails_fast_saying_what_blocked_it():
    robot = TwinRobot(ARM)
    robot.connect()
    robot.place(np.array(FOLDED_BACK))
    log = _recording(robot)
    try:
        with pytest.raises(HomingError, match="by hand") as err:
            robot.home(tolerance_rad=0.05, timeout_s=20.0)
    finally:
        robot.close()
    assert "under the floor clearance" in str(err.value) or "outside the workspace" in str(err.value)
    _assert_safe(log)


def test_every_planned_goal_is_safe_from_random_sub_floor_poses():
    """Kinematics only (the arm lands where the filter sends it): 15 sub-floor poses, 40 ticks
    each; every goal the plan aims at and the filter passes keeps the lowest link no lower."""
    rng = np.random.default_rng(1)
    rules = SafetyFilter(ARM, Kinematics(ARM))
    tried = moved = 0
    while tried < 15:
        q = rng.uniform(ARM.lower, ARM.upper)
        if _clearance(q) >= 0:
            continue
        tried += 1
        plan = HomingPlan(ARM, Kinematics(ARM), 0.05)
        for _ in range(40):
            goal = plan.target(q)
            if goal is None:
                break
            assert np.abs(goal - q).max() <= CAP + 1e-9
            sent = rules.filter(goal, q).positions
            assert _clearance(sent) >= min(_clearance(q), 0.0) - 1e-6
            moved += 1
            q = sent
    assert moved > 0


def test_straight_home_shortcut_returns_what_the_full_ranking_returns():
    """``target`` tries straight home alone when it violates nothing; that must be the move the
    full ranking of every candidate would have picked, from clear and from sub-floor poses."""
    arm = load_arm("so101")
    kin = Kinematics(arm)
    rng = np.random.default_rng(7)
    shortcut = 0
    for _ in range(60):
        plan = HomingPlan(arm, kin, 0.05)   # fresh: no move set aside, as the ranking below assumes
        q = np.clip(arm.home + rng.uniform(-1.0, 1.0, arm.n_joints), plan.lower, plan.upper)
        v0, c0 = plan.violation(q), plan.clearance(q)
        _, goals, potentials = plan._moves(q, v0)
        np.testing.assert_array_equal(potentials, [plan.potential(goal) for goal in goals])
        ranked = goals[np.argsort(potentials, kind="stable")]
        expected = next((goal for goal in ranked
                         if not (cmd := plan.rules.filter(goal, q)).held and plan._admissible(cmd.positions, q, v0, c0)),
                        None)
        got = plan.target(q)
        shortcut += plan.move == ("home",)
        if expected is None:
            assert got is None
        else:
            np.testing.assert_array_equal(got, expected)
    assert shortcut > 0   # the shortcut was taken at least once, so it was tested
