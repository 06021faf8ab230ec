"""``python -m benchmarks bus``: time one control tick (sync read of every joint + sync write of every goal).

It starts the byte-level emulator on a pty in this process and measures the round trip through the
real driver code (``--wire-baud`` adds the time replies would spend on a real wire). The same loop
on a user's rig is ``se-robot doctor --port PORT --timing`` (``se_robot.hardware.rig_check``);
``--port`` here measures a real bus too (goals equal to the present positions, so nothing moves).
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bus", help="time of one servo-bus control tick on the emulator",
                              description=__doc__)
    p.add_argument("--arm", default="so101", help="arm name or YAML path (default: so101)")
    p.add_argument("--protocol", choices=("feetech", "dynamixel"), default=None,
                   help="protocol of the emulator (default: the arm's own; ignored with --port)")
    p.add_argument("--port", default=None, help="a real serial port (default: an emulated one)")
    p.add_argument("--wire-baud", type=int, default=0,
                   help="emulator delays replies by their time on a wire at this baud rate (default: 0 = pty speed)")
    p.add_argument("--ticks", type=int, default=1000, help="control ticks to time")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from se_robot.arm import load_arm
    from se_robot.hardware.emulator import VirtualArm, servo_model_for
    from se_robot.hardware.rig_check import time_control_ticks
    from se_robot.hardware.servo_bus import open_bus
    from se_robot.hardware.servo_emulator import RealityGap

    arm = load_arm(args.arm)
    protocol = arm.bus.protocol if args.port else (args.protocol or arm.bus.protocol)
    model = servo_model_for(arm, protocol)
    virtual = None if args.port else VirtualArm(arm, protocol=protocol, gap=RealityGap(wire_baudrate=args.wire_baud)).start()
    port = args.port or virtual.port
    bus = open_bus(port, protocol, model, arm.bus.baudrate)
    ids = arm.servo_ids
    try:
        times = time_control_ticks(bus, ids, args.ticks)
    finally:
        bus.transport.close()
        if virtual is not None:
            virtual.stop()
    ms = times * 1e3
    where = args.port or f"emulated {protocol} bus on a pty" + (
        f" (replies delayed as at {args.wire_baud} baud)" if args.wire_baud else "")
    print(f"control tick (sync read {len(ids)} servos + sync write) on {where}, {args.ticks} ticks:")
    print(f"  median {np.median(ms):.3f} ms  p90 {np.percentile(ms, 90):.3f} ms  p99 {np.percentile(ms, 99):.3f} ms"
          f"  max {ms.max():.3f} ms  -> {1e3 / np.median(ms):.0f} Hz possible")
    c = bus.counters
    print(f"  retries {c.retries}  timeouts {c.timeouts}  corrupt {c.corrupt_packets}  garbage bytes {c.garbage_bytes}")
    return 0
