"""``python -m benchmarks homing``: how often homing recovers a pose below the floor clearance,
and whether any homing goal was unsafe on the way.

Draws poses uniformly inside the joint limits, keeps those with a link under ``floor_z +
floor_clearance_m`` (an arm left on the table with torque off, or pushed there), puts the twin
there and runs ``robot.home`` (every command through the safety filter). Prints how many reached
home, split by how deep the lowest link started (the twin's table top is 4 cm thick: a link more
than that under it is below the slab, where no real arm on the table can be and where the
twin's contacts hold it), and an audit of every goal sent: goals that lowered the lowest link
further under the floor clearance than the arm measured at that tick, goals more than the step
cap from the measured pose, goals outside the soft joint limits (widened to include the measured
pose, as the filter's rule is). For each failure: the pose, its depth and the first words of the
``HomingError``. Then the cost: CPU seconds in all and per goal sent, the share of them in
``HomingPlan.target`` (per call), and a checksum of the goals sent (equal checksums: the same goals;
the twin is deterministic, so a change that keeps every goal keeps the checksum).

``--clear-poses N`` times the plan instead: ``HomingPlan.target`` along the way home from N
poses clear of the floor and the workspace edges (the pose an episode ends in), with the arm
taken to follow each goal exactly, and prints its CPU time per tick and a checksum of the goals
(equal checksums: the same goals).
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
    p.add_argument("--slab-m", type=float, default=0.04, help="depth that splits the table (twin's table thickness)")
    p.add_argument("--clear-poses", type=int, default=0, metavar="N",
                   help="time HomingPlan.target from N clear poses instead (CPU ms per tick, goal checksum)")
    p.add_argument("--rounds", type=int, default=3, help="with --clear-poses: timing rounds (the best is printed)")
    p.set_defaults(func=run)


def time_plan(arm_name: str, poses: int, rounds: int, seed: int, tolerance_rad: float) -> tuple[int, float, float]:
    """Ticks, best CPU seconds per ``HomingPlan.target`` call over ``rounds``, and the goals' sum."""
    import time

    import numpy as np

    from se_robot.arm import load_arm
    from se_robot.homing import HomingPlan
    from se_robot.sim.kinematics import Kinematics

    arm = load_arm(arm_name)
    kin = Kinematics(arm)
    probe, rng = HomingPlan(arm, kin, tolerance_rad), np.random.default_rng(seed)
    starts: list[np.ndarray] = []
    while len(starts) < poses:
        q = np.clip(arm.home + rng.uniform(-0.8, 0.8, arm.n_joints), probe.lower, probe.upper)
        if probe.violation(q) == 0.0 and probe.clearance(q) > 0.02:
            starts.append(q)
    best, ticks, checksum = float("inf"), 0, 0.0
    for _ in range(rounds):
        ticks, cpu, checksum = 0, 0.0, 0.0
        for q0 in starts:
            plan, q = HomingPlan(arm, kin, tolerance_rad), q0.copy()
            for _ in range(200):
                t0 = time.process_time()
                goal = plan.target(q)
                cpu += time.process_time() - t0
                ticks += 1
                if goal is None:
                    break
                checksum += float(goal.sum())
                q = goal
                if np.abs(q - arm.home).max() < tolerance_rad:
                    break
        best = min(best, cpu / ticks)
    return ticks, best, checksum


def run(args: argparse.Namespace) -> int:
    import os
    import time

    import numpy as np

    import se_robot.robot as robot_module
    from se_robot.arm import load_arm
    from se_robot.robot import HomingError
    from se_robot.safety import soft_limits
    from se_robot.sim.kinematics import Kinematics
    from se_robot.sim.twin_robot import TwinRobot

    if args.clear_poses:
        ticks, per_tick, checksum = time_plan(args.arm, args.clear_poses, args.rounds, args.seed, args.tolerance_rad)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"HomingPlan.target from {args.clear_poses} clear poses: {ticks} ticks, {per_tick * 1e3:.2f} ms CPU "
              f"per tick (best of {args.rounds}); goal checksum {checksum:.9f}; load average {load:.1f}")
        return 0
    arm = load_arm(args.arm)
    kin, s = Kinematics(arm), arm.safety
    floor = s.floor_z + s.floor_clearance_m
    lower, upper = soft_limits(arm)
    cap = s.max_joint_step_rad
    rng = np.random.default_rng(args.seed)
    poses: list[np.ndarray] = []
    while len(poses) < args.poses:
        q = rng.uniform(arm.lower, arm.upper)
        if kin.link_points(q)[:, 2].min() < floor:
            poses.append(q)
    audit = {"goals": 0, "deeper": 0, "worst_deeper_mm": 0.0, "over_cap": 0, "outside_limits": 0, "checksum": 0.0}

    def audited(robot: TwinRobot):
        send = robot.send

        def send_and_check(target: np.ndarray):
            q = robot.read().positions
            cmd = send(target)
            if cmd.held:
                return cmd
            goal = cmd.positions
            under0 = min(kin.link_points(q)[:, 2].min() - floor, 0.0)
            deeper = under0 - (kin.link_points(goal)[:, 2].min() - floor)
            audit["goals"] += 1
            if deeper > 1e-4:
                audit["deeper"] += 1
                audit["worst_deeper_mm"] = max(audit["worst_deeper_mm"], deeper * 1000)
            audit["over_cap"] += int(np.abs(goal - q).max() > cap + 1e-9)
            audit["outside_limits"] += int(np.any(goal < np.minimum(lower, q) - 1e-9) or
                                           np.any(goal > np.maximum(upper, q) + 1e-9))
            audit["checksum"] += float(goal.sum())
            return cmd
        robot.send = send_and_check  # drive_home sends through the instance: every goal is seen

    plan_cpu = {"s": 0.0, "calls": 0}
    plan_class = getattr(robot_module, "HomingPlan", None)  # absent before issue 17 (7897b48)
    plain_target = plan_class.target if plan_class is not None else None
    if plan_class is not None:
        def timed_target(plan, q):
            t0 = time.process_time()
            try:
                return plain_target(plan, q)
            finally:
                plan_cpu["s"] += time.process_time() - t0
                plan_cpu["calls"] += 1
        plan_class.target = timed_target  # drive_home builds its plan inside: timed through the class
    depth = [floor - kin.link_points(q)[:, 2].min() for q in poses]
    homed = [False] * len(poses)
    failures = []
    start, cpu_start = time.perf_counter(), time.process_time()
    for i, q in enumerate(poses):
        robot = TwinRobot(arm)
        robot.connect()
        robot.place(q)
        audited(robot)
        try:
            robot.home(args.tolerance_rad, args.timeout_s)
            homed[i] = True
        except HomingError as e:
            failures.append((i, q, str(e)))
        finally:
            robot.close()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    if plan_class is not None:
        plan_class.target = plain_target
    shallow = [i for i in range(len(poses)) if depth[i] <= args.slab_m]
    deep = [i for i in range(len(poses)) if depth[i] > args.slab_m]
    print(f"homed {sum(homed)} of {len(poses)} sub-floor poses (seed {args.seed}, {args.timeout_s:g} s limit, "
          f"tolerance {args.tolerance_rad} rad) in {wall:.0f} s; load average {os.getloadavg()[0]:.1f}")
    print(f"  lowest link at most {args.slab_m * 100:g} cm under the clearance: {sum(homed[i] for i in shallow)} "
          f"of {len(shallow)}; deeper (below the twin's table slab): {sum(homed[i] for i in deep)} of {len(deep)}")
    print(f"  goals sent: {audit['goals']}; lowering the lowest link under the clearance: {audit['deeper']} "
          f"(worst {audit['worst_deeper_mm']:.1f} mm); over the step cap from the reading: {audit['over_cap']}; "
          f"outside the soft limits: {audit['outside_limits']}")
    per_call = plan_cpu["s"] / max(plan_cpu["calls"], 1)
    print(f"  CPU {cpu:.1f} s, {cpu / max(audit['goals'], 1) * 1e3:.2f} ms per goal sent; HomingPlan.target "
          f"{plan_cpu['s']:.1f} s of it, {per_call * 1e3:.2f} ms per call ({plan_cpu['calls']} calls); "
          f"goal checksum {audit['checksum']:.9f}")
    for i, q, message in failures:
        print(f"  pose {i} {np.round(q, 2).tolist()} ({depth[i] * 100:.1f} cm deep): {message[:150]}")
    return 0
