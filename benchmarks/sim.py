"""``python -m benchmarks sim``: how fast the twin steps, compared with raw MuJoCo in the same run.

Prints env steps/s for ``state`` and ``pixels`` observations, the raw ``mj_step`` + render rate of
the same model and camera at the same control rate (the ceiling the env is measured against), the
ratio of the two, and the scaling of a Gymnasium AsyncVectorEnv from 1 to 2 workers.

Two raw references: the arm at rest (servo targets left at home, as first measured) and the arm
following the servo targets the env's own round sent, replayed period by period. A moving arm
costs MuJoCo more than one at rest (more constraint work per step), so only the second says how
much the env itself adds to the same physics and rendering.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sim", help="env steps/s against raw MuJoCo, and vector-env scaling")
    p.add_argument("--task", default="reach", choices=("reach", "push", "lift"))
    p.add_argument("--steps", type=int, default=2000, help="steps per measurement")
    p.add_argument("--image-size", type=int, default=84)
    p.add_argument("--control-hz", type=float, default=10.0)
    p.add_argument("--camera", default="scene", choices=("scene", "wrist"))
    p.add_argument("--rounds", type=int, default=5, help="alternating env/raw rounds (median kept)")
    p.add_argument("--all-cores", action="store_true", help="do not pin the single-env runs to one core")
    p.add_argument("--no-vector", action="store_true", help="skip the AsyncVectorEnv measurement")
    p.add_argument("--breakdown", action="store_true",
                   help="also time the parts of a pixel step in place (this thread's CPU time per call, "
                        "summed per step): where the env's time goes beyond the raw loop")
    p.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                   help="time single-env runs by the wall clock, or by this process's CPU time (all its "
                        "threads): steps per CPU second, a cost that other load on a shared machine "
                        "disturbs far less (the vector run is always timed by the wall clock)")
    p.set_defaults(func=run)


_clock = time.perf_counter


def _env_rate(task: str, steps: int, **options) -> tuple[float, list[np.ndarray]]:
    """Steps/s, and the servo targets each step left set (for the raw reference to replay)."""
    from se_robot.envs import make_env

    env = make_env(task, **options)
    twin = env.unwrapped.robot.twin
    env.action_space.seed(0)
    env.reset(seed=0)
    for _ in range(20):  # warm-up: renderer context, caches
        env.step(env.action_space.sample())
    targets = []
    # drawn before the clock starts: Box.sample costs a tenth of a state step, and the raw loop draws none
    actions = [env.action_space.sample() for _ in range(steps)]
    t0 = _clock()
    for action in actions:
        _, _, term, trunc, _ = env.step(action)
        targets.append(twin.targets())
        if term or trunc:
            env.reset()
    rate = steps / (_clock() - t0)
    env.close()
    return rate, targets


def _raw_rate(task: str, steps: int, control_hz: float, image_size: int, camera: str, render: bool,
              targets: list[np.ndarray] | None = None) -> float:
    """mj_step for one control period (+ one render) of the same scene: no env around it. With
    ``targets``, the servo targets are set to one of them each period (the env's motion)."""
    import mujoco

    from se_robot.arm import load_arm
    from se_robot.sim.twin import ArmTwin

    twin = ArmTwin(load_arm(), task)
    twin.reset()
    m, d = twin.model, twin.data
    n = max(1, int(round(1.0 / control_hz / m.opt.timestep)))
    renderer = mujoco.Renderer(m, image_size, image_size) if render else None
    for _ in range(20):
        mujoco.mj_step(m, d, nstep=n)
        if renderer:
            renderer.update_scene(d, camera=camera)
            renderer.render()
    t0 = _clock()
    for i in range(steps):
        if targets is not None:
            twin.set_targets(targets[i % len(targets)])
        mujoco.mj_step(m, d, nstep=n)
        if renderer:
            renderer.update_scene(d, camera=camera)
            renderer.render()
    rate = steps / (_clock() - t0)
    if renderer:
        renderer.close()
    return rate


#: the calls a step is made of, timed by --breakdown: (label, owner in the env, method name)
_PARTS = (("decode (fk + IK)", "decoder", "decode"), ("send (safety filter)", "robot", "send"),
          ("advance (mj_step)", "robot", "advance"), ("render", "twin", "render"), ("read", "robot", "read"),
          ("objects", "robot", "object_state"), ("task state (fk)", "env", "object_state"),
          ("success", "task", "success"), ("reward", "task", "reward"), ("observe", "env", "_observe"),
          ("info", "env", "_info"), ("reset", "env", "reset"))


def _breakdown(task: str, steps: int, **options) -> None:
    """Per-step CPU time of each part of ``env.step`` in place (the caches as a real step leaves
    them, unlike a part timed alone in a loop), and of the whole step through the wrappers. A part
    called inside another (a reset senses too) counts in the outer one only.

    Each timed call pays two clock reads (a system call each), a microsecond or two per call."""
    import functools
    from collections import defaultdict

    from se_robot.envs import make_env

    env = make_env(task, **options)
    base = env.unwrapped
    owners = {"env": base, "decoder": base.decoder, "robot": base.robot, "twin": base.robot.twin, "task": base.task}
    spent: dict[str, float] = defaultdict(float)
    clock = time.thread_time
    inside = [False]

    def timed(label: str, fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            if inside[0]:
                return fn(*args, **kwargs)
            inside[0], t0 = True, clock()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] += clock() - t0
                inside[0] = False
        return call

    for label, owner, name in _PARTS:
        setattr(owners[owner], name, timed(label, getattr(owners[owner], name)))
    env.action_space.seed(0)
    env.reset(seed=0)
    for _ in range(20):
        env.step(env.action_space.sample())
    actions = [env.action_space.sample() for _ in range(steps)]
    spent.clear()
    t0 = clock()
    for action in actions:
        _, _, term, trunc, _ = env.step(action)
        if term or trunc:
            env.reset()
    whole = clock() - t0
    env.close()
    rest = whole - sum(spent.values())
    print(f"pixel step, CPU time per step in place ({steps} steps, resets included):")
    for label, _, _ in _PARTS:
        print(f"  {label:<22}{1e6 * spent[label] / steps:>8.0f} us")
    print(f"  {'rest (wrappers, glue)':<22}{1e6 * rest / steps:>8.0f} us")
    print(f"  {'whole step':<22}{1e6 * whole / steps:>8.0f} us   = {steps / whole:.0f} steps per CPU second")


def _make_pixel_env(task: str, image_size: int, control_hz: float):
    # One rendering thread per worker: Mesa's llvmpipe otherwise spreads every frame over all
    # cores, and two workers then fight over them (measured: 1.23x with it, 1.60x without).
    os.environ.setdefault("LP_NUM_THREADS", "1")
    from se_robot.envs import make_env

    return make_env(task, obs_mode="pixels", image_size=image_size, control_hz=control_hz)


def _vector_rate(task: str, steps: int, workers: int, image_size: int, control_hz: float) -> float:
    import functools

    import gymnasium as gym

    fns = [functools.partial(_make_pixel_env, task, image_size, control_hz) for _ in range(workers)]
    # spawn, not fork: a forked child inherits the parent's EGL state, which can deadlock Mesa.
    # One worker is an AsyncVectorEnv too, so both runs pay the same transfer of observations and
    # render with the same one llvmpipe thread (this process's renderer has all cores' threads).
    venv = gym.vector.AsyncVectorEnv(fns, context="spawn")
    venv.action_space.seed(0)
    venv.reset(seed=0)
    for _ in range(10):
        venv.step(venv.action_space.sample())
    actions = [venv.action_space.sample() for _ in range(steps // workers)]
    t0 = time.perf_counter()
    for action in actions:
        venv.step(action)
    rate = (steps // workers) * workers / (time.perf_counter() - t0)
    venv.close()
    return rate


def run(args: argparse.Namespace) -> int:
    global _clock
    os.environ.setdefault("MUJOCO_GL", "egl")
    import numpy as np

    _clock = time.process_time if args.clock == "cpu" else time.perf_counter

    all_cpus = os.sched_getaffinity(0)
    if not args.all_cores:
        os.sched_setaffinity(0, {min(all_cpus)})
    common = dict(control_hz=args.control_hz, image_size=args.image_size, camera=args.camera)
    print(f"benchmarks sim: task={args.task} control_hz={args.control_hz} image={args.image_size}px "
          f"camera={args.camera} steps={args.steps} cores={'all' if args.all_cores else 1} clock={args.clock}")
    # Env and raw runs alternate in rounds and the median is kept: on a shared, noisy machine a
    # ratio of two runs taken minutes apart means little.
    rounds = max(1, args.rounds)
    per = max(50, args.steps // rounds)
    rates: dict[str, list[float]] = {k: [] for k in ("state", "pixels", "raw", "raw_pixels", "moving", "moving_pixels")}
    raw_args = (args.task, per, args.control_hz, args.image_size, args.camera)
    for _ in range(rounds):
        for mode, suffix in (("state", ""), ("pixels", "_pixels")):
            rate, targets = _env_rate(args.task, per, obs_mode=mode, **common)
            rates[mode].append(rate)
            rates["raw" + suffix].append(_raw_rate(*raw_args, render=bool(suffix)))
            rates["moving" + suffix].append(_raw_rate(*raw_args, render=bool(suffix), targets=targets))
    med = {k: float(np.median(v)) for k, v in rates.items()}
    print(f"{'measurement':<14}{'steps/s':>9}{'raw at rest':>13}{'ratio':>7}{'raw moving':>12}{'ratio':>7}"
          f"   (median of {rounds} alternating rounds)")
    for name, mode, suffix, what in (("env state", "state", "", "mj_step"),
                                     ("env pixels", "pixels", "_pixels", "mj_step+render")):
        rate, rest, moving = med[mode], med["raw" + suffix], med["moving" + suffix]
        print(f"{name:<14}{rate:>9.0f}{rest:>13.0f}{rate / rest:>7.2f}{moving:>12.0f}{rate / moving:>7.2f}"
              f"   raw = {what}")
    if args.breakdown:
        _breakdown(args.task, per * rounds, obs_mode="pixels", **common)
    if not args.no_vector:
        os.sched_setaffinity(0, all_cpus)
        one = _vector_rate(args.task, args.steps, 1, args.image_size, args.control_hz)
        two = _vector_rate(args.task, args.steps, 2, args.image_size, args.control_hz)
        print(f"{'vector pixels x1 async':<22}{one:>10.0f}")
        print(f"{'vector pixels x2 async':<22}{two:>10.0f}   scaling {two / one:.2f}x on {len(all_cpus)} cores")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0
