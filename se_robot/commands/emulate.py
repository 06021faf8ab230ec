"""`se-robot emulate`: a virtual arm on a pseudo-terminal that any servo driver can open.

Prints the pty path (and keeps ``--link`` pointing at it), answers the chosen protocol with the
arm's servo ids, and with ``--physics twin`` drives the MuJoCo twin in real time; ``--camera-port``
serves the twin's camera as MJPEG over HTTP. Runs until Ctrl-C (or ``--seconds``).

The emulated servos were "assembled" with the emulator's factory calibration
(``config/arms/<arm>_emulator_calibration.yaml``, or ``--calibration``); its path is printed, and
a driver is given it explicitly, e.g. ``se-robot record --backend hardware --port PTY
--calibration PATH``. Or calibrate the virtual arm as a real one:
``se-robot calibrate --port PTY --arm-id virtual_so101``.

``--gap mild|hard|FILE`` makes the emulated world differ from the training twin the way a real
setup does (camera pose and lens, light, colours, image noise, servo gains, cube, latency): one
draw per session from ``--gap-seed``, printed at start. Presets are in ``config/gaps/``; a file
has the format of ``config/randomization/`` (docs/randomization.md).
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("emulate", help="serve a virtual servo arm on a pty", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arm", default="so101", help="arm name or YAML path (default: so101)")
    p.add_argument("--calibration", default=None,
                   help="the emulated arm's factory calibration YAML "
                        "(default: config/arms/<arm>_emulator_calibration.yaml)")
    p.add_argument("--protocol", choices=("feetech", "dynamixel"), default=None,
                   help="wire protocol (default: the arm's own)")
    p.add_argument("--physics", choices=("first_order", "twin"), default=None,
                   help="servo model: first_order, or the MuJoCo twin (default: twin with a camera, else first_order)")
    p.add_argument("--link", default=None, help="also create this symlink to the pty, e.g. /tmp/se_robot_arm")
    p.add_argument("--camera-port", type=int, default=None, help="serve the twin's camera as MJPEG on this port")
    p.add_argument("--camera", default="scene", help="twin camera to stream (scene | wrist)")
    p.add_argument("--task", default="reach", help="twin task scene (reach | push | lift)")
    p.add_argument("--scene-port", type=int, default=None,
                   help="serve the scripted scene operator on localhost:PORT (twin physics): an env in another "
                        "process restores the cube between episodes with operator=http://127.0.0.1:PORT")
    p.add_argument("--gap", default=None,
                   help="twin reality gap: a preset (mild | hard, config/gaps/) or a YAML file; implies --physics twin")
    p.add_argument("--gap-seed", type=int, default=0, help="seed of the gap's one draw for this session (default: 0)")
    p.add_argument("--gap-control-hz", type=float, default=10.0,
                   help="control rate a gap's latency_ticks are counted at (default: 10, the envs' default)")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long (default: run until Ctrl-C)")
    p.add_argument("--noise-ticks", type=float, default=0.0, help="reality gap: position noise std (ticks)")
    p.add_argument("--latency-ms", type=float, default=0.0, help="reality gap: command latency (ms)")
    p.add_argument("--drop", type=float, default=0.0, help="reality gap: probability of a dropped packet")
    p.add_argument("--corrupt", type=float, default=0.0, help="reality gap: probability of a corrupted reply")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import signal
    import time

    from se_robot.arm import load_arm
    from se_robot.hardware.emulator import VirtualArm, describe_gap
    from se_robot.hardware.servo_emulator import RealityGap

    arm = load_arm(args.arm)
    physics = args.physics or ("twin" if args.camera_port is not None or args.scene_port is not None
                               or args.gap is not None else "first_order")
    if args.gap is not None and physics != "twin":
        raise SystemExit("se-robot emulate: --gap changes the twin's world; it needs --physics twin")
    gap = RealityGap(position_noise_ticks=args.noise_ticks, command_latency_s=args.latency_ms / 1e3,
                     drop_probability=args.drop, corrupt_probability=args.corrupt)
    virtual = VirtualArm(arm, protocol=args.protocol, physics=physics, calibration=args.calibration, gap=gap,
                         link=args.link, camera_port=args.camera_port, camera=args.camera, task=args.task,
                         scene_port=args.scene_port, twin_gap=args.gap, twin_gap_seed=args.gap_seed,
                         gap_control_hz=args.gap_control_hz)

    def _terminate(signum, frame):  # systemd, docker, ros2 launch stop with SIGTERM: clean up the same way
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    virtual.start()
    try:
        print(f"pty: {virtual.emulator.port}", flush=True)
        if args.link:
            print(f"link: {args.link}", flush=True)
        print(f"protocol: {virtual.protocol} ({virtual.model.name}), servo ids {arm.servo_ids}, "
              f"physics: {physics}", flush=True)
        if virtual.calibration_path is not None:
            print(f"calibration: {virtual.calibration_path} (give it to drivers with --calibration)", flush=True)
        else:
            print(f"calibration: servos centred, no file; calibrate the virtual arm with se-robot calibrate "
                  f"--port {virtual.port} --arm {args.arm} --arm-id ID", flush=True)
        if virtual.gap_draw is not None:
            print(f"reality gap: {args.gap}, seed {args.gap_seed}, drawn once for this session:\n"
                  f"{describe_gap(virtual.gap_draw, virtual.gap_latency_s)}", flush=True)
        if virtual.camera_url:
            print(f"camera: {virtual.camera_url}", flush=True)
        if virtual.scene_url:
            print(f"scene operator: {virtual.scene_url} (give it to envs as operator=, record --scene-operator)",
                  flush=True)
        deadline = None if args.seconds is None else time.monotonic() + args.seconds
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        virtual.stop()
        print(f"served {virtual.emulator.instructions_seen} instructions, "
              f"{len(virtual.emulator.goal_log)} goal writes", flush=True)
    return 0
