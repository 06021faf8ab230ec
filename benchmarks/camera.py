"""``python -m benchmarks camera``: how old is the frame a control step gets, and how late does it arrive.

Without ``--source`` it serves numbered synthetic frames (or rendered twin frames with
``--source twin``) from an in-process ``MjpegServer`` at ``--fps`` and reads them back with
``OpenCVCamera`` over HTTP on loopback, so it can also report the produce -> grab latency (each
frame carries its number in a binary stripe). With a real source (``--source 0``, a URL, a file)
it reports frame age, delivered rate and the wait of ``read_newer_than`` only, as
``se-robot doctor --camera SOURCE --timing`` does on a user's rig (both sample with
``se_robot.hardware.rig_check.sample_frame_timing``).
"""

from __future__ import annotations

import argparse

_BITS = 16
_CELL_PX = 8


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("camera", help="camera frame age and latency at a given fps",
                              description=__doc__)
    p.add_argument("--source", default="synthetic",
                   help="synthetic | twin | a device index, path or URL (default: synthetic)")
    p.add_argument("--fps", type=float, default=30.0, help="stream rate of the built-in server")
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--seconds", type=float, default=5.0, help="how long to sample")
    p.add_argument("--control-hz", type=float, default=10.0, help="rate at which frame age is sampled")
    p.set_defaults(func=run)


def _stamp_number(frame, n: int) -> None:
    for bit in range(_BITS):
        frame[:_CELL_PX, bit * _CELL_PX:(bit + 1) * _CELL_PX] = 255 if (n >> bit) & 1 else 0


def _read_number(frame) -> int:
    n = 0
    for bit in range(_BITS):
        cell = frame[1:_CELL_PX - 1, bit * _CELL_PX + 1:(bit + 1) * _CELL_PX - 1]
        if cell.mean() > 127:
            n |= 1 << bit
    return n


def _frame_source(kind: str, width: int, height: int):
    """A get_frame for the server and the table of produce times keyed by frame number."""
    import time

    import numpy as np

    produced: dict[int, float] = {}
    counter = [0]
    render = None
    renderers: list = []
    if kind == "twin":
        import mujoco

        from se_robot.arm import load_arm
        from se_robot.sim.mjcf import build_model

        arm = load_arm()
        model = build_model(arm)
        data = mujoco.MjData(model)
        mujoco.mj_forward(model, data)
        # made on first use: an EGL context belongs to the thread that made it

        def render():
            if not renderers:
                renderers.append(mujoco.Renderer(model, height, width))
            renderers[0].update_scene(data, camera="scene")
            return renderers[0].render().copy()

    def get_frame():
        counter[0] = (counter[0] + 1) % (1 << _BITS)
        frame = render() if render is not None else np.full((height, width, 3), (90, 140, 60), np.uint8)
        _stamp_number(frame, counter[0])
        produced[counter[0]] = time.monotonic()
        return frame

    def close():
        for r in renderers:
            r.close()
        renderers.clear()

    return get_frame, produced, close


def run(args: argparse.Namespace) -> int:
    from se_robot.hardware.camera import OpenCVCamera
    from se_robot.hardware.mjpeg_server import MjpegServer
    from se_robot.hardware.rig_check import percentile_ms as pct
    from se_robot.hardware.rig_check import sample_frame_timing

    server = None
    produced: dict[int, float] = {}
    if args.source in ("synthetic", "twin"):
        get_frame, produced, close = _frame_source(args.source, args.width, args.height)
        server = MjpegServer(get_frame, fps=args.fps, on_producer_exit=close).start()
        source = server.url
    else:
        source = args.source
    latencies: list[float] = []

    def on_frame(frame, stamp: float) -> None:
        """Produce -> grab latency of a numbered frame from the built-in server."""
        t_prod = produced.get(_read_number(frame)) if produced else None
        if t_prod is not None and t_prod <= stamp:
            latencies.append(stamp - t_prod)

    try:
        with OpenCVCamera(source, width=args.width, height=args.height,
                          fps=None if server else args.fps) as cam:
            timing = sample_frame_timing(cam, args.seconds, args.control_hz, on_frame)
            stats = cam.stats()
    finally:
        if server is not None:
            server.stop()
    ages, waits = timing["age_s"], timing["wait_s"]
    print(f"camera bench: source={args.source} ({source}) {args.width}x{args.height} "
          f"stream {args.fps:g} fps, {args.seconds:g} s, {len(ages)} samples at ~{args.control_hz:g} Hz")
    print(f"  frames read by the camera thread: {int(stats['camera/frames_read'])} "
          f"({stats['camera/frames_read'] / args.seconds:.1f} fps), drops {int(stats['camera/drops'])}")
    print(f"  frame age at read():          p50 {pct(ages, 50):6.1f} ms  p95 {pct(ages, 95):6.1f} ms  "
          f"max {pct(ages, 100):6.1f} ms")
    print(f"  wait in read_newer_than(now): p50 {pct(waits, 50):6.1f} ms  p95 {pct(waits, 95):6.1f} ms  "
          f"max {pct(waits, 100):6.1f} ms")
    if produced:
        print(f"  produce -> grab latency:      p50 {pct(latencies, 50):6.1f} ms  "
              f"p95 {pct(latencies, 95):6.1f} ms  max {pct(latencies, 100):6.1f} ms  (n={len(latencies)})")
    return 0
