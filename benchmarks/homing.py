"""``python -m benchmarks homing``: how often homing recovers a pose below the floor clearance.

Draws poses uniformly inside the joint limits, keeps those with a link under ``floor_z +
floor_clearance_m`` (an arm left on the table with torque off, or pushed there), puts the twin
there and runs ``robot.home`` (``se_robot.robot.drive_home``: every command through the safety
filter, which only lets a pose outside the envelope move in ways that reduce the violation).
Prints how many reached home and, for each that did not, the pose and the first words of the
``HomingError``.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("homing", help="share of sub-floor poses the twin homes from",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arm", default="so101", help="arm name or YAML path")
    p.add_argument("--poses", type=int, default=40, help="sub-floor poses to try")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout-s", type=float, default=20.0, help="homing time limit (twin seconds)")
    p.add_argument("--tolerance-rad", type=float, default=0.05)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from se_robot.arm import load_arm
    from se_robot.robot import HomingError
    from se_robot.sim.kinematics import Kinematics
    from se_robot.sim.twin_robot import TwinRobot

    arm = load_arm(args.arm)
    kin, s = Kinematics(arm), arm.safety
    floor = s.floor_z + s.floor_clearance_m
    rng = np.random.default_rng(args.seed)
    poses: list[np.ndarray] = []
    while len(poses) < args.poses:
        q = rng.uniform(arm.lower, arm.upper)
        if kin.link_points(q)[:, 2].min() < floor:
            poses.append(q)
    failures = []
    start = time.perf_counter()
    for i, q in enumerate(poses):
        robot = TwinRobot(arm)
        robot.connect()
        robot.place(q)
        try:
            robot.home(args.tolerance_rad, args.timeout_s)
        except HomingError as e:
            failures.append((i, q, str(e)))
        finally:
            robot.close()
    print(f"homed {len(poses) - len(failures)} of {len(poses)} sub-floor poses (seed {args.seed}, "
          f"{args.timeout_s:g} s limit, tolerance {args.tolerance_rad} rad) in {time.perf_counter() - start:.0f} s")
    for i, q, message in failures:
        print(f"  pose {i} {np.round(q, 2).tolist()}: {message[:140]}")
    return 0
