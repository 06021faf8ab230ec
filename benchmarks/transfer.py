"""``python -m benchmarks transfer``: pretrain in sim, fine-tune on the (emulated) arm, against from scratch.

The "arm" is the byte-level emulator with a reality gap (``config/gaps/``, drawn once from ``--gap-seed``):
its camera pose, field of view, light, colours, image noise, servo gains, friction, cube and bus
latency differ from the twin the sim runs trained in. Every arm run talks to it as to a real arm,
through the ``se-robot`` commands a user runs, in processes of their own: the serial port, the MJPEG
camera and the scene service (the stand-in for the person who puts the cube back). Per gap preset:

1. ``se-robot align-camera`` on the arm's camera and scene service writes the camera config. Its
   detector judges success (and so the sparse reward) on the arm, as on a real arm: no run reads the
   emulator's ground truth.
2. ``--arm-demos`` demos recorded on the arm by the scripted expert (the teleoperator's stand-in),
   driving from what the detector sees.
3. For each ``--sim NAME=RUN`` (a sim training run, e.g. with and without ``env.randomize``):
   ``se-robot evaluate`` zero-shot on the arm (``--zero-shot-episodes``), then
   ``se-robot train --resume RUN --backend hardware --more-steps --steps --replay --replay --demos ARM_DEMOS``,
   evaluated on the arm every ``--eval-every`` arm steps.
4. ``scratch``: ``--recipe`` trained on the arm from nothing, with the same arm demos and the same
   frozen encoder as the first sim run (only the policy's sim pretraining is missing), for ``--scratch-steps``.

Each run gets an emulator of its own from the same gap and seed, so the same "real setup": runs go
side by side with ``--jobs`` (mind the cores: the emulated arm runs in real time and a starved one
is a slower arm). Prints one table per gap (zero-shot, success after each ``--report-at`` arm steps,
arm steps to ``--threshold``, wall time, load) and the arm-step ratio of scratch to each fine-tune,
and writes ``results.json`` and ``transfer.png``. Runs already in ``results.json`` are kept, so gaps
and runs can be added later; ``--report`` reprints.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import plot_success_panels, run_jobs, steps_to

SCRATCH = "scratch"
#: the gap name of an emulated arm that is the twin itself behind the bus and camera: what the
#: byte-level pipeline alone costs a sim-trained policy
NO_GAP = "none"
#: bus reply deadline on the arm: generous, the emulator shares loaded cores with the learners
TIMEOUT_S = "0.5"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("transfer", help="sim-pretrained runs fine-tuned on a gapped emulated arm vs scratch",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sim", action="append", default=[], metavar="NAME=RUN",
                   help="a sim training run (its dir, or a checkpoint dir) to transfer; repeat (e.g. dr=RUN nodr=RUN)")
    p.add_argument("--gaps", default="mild,hard", help="comma list of gap presets (config/gaps/) or YAML files; "
                   f"{NO_GAP}: the twin itself behind the bus and camera")
    p.add_argument("--gap-seed", type=int, default=0, help="the draw of each gap: one 'real setup'")
    p.add_argument("--runs", default="", help="comma list of the NAMEs (and scratch) to run (default: all)")
    p.add_argument("--steps", type=int, default=5000, help="fine-tune arm steps per sim run (0: zero-shot only)")
    p.add_argument("--scratch-steps", type=int, default=5000, help="arm steps of the from-scratch run")
    p.add_argument("--recipe", default="lift_pixels_sparse", help="the from-scratch run's recipe")
    p.add_argument("--replay", choices=("drop", "keep"), default="drop",
                   help="the sim replay in the fine-tune (drop: arm transitions only; the demos are kept)")
    p.add_argument("--arm-demos", type=int, default=20, help="scripted-expert demos recorded on the arm per gap")
    p.add_argument("--zero-shot-episodes", type=int, default=20)
    p.add_argument("--eval-every", type=int, default=1000, help="arm steps between evaluations")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--report-at", default="2000,5000", help="arm steps whose success the table shows")
    p.add_argument("--threshold", type=float, default=0.9, help="eval success counted as solved")
    p.add_argument("--stop-when-solved", action="store_true",
                   help="end each arm run at its first evaluation at or above --threshold")
    p.add_argument("--seed", type=int, default=0, help="seed of the arm runs")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="more config for every arm run (e.g. env.max_episode_steps=40)")
    p.add_argument("--jobs", type=int, default=1, help="arm runs side by side, each with its own emulator")
    p.add_argument("--out", default="runs/bench_transfer")
    p.add_argument("--report", action="store_true", help="reprint the table and figure from <out>/results.json")
    p.set_defaults(func=run)


def _fail(message: str) -> SystemExit:
    return SystemExit(f"benchmarks transfer: {message}")


def _names(args: argparse.Namespace) -> dict[str, str]:
    sims: dict[str, str] = {}
    for item in args.sim:
        name, sep, run_dir = item.partition("=")
        if not sep or not name or not run_dir or name == SCRATCH:
            raise _fail(f"--sim: expected NAME=RUN with NAME not {SCRATCH!r}, got {item!r}")
        if not Path(run_dir).exists():
            raise _fail(f"--sim {name}: no run at {run_dir}")
        sims[name] = str(Path(run_dir).resolve())
    return sims


def plan(args: argparse.Namespace) -> dict[str, Any]:
    """The checked options, before any emulator starts."""
    from se_robot import checkpoint
    from se_robot.commands.train import checkpoint_step
    from se_robot.config import read_yaml

    sims = _names(args)
    if not sims:
        raise _fail("give at least one --sim NAME=RUN (the scratch run borrows the first one's encoder)")
    names = [*sims, SCRATCH]
    chosen = [n for n in args.runs.split(",") if n] or names
    if unknown := [n for n in chosen if n not in names]:
        raise _fail(f"--runs: unknown {unknown}; allowed: {', '.join(names)}")
    if min(args.scratch_steps, args.arm_demos, args.zero_shot_episodes, args.eval_every, args.eval_episodes,
           args.jobs) < 1 or args.steps < 0:
        raise _fail("--scratch-steps, --arm-demos, --zero-shot-episodes, --eval-every, --eval-episodes and --jobs "
                    "must be at least 1, --steps at least 0")
    ckpts = {n: checkpoint.resolve(r) for n, r in sims.items()}
    saved = read_yaml(next(iter(ckpts.values())) / "config.yaml")
    return {"gaps": [g for g in args.gaps.split(",") if g], "sims": sims, "runs": chosen,
            "sim_steps": {n: checkpoint_step(c) for n, c in ckpts.items()},
            "task": saved["task"], "obs_mode": saved["obs_mode"], "image_size": int(saved["image_size"]),
            "encoder": saved["agent"].get("encoder_checkpoint", "")}


def _gap_dir(out: Path, gap: str) -> Path:
    return out / Path(gap).stem


def _emulator(task: str, gap: str, seed: int):
    from se_robot.arm import load_arm
    from se_robot.hardware.emulator import VirtualArm

    return VirtualArm(load_arm("so101"), physics="twin", task=task, camera_port=0, camera_size=(320, 240),
                      scene_port=0, twin_gap=None if gap == NO_GAP else gap, twin_gap_seed=seed)


def _arm_options(vm, camera_config: Path) -> list[str]:
    """The arm as ``train`` and ``evaluate`` name it."""
    return ["--backend", "hardware", "--port", vm.port, "--calibration", str(vm.calibration_path),
            "--scene-camera", str(camera_config), "--camera-source", vm.camera_url, "--scene-operator", vm.scene_url]


def _cli(argv: list[str], log: Path) -> None:
    """One ``se-robot`` command in a process of its own, its output in ``log``; a failure names the log."""
    with log.open("a") as f:
        f.write(f"$ se-robot {' '.join(argv)}\n")
        f.flush()
        code = subprocess.call([sys.executable, "-m", "se_robot.cli", *argv], stdout=f, stderr=subprocess.STDOUT)
    if code != 0:
        raise RuntimeError(f"se-robot {argv[0]} exited with {code}; see {log}")


def prepare(gap: str, args: argparse.Namespace, settings: dict) -> None:
    """The camera config and the arm demos of one gap, shared by all of its runs."""
    from se_robot.data.recording import dataset_meta_for, record_scripted
    from se_robot.envs import make_env
    from se_robot.envs.experts import expert_for

    here = _gap_dir(Path(args.out), gap)
    here.mkdir(parents=True, exist_ok=True)
    camera, demos = here / "camera.yaml", here / "arm_demos"
    with _emulator(settings["task"], gap, args.gap_seed) as vm, LiftAudit(vm, _audit_height(settings)) as audit:
        if not camera.is_file():
            for sid in vm.arm.servo_ids:   # the arm held where it starts, out of the cube's way
                vm.physics.set_torque(sid, True, time.monotonic())
            _cli(["align-camera", "--source", vm.camera_url, "--scene-url", vm.scene_url, "--task", settings["task"],
                  "--out", str(camera), "--overlay", str(here / "overlay.png")], here / "align.log")
        if not (demos / "dataset.json").is_file():
            env = make_env(settings["task"], backend="hardware", frame_stack=0, obs_mode=settings["obs_mode"],
                           image_size=settings["image_size"], port=vm.port, calibration=str(vm.calibration_path),
                           scene_camera=str(camera), camera_source=vm.camera_url, operator=vm.scene_url,
                           reward_type="sparse", timeout_s=float(TIMEOUT_S))
            try:
                with (here / "demos.log").open("a") as f:
                    written = record_scripted(env, expert_for(env), demos, dataset_meta_for(
                        env, settings["task"], backend="hardware", obs_mode=settings["obs_mode"]),
                        args.arm_demos, seed=args.seed + 60_000, log=lambda line: print(line, file=f, flush=True))
                    print(f"{len(written)} demos written; real lifts the emulator saw: {audit.lifts}", file=f)
            finally:
                env.close()


class LiftAudit:
    """Counts the lifts the emulator's twin really made (the cube's bottom ``height_m`` above the
    table), to set beside the successes the runs report from the camera: a detector that a policy
    fools shows as more successes than lifts. Give half the task's lift height: the camera's
    height estimate is a few millimetres off, and a fooled detector sees a cube that never left
    the table."""

    def __init__(self, vm, height_m: float | None, period_s: float = 0.05):
        import threading

        self.vm, self.height_m, self.period_s = vm, height_m, period_s
        self.lifts: int | None = None if height_m is None else 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lift-audit", daemon=True)

    def __enter__(self) -> "LiftAudit":
        if self.height_m is not None:   # lift only: another task has no lift to count
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        from se_robot.tasks import CUBE_HALF_M

        up = False
        while not self._stop.wait(self.period_s):
            with self.vm.physics.lock:
                z = float(self.vm.physics.twin.cube_position()[2])
            now = z - CUBE_HALF_M >= self.height_m
            self.lifts += int(now and not up)
            up = now


def _audit_height(settings: dict) -> float | None:
    """The cube bottom's height that counts as a real lift: half the task's (lift only)."""
    from se_robot.tasks import load_task

    return 0.5 * load_task(settings["task"]).cfg.lift_height_m if settings["task"] == "lift" else None


def _claimed(work: Path, zero_shot_episodes: int, eval_episodes: int, trained: bool) -> int:
    """Successful episodes the runs of ``work`` report: zero-shot, and training and evaluation when ``trained``."""
    from se_robot.logger import Logger

    total, run = 0, work / "run"
    if trained:
        total += sum(float(r["train/success"]) > 0 for r in Logger.read(run / "train.csv") if r.get("train/success"))
        total += sum(round(float(r["eval/success"]) * eval_episodes) for r in Logger.read(run / "eval.csv"))
    zero_shot = work / "zero_shot" / "eval.json"
    if zero_shot.is_file():
        total += round(json.loads(zero_shot.read_text())["eval/success"] * zero_shot_episodes)
    return int(total)


def _eval_rows(run_dir: Path, offset: int) -> list[tuple[int, float]]:
    from se_robot.logger import Logger

    return [(int(float(r["step"])) - offset, float(r["eval/success"])) for r in Logger.read(run_dir / "eval.csv")]


def _zero_shot(sim_run: str, out: Path, episodes: int, arm: list[str], log: Path) -> float:
    """The sim run's success on the arm before any arm step; an evaluation of the same checkpoint
    with as many episodes already in ``out`` is reused (the fine-tune can follow a zero-shot-only run)."""
    from se_robot import checkpoint

    done = json.loads((out / "eval.json").read_text()) if (out / "eval.json").is_file() else {}
    if done.get("checkpoint") != str(checkpoint.resolve(sim_run)) or done.get("episodes") != episodes:
        _cli(["evaluate", "--checkpoint", sim_run, "--episodes", str(episodes), *arm, "--out", str(out),
              "--set", f"env.timeout_s={TIMEOUT_S}"], log)
        done = json.loads((out / "eval.json").read_text())
    return float(done["eval/success"])


def one_run(gap: str, name: str, args: argparse.Namespace) -> dict:
    """Zero-shot then fine-tune (a sim run), or train from scratch, on a fresh emulator of ``gap``."""
    settings = args.settings
    here = _gap_dir(Path(args.out), gap)
    work, log = here / name, here / f"{name}.log"
    work.mkdir(parents=True, exist_ok=True)
    common = ["--out", str(work / "run"), "--no-progress", "--demos", str(here / "arm_demos"),
              "--set", f"eval_every={args.eval_every}", "--set", f"eval_episodes={args.eval_episodes}",
              "--set", "eval_video=false", "--set", "tensorboard=false", "--set", f"env.timeout_s={TIMEOUT_S}",
              "--set", f"stop_at_success={args.threshold if args.stop_when_solved else 0.0}"]
    for pair in args.set:
        common += ["--set", pair]
    start, zero_shot, offset = time.perf_counter(), None, 0
    with _emulator(settings["task"], gap, args.gap_seed) as vm, LiftAudit(vm, _audit_height(settings)) as audit:
        arm = _arm_options(vm, here / "camera.yaml")
        if name == SCRATCH:
            encoder = ["--set", f"agent.encoder_checkpoint={settings['encoder']}"] if settings["encoder"] else []
            _cli(["train", "--config", args.recipe, *arm, *common, "--set", f"steps={args.scratch_steps}",
                  "--set", f"seed={args.seed}", *encoder], log)
            budget = args.scratch_steps
        else:
            sim_run, offset = settings["sims"][name], settings["sim_steps"][name]
            zero_shot = _zero_shot(sim_run, work / "zero_shot", args.zero_shot_episodes, arm, log)
            if args.steps:
                _cli(["train", "--resume", sim_run, "--more-steps", str(args.steps), "--replay", args.replay,
                      *arm, *common], log)
            budget = args.steps
    trained = budget > 0
    curve = ([(0, zero_shot)] if zero_shot is not None else []) + [
        (s, v) for s, v in (_eval_rows(work / "run", offset) if trained else []) if s > 0 or zero_shot is None]
    return {"gap": gap, "name": name, "sim_run": settings["sims"].get(name), "sim_steps": offset or None,
            "budget": budget, "zero_shot": zero_shot, "curve": curve,
            "steps_to_threshold": steps_to([{"step": s, "success": v} for s, v in curve], args.threshold),
            "true_lifts": audit.lifts, "claimed": _claimed(work, args.zero_shot_episodes, args.eval_episodes, trained),
            "wall_s": time.perf_counter() - start, "load_avg": list(os.getloadavg())}


def summarise(results: list[dict], threshold: float, report_at: list[int]) -> list[str]:
    def at(r: dict, step: int) -> str:
        done = [v for s, v in r["curve"] if s <= step]
        return "" if not done or r["curve"][-1][0] < step and r["steps_to_threshold"] is None else f"{done[-1]:.2f}"

    def hit(r: dict) -> str:
        return str(r["steps_to_threshold"]) if r["steps_to_threshold"] is not None else f">{r['budget']}"

    def lifts(r: dict) -> str:
        return "" if r.get("true_lifts") is None else f"{r['true_lifts']}/{r['claimed']}"

    lines = []
    for gap in dict.fromkeys(r["gap"] for r in results):
        runs = [r for r in results if r["gap"] == gap]
        lines.append(f"gap {gap}")
        lines.append(f"  {'run':<10}{'sim steps':>10}{'zero-shot':>10}" + "".join(f"{f'@{s}':>8}" for s in report_at)
                     + f"{f'to {threshold:.0%}':>8}{'final':>7}{'lifts':>12}{'wall s':>8}{'load':>6}")
        for r in runs:
            zs = "" if r["zero_shot"] is None else f"{r['zero_shot']:.2f}"
            lines.append(f"  {r['name']:<10}{r['sim_steps'] or '':>10}{zs:>10}"
                         + "".join(f"{at(r, s):>8}" for s in report_at)
                         + f"{hit(r):>8}{r['curve'][-1][1]:>7.2f}{lifts(r):>12}{r['wall_s']:>8.0f}"
                         f"{r['load_avg'][0]:>6.1f}")
        scratch = next((r for r in runs if r["name"] == SCRATCH), None)
        for r in runs:
            if scratch is None or r is scratch or r["steps_to_threshold"] is None:
                continue
            ft = max(r["steps_to_threshold"], 1)
            if scratch["steps_to_threshold"] is None:
                lines.append(f"  scratch / {r['name']}: >= {scratch['budget'] / ft:.1f}x the arm steps "
                             f"(scratch not at {threshold:.0%} in {scratch['budget']})")
            else:
                lines.append(f"  scratch / {r['name']}: {scratch['steps_to_threshold'] / ft:.1f}x the arm steps")
    lines.append(f"arm steps: steps taken on the arm (a fine-tune's sim steps not counted); @N: eval success after N "
                 f"(blank: the run ended sooner without reaching {threshold:.0%}); zero-shot: the sim run before any "
                 "arm step; lifts: real lifts the emulator's twin made (the cube's bottom half the lift height up) / "
                 "successful episodes the run reported from the camera (zero-shot, training, evaluation; more "
                 "successes than lifts: the detector was fooled); "
                 "load: the 1-minute load average when the run ended")
    return lines


def plot(results: list[dict], path: Path, threshold: float) -> None:
    names = list(dict.fromkeys(r["name"] for r in results))

    def draw(ax, gap: str) -> None:
        for r in (r for r in results if r["gap"] == gap):
            steps, values = zip(*r["curve"])
            ax.plot(steps, values, color=f"C{names.index(r['name'])}", marker=".", label=r["name"])

    plot_success_panels(list(dict.fromkeys(r["gap"] for r in results)), draw,
                        lambda gap: f"lift on the emulated arm, gap {gap}", path, threshold)


def report(results: list[dict], out: Path, threshold: float, report_at: list[int]) -> None:
    print("\n".join(summarise(results, threshold, report_at)))
    plot(results, out / "transfer.png", threshold)
    print(f"wrote {out / 'transfer.png'} and {out / 'results.json'}")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    results_path = out / "results.json"
    report_at = [int(s) for s in args.report_at.split(",") if s]
    if args.report:
        if not results_path.is_file():
            raise _fail(f"--report: no {results_path}")
        report(json.loads(results_path.read_text())["results"], out, args.threshold, report_at)
        return 0
    settings = plan(args)
    out.mkdir(parents=True, exist_ok=True)
    for gap in settings["gaps"]:   # first, in this process: every run of a gap reads the same files
        prepare(gap, args, settings)
    order = [(gap, name) for gap in settings["gaps"] for name in settings["runs"]]
    done: dict[tuple, dict] = {}

    def record(result: dict) -> None:
        # read again before each write: another invocation (other gaps or runs) may share the file
        earlier = json.loads(results_path.read_text())["results"] if results_path.is_file() else []
        done.update({(r["gap"], r["name"]): r for r in earlier if (r["gap"], r["name"]) not in done})
        done[(result["gap"], result["name"])] = result
        print(f"[{result['gap']} {result['name']}] zero-shot {result['zero_shot']}; to {args.threshold:.0%}: "
              f"{result['steps_to_threshold']}; final {result['curve'][-1][1]:.2f}; {result['wall_s']:.0f} s; "
              f"load {result['load_avg'][0]:.1f}", flush=True)
        results_path.write_text(json.dumps({"args": vars(args) | {"func": None, "settings": None},
                                            "results": list(done.values())}, indent=1))

    args.settings = settings
    run_jobs(order, one_run, args, record, args.jobs)
    report(json.loads(results_path.read_text())["results"], out, args.threshold, report_at)
    return 0
