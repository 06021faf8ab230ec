"""`se-robot calibrate`: record each joint's zero and range on the servo bus and write the YAML.

The calibration belongs to one physical arm, named by ``--arm-id`` (default: the arm's name,
e.g. ``so101``; give each arm its own id when there are several of a kind). A leader arm for
``se-robot record --teleop leader`` is looked up as ``<arm>_leader`` unless ``--leader-arm-id``
says otherwise; ``--leader`` calibrates under that id:

    se-robot calibrate --port /dev/ttyACM0 --arm so101                  # the follower: id so101
    se-robot calibrate --port /dev/ttyACM1 --arm so101 --leader         # the leader: id so101_leader
    se-robot calibrate --port /dev/ttyACM1 --arm so101 --arm-id so101_leader   # the same, spelled out

It is written to the user's data directory,
``$XDG_DATA_HOME/se_robot/calibration/<arm_id>.yaml`` (``~/.local/share/...`` by default,
``$SE_ROBOT_DATA_DIR`` overrides), where the drivers look it up by the same arm id; ``--out``
writes elsewhere, never into the installed package.

Interactive (default): torque is switched off, you put the arm in its home pose (``home`` in the
arm description) and press Enter, then move every joint through its whole range and press Enter
again. Non-interactive, for scripts and tests:
``--non-interactive --samples-from-bus --duration S`` takes the first sample as the home pose and
the extremes seen in S seconds as the range; ``--non-interactive --from-limit-registers`` takes
the present pose as home and the range from the servos' min/max position limit registers.

From LeRobot (an SO-100/SO-101 already calibrated with ``lerobot-calibrate``):
``--from-lerobot FILE`` converts LeRobot's calibration JSON (see
``se_robot.hardware.lerobot_calibration`` for the mapping) and writes it under ``--arm-id``; with
``--port`` it first checks that the servos still hold LeRobot's homing offsets:

    se-robot calibrate --from-lerobot ~/.cache/huggingface/lerobot/calibration/robots/so101_follower/my_arm.json \
        --arm-id my_so101 --port /dev/ttyACM0
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("calibrate", help="record servo zero and ranges, write the calibration YAML",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", default=None,
                   help="serial port of the servo bus (or the emulator's pty); optional with --from-lerobot")
    p.add_argument("--arm", default="so101", help="arm name or YAML path (default: so101)")
    p.add_argument("--arm-id", default=None,
                   help="your name for this physical arm, e.g. my_so101 (default: the arm's name, or "
                        "<arm>_leader with --leader)")
    p.add_argument("--leader", action="store_true",
                   help="this is a leader arm (moved by hand for --teleop leader): the arm id defaults to "
                        "<arm>_leader, where `se-robot record --teleop leader` looks")
    p.add_argument("--out", default=None,
                   help="where to write (default: <data dir>/calibration/<arm id>.yaml, see below)")
    p.add_argument("--invert", action="append", default=[], metavar="JOINT",
                   help="joint whose servo ticks decrease as the joint angle grows (repeatable)")
    p.add_argument("--non-interactive", action="store_true", help="no prompts (see below)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--samples-from-bus", action="store_true", help="range = extremes seen during --duration")
    mode.add_argument("--from-limit-registers", action="store_true", help="range = the servos' limit registers")
    p.add_argument("--from-lerobot", metavar="FILE", default=None,
                   help="import a calibration JSON written by LeRobot (SO-100/SO-101) instead of recording one")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of sampling (default: 10)")
    p.add_argument("--hz", type=float, default=50.0, help="sampling rate (default: 50)")
    p.set_defaults(func=run)


def _sample_once(bus, ids) -> dict[int, int]:
    raw = bus.sync_read(ids, ("Present_Position",))
    return {s: raw[s]["Present_Position"] for s in ids}


def _sample(bus, ids, duration_s: float, hz: float, stop=None) -> list[dict[int, int]]:
    """Present positions at ``hz`` for ``duration_s`` (or until ``stop`` is set)."""
    import time

    samples = []
    end = time.monotonic() + duration_s
    while (stop is None or not stop.is_set()) and (stop is not None or time.monotonic() < end):
        samples.append(_sample_once(bus, ids))
        time.sleep(1.0 / hz)
    return samples


def run(args: argparse.Namespace) -> int:
    import sys
    import threading

    from se_robot.arm import load_arm
    from se_robot.hardware.calibration import (calibration_file, calibration_from_recording, default_arm_id,
                                               default_leader_arm_id, inside_package, save_calibration)
    from se_robot.hardware.registers import get_model
    from se_robot.hardware.servo_bus import open_bus

    arm = load_arm(args.arm)
    unknown = [j for j in args.invert if j not in arm.joint_names]
    if unknown:
        print(f"se-robot calibrate: --invert {unknown}: not joints of {arm.name} ({arm.joint_names})", file=sys.stderr)
        return 2
    if args.from_lerobot is None and args.port is None:
        print("se-robot calibrate: --port is required (unless --from-lerobot FILE)", file=sys.stderr)
        return 2
    if args.non_interactive and not (args.samples_from_bus or args.from_limit_registers or args.from_lerobot):
        print("se-robot calibrate: --non-interactive needs --samples-from-bus or --from-limit-registers",
              file=sys.stderr)
        return 2
    arm_id = args.arm_id or (default_leader_arm_id(arm) if args.leader else default_arm_id(arm))
    try:
        out = args.out or calibration_file(arm_id)
    except ValueError as e:
        print(f"se-robot calibrate: --arm-id: {e}", file=sys.stderr)
        return 2
    if inside_package(out):
        print(f"se-robot calibrate: --out {out} is inside the installed se_robot package, which every arm on "
              f"this machine shares; leave --out out to write {calibration_file(arm_id)}", file=sys.stderr)
        return 2
    if args.from_lerobot is not None:
        return _import_lerobot(args, arm, arm_id, out)
    model = get_model(arm.bus.model)
    ids = arm.servo_ids
    directions = {j.servo_id: (-1 if j.name in args.invert else 1) for j in arm.joints}
    bus = open_bus(args.port, arm.bus.protocol, model, arm.bus.baudrate)
    try:
        for sid in ids:
            bus.write(sid, "Torque_Enable", 0)  # the arm must move freely by hand
        if args.from_limit_registers:
            home = bus.sync_read(ids, ("Present_Position",))
            home = {s: home[s]["Present_Position"] for s in ids}
            lo = {s: bus.read(s, "Min_Position_Limit") for s in ids}
            hi = {s: bus.read(s, "Max_Position_Limit") for s in ids}
        else:
            if args.non_interactive:
                samples = _sample(bus, ids, args.duration, args.hz)
            else:
                input(f"Torque is off. Put the {arm.name} arm in its home pose "
                      f"({dict(zip(arm.joint_names, arm.home.round(2)))} rad) and press Enter... ")
                first = _sample_once(bus, ids)
                stop = threading.Event()
                box: list = []
                worker = threading.Thread(target=lambda: box.extend(_sample(bus, ids, 0.0, args.hz, stop)))
                worker.start()
                try:
                    input("Now move every joint slowly through its whole range, then press Enter... ")
                finally:
                    stop.set()
                    worker.join()
                samples = [first] + box
            if not samples:
                print("se-robot calibrate: no samples recorded (duration too short?)", file=sys.stderr)
                return 2
            home = samples[0]
            lo = {s: min(x[s] for x in samples) for s in ids}
            hi = {s: max(x[s] for x in samples) for s in ids}
        try:
            cal = calibration_from_recording(arm, home, lo, hi, directions, model=model.name,
                                             ticks_per_rev=model.ticks_per_rev)
        except ValueError as e:
            print(f"se-robot calibrate: {e}", file=sys.stderr)
            return 1
    finally:
        bus.transport.close()
    _report(args, arm, arm_id, cal, save_calibration(cal, out))
    return 0


def _import_lerobot(args: argparse.Namespace, arm, arm_id: str, out) -> int:
    """``--from-lerobot``: convert LeRobot's file; with ``--port``, check the servos' homing offsets first."""
    import sys

    from se_robot.config import ConfigError
    from se_robot.hardware.calibration import save_calibration
    from se_robot.hardware.lerobot_calibration import (calibration_from_lerobot, read_lerobot_calibration,
                                                       servo_offset_mismatches)

    try:
        motors = read_lerobot_calibration(args.from_lerobot)
        cal = calibration_from_lerobot(arm, motors, str(args.from_lerobot))
    except ConfigError as e:
        print(f"se-robot calibrate: --from-lerobot: {e}", file=sys.stderr)
        return 1
    if args.port is not None:
        from se_robot.hardware.registers import get_model
        from se_robot.hardware.servo_bus import open_bus

        bus = open_bus(args.port, arm.bus.protocol, get_model(arm.bus.model), arm.bus.baudrate)
        try:
            bad = servo_offset_mismatches(motors, lambda sid: bus.read(sid, "Homing_Offset"))
        finally:
            bus.transport.close()
        if bad:
            print("se-robot calibrate: --from-lerobot: the servos do not hold this file's homing offsets: "
                  + "; ".join(bad) + ". Is this the arm the file belongs to? Connecting it once with LeRobot "
                  "(which writes the offsets) or recalibrating with se-robot fixes it.", file=sys.stderr)
            return 1
    _report(args, arm, arm_id, cal, save_calibration(cal, out))
    return 0


def _report(args: argparse.Namespace, arm, arm_id: str, cal, out) -> None:
    from se_robot.hardware.calibration import default_arm_id, default_leader_arm_id

    for name, j in cal.joints.items():
        print(f"  {name:14s} servo {j.servo_id}: zero {j.homing_offset_ticks:5d}  range {j.min_ticks}..{j.max_ticks}"
              f"  direction {j.direction:+d}")
    print(f"wrote {out}")
    if not args.out:
        if args.leader or arm_id == default_leader_arm_id(arm):
            flag = "" if arm_id == default_leader_arm_id(arm) else f" --leader-arm-id {arm_id}"
            print(f"arm id: {arm_id} (se-robot record --teleop leader{flag} finds it)")
        else:
            flag = "" if arm_id == default_arm_id(arm) else f" --arm-id {arm_id}"
            print(f"arm id: {arm_id} (the hardware backend finds it: se-robot record --backend hardware{flag})")
