"""``python -m benchmarks ros``: the control loop through ArmEnv over RosRobot, and image latency.

Starts the robot's node -- sim_node (``--robot sim``), or arm_node on the servo emulator's pty
(``--robot emulated``: ``se-robot emulate`` in a process of its own, state observations only, as
arm_node has no camera) -- and, for the camera figure, camera_node reading an in-process MJPEG
stream, on a private ROS_DOMAIN_ID (with the test suite's ``tests.support.ros_harness``, so it
runs from a source checkout), and reports:
- control loop at each ``--rates`` Hz through ArmEnv(RosRobot): step period p50 / p99 and jitter
  (p99 - p50 of the period, and the std), overruns, stale truncations (a joint state that did not
  come fresh within ``stale_timeout_s``) and stale frames, the CPU taken meanwhile by this
  process per step (``cpu/step``, ms: env, RosRobot) and by the node processes (``node %``; 100 = one
  core), for each ``--spin-ms`` of the
  ControlClock (0 = a plain sleep to the tick), runs interleaved so load hits each alike; every
  row carries the 1-minute load average it was measured at;
- the step overhead of ArmEnv(RosRobot) (``timing/act_s`` + ``timing/sense_s``: time not spent pacing: decode, filter, publish, waiting for a
  fresh joint state/image after the tick, conversion) next to the direct sim env's step time;
- image latency, capture stamp to subscriber callback, at 84x84 and 640x480, for sim_node (stamp
  taken before rendering, so render time is included) and camera_node (stamp at OpenCV grab).
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("ros", help="ArmEnv(RosRobot) loop timing and image latency over DDS",
                              description=__doc__)
    p.add_argument("--robot", default="sim", choices=("sim", "emulated"),
                   help="sim_node, or arm_node on the servo emulator (state observations only)")
    p.add_argument("--rates", type=float, nargs="+", default=[20.0, 50.0], help="control rates (Hz)")
    p.add_argument("--steps", type=int, default=200, help="env steps per rate")
    p.add_argument("--spin-ms", type=float, nargs="+", default=[1.0],
                   help="ControlClock spin before each tick (ms); several are run interleaved (0: plain sleep)")
    p.add_argument("--rounds", type=int, default=1, help="repeat every (rate, spin) row this many times, interleaved")
    p.add_argument("--state-rate", type=float, default=200.0, help="the node's joint state rate (Hz)")
    p.add_argument("--rt-priority", type=int, default=0,
                   help="run this process and the nodes at SCHED_FIFO with this priority (1-99; needs root or "
                        "CAP_SYS_NICE): the loop's own jitter, without the machine's other load; 0: normal")
    p.add_argument("--obs-mode", default="both", choices=("state", "pixels", "both"))
    p.add_argument("--image-seconds", type=float, default=4.0, help="sampling time per image size")
    p.add_argument("--sizes", default="84x84,640x480", help="image sizes WxH, comma separated")
    p.add_argument("--no-camera-node", action="store_true", help="skip the camera_node latency figures")
    p.add_argument("--no-latency", action="store_true", help="skip the direct-step and image latency figures")
    p.set_defaults(func=run)


def _pct(values, q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q)) if len(values) else float("nan")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    import os

    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _loop_figures(domain: int, rate: float, steps: int, obs_mode: str, spin_s: float,
                  node_pids: list[int]) -> dict[str, float]:
    """Period, overhead and staleness figures of ``steps`` env steps, and the CPU the loop took:
    this process's per step, and the nodes' (``node_pids``) as a share of one core."""
    import time

    import numpy as np

    from se_robot.envs import make_env

    env = make_env("reach", backend="ros", obs_mode=obs_mode, control_hz=rate, domain_id=domain,
                   discovery_timeout_s=60.0, max_episode_steps=10**6, stale_timeout_s=0.5)
    try:
        env.unwrapped.clock.spin_s = spin_s
        env.reset(seed=0)
        ends, work, wait, stale, stale_frames, overruns = [], [], [], 0, 0, 0
        rng = np.random.default_rng(0)
        wall0, cpu0, node0 = time.perf_counter(), time.process_time(), sum(_cpu_s(p) for p in node_pids)
        for _ in range(steps):
            _, _, _, truncated, info = env.step(rng.uniform(-0.3, 0.3, env.action_space.shape).astype(np.float32))
            ends.append(time.perf_counter())
            work.append(info["timing/act_s"])
            wait.append(info["timing/sense_s"])
            overruns += int(info["timing/overrun"])
            stale_frames += int(info.get("camera/stale", False))
            if truncated:
                stale += 1
                env.reset()
                ends.append(float("nan"))
        wall = time.perf_counter() - wall0
        cpu, node_cpu = time.process_time() - cpu0, sum(_cpu_s(p) for p in node_pids) - node0
        periods = np.diff(np.asarray(ends))
        periods = periods[np.isfinite(periods)][1:] * 1e3
        overhead = (np.asarray(work) + np.asarray(wait)) * 1e3
        return {"period_p50_ms": _pct(periods, 50), "period_p99_ms": _pct(periods, 99),
                "jitter_p99_p50_ms": _pct(periods, 99) - _pct(periods, 50), "jitter_std_ms": float(np.std(periods)),
                "overhead_p50_ms": _pct(overhead, 50), "overhead_p99_ms": _pct(overhead, 99),
                "wait_p50_ms": _pct(np.asarray(wait) * 1e3, 50), "overruns": float(overruns),
                "stale_truncations": float(stale), "stale_frames": float(stale_frames),
                "client_cpu_ms": 1e3 * cpu / steps, "node_cpu_pct": 100 * node_cpu / wall}
    finally:
        env.close()


def _realtime(pid: int, priority: int) -> None:
    """SCHED_FIFO at ``priority`` for ``pid`` (0: this process); threads it starts later inherit it,
    so a child set right after its start runs every thread at it."""
    import os

    if priority > 0:
        os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(priority))


def _start_robot_node(robot: str, domain: int, state_rate: float, camera_hz: float, log: str, priority: int):
    """The node (and, for ``emulated``, the emulator process) ArmEnv(RosRobot) talks to."""
    import subprocess
    import sys

    from tests.support.ros_harness import node_env, start_node

    if robot == "sim":
        node = start_node("sim_node", domain, {"image_width": 84, "image_height": 84, "camera_rate_hz": camera_hz,
                                               "state_rate_hz": state_rate}, log_path=log)
        _realtime(node.pid, priority)
        return node, None
    emulator = subprocess.Popen([sys.executable, "-m", "se_robot.cli", "emulate", "--physics", "first_order"],
                                env=node_env(domain), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    _realtime(emulator.pid, priority)
    found: dict[str, str] = {}
    for line in emulator.stdout:
        key, _, value = line.partition(": ")
        if key in ("pty", "calibration"):
            found[key] = value.split(" (")[0].strip()
        if len(found) == 2:
            break
    if len(found) != 2:
        raise RuntimeError(f"se-robot emulate printed no pty/calibration (exit {emulator.poll()})")
    node = start_node("arm_node", domain, {"port": found["pty"], "calibration": found["calibration"],
                                           "autostart": True, "state_rate_hz": state_rate}, log_path=log)
    _realtime(node.pid, priority)
    return node, emulator


def _direct_sim_step_ms(obs_mode: str, steps: int = 200) -> tuple[float, float]:
    import time

    import numpy as np

    from se_robot.envs import make_env

    env = make_env("reach", obs_mode=obs_mode, control_hz=20.0, max_episode_steps=10**6)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    times = []
    for _ in range(steps):
        a = rng.uniform(-0.3, 0.3, env.action_space.shape).astype(np.float32)
        t = time.perf_counter()
        env.step(a)
        times.append((time.perf_counter() - t) * 1e3)
    env.close()
    return _pct(times, 50), _pct(times, 99)


def run(args: argparse.Namespace) -> int:
    import os
    import tempfile

    from tests.support.ros_harness import image_latency_ms, pick_domain_id, start_node, stop_node

    os.environ.setdefault("MUJOCO_GL", "egl")
    domain = pick_domain_id(11)
    log = os.path.join(tempfile.gettempdir(), f"se_robot_bench_{args.robot}_{os.getpid()}.log")
    print(f"ROS_DOMAIN_ID={domain}; node logs in {tempfile.gettempdir()}; load average {os.getloadavg()}"
          + (f"; SCHED_FIFO priority {args.rt_priority}" if args.rt_priority else ""))
    camera_hz = max(60.0, 1.2 * max(args.rates))
    obs_mode = args.obs_mode if args.robot == "sim" else "state"
    _realtime(0, args.rt_priority)
    node, emulator = _start_robot_node(args.robot, domain, args.state_rate, camera_hz, log, args.rt_priority)
    try:
        where = (f"sim_node (obs_mode={obs_mode}, images 84x84 at {camera_hz:.0f} Hz" if args.robot == "sim" else
                 "arm_node on the servo emulator's pty (obs_mode=state")
        print(f"\ncontrol loop through ArmEnv(RosRobot) on {where}, joint states {args.state_rate:.0f} Hz), "
              f"{args.steps} steps per row")
        print(f"{'rate':>6} {'spin ms':>7} {'p50 ms':>8} {'p99 ms':>8} {'jit99-50':>9} {'std ms':>7} {'ovh p50':>8} "
              f"{'ovh p99':>8} {'wait p50':>9} {'overruns':>8} {'stale':>6} {'stale frm':>9} {'cpu/step':>8} "
              f"{'node %':>6} {'load 1m':>7}")
        for rate in args.rates:
            for _ in range(args.rounds):
                for spin_ms in args.spin_ms:
                    f = _loop_figures(domain, rate, args.steps, obs_mode, spin_ms / 1e3,
                                      [p.pid for p in (node, emulator) if p is not None])
                    print(f"{rate:6.0f} {spin_ms:7.1f} {f['period_p50_ms']:8.2f} {f['period_p99_ms']:8.2f} "
                          f"{f['jitter_p99_p50_ms']:9.2f} {f['jitter_std_ms']:7.2f} {f['overhead_p50_ms']:8.2f} "
                          f"{f['overhead_p99_ms']:8.2f} {f['wait_p50_ms']:9.2f} {f['overruns']:8.0f} "
                          f"{f['stale_truncations']:6.0f} {f['stale_frames']:9.0f} {f['client_cpu_ms']:8.2f} "
                          f"{f['node_cpu_pct']:6.0f} {os.getloadavg()[0]:7.2f}",
                          flush=True)
    finally:
        stop_node(node)
        if emulator is not None:
            stop_node(emulator)
    if args.robot != "sim" or args.no_latency:
        return 0
    p50, p99 = _direct_sim_step_ms(args.obs_mode)
    print(f"\ndirect ArmEnv(TwinRobot).step (obs_mode={args.obs_mode}, compute incl. physics and render): "
          f"p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    print("ArmEnv(RosRobot) overhead above = step time minus pacing sleep (decode, filter, publish, wait, convert)")

    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    print(f"\nimage latency, capture stamp -> subscriber callback ({args.image_seconds:.0f} s per size)")
    print(f"{'source':>12} {'size':>9} {'frames':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")

    def latency_row(node: str, w: int, h: int, params: dict, log_path: str) -> None:
        proc = start_node(node, domain, {"image_width": w, "image_height": h, "camera_rate_hz": 30.0, **params},
                          log_path=log_path)
        try:
            lat = image_latency_ms(domain, args.image_seconds)
        finally:
            stop_node(proc)
        print(f"{node:>12} {f'{w}x{h}':>9} {len(lat):7d} {_pct(lat, 50):8.2f} {_pct(lat, 99):8.2f} "
              f"{max(lat) if lat else float('nan'):8.2f}")

    for w, h in sizes:
        latency_row("sim_node", w, h, {}, log)
    if not args.no_camera_node:
        import numpy as np

        from se_robot.hardware.mjpeg_server import MjpegServer

        for w, h in sizes:
            frame = (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)
            with MjpegServer(lambda: frame, fps=30.0) as server:
                latency_row("camera_node", w, h, {"camera_source": server.url}, log.replace("sim", "camera"))
    return 0
