"""``se-robot train``: train an agent on the sim twin, the real arm or over ROS."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from se_robot.commands.record import add_display_option, open_display_of


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train an agent (DrQ-v2, SAC, MBPO) on a task or a Gymnasium env",
                              description="Train an agent. The defaults are TrainConfig's (se_robot/train_config.py); a "
                              "recipe (--config), these options and --set change them, in that order.")
    p.add_argument("--task", help="reach | push | lift")
    p.add_argument("--env-id", dest="env_id", metavar="ID",
                   help="train on a Gymnasium env instead of a task: an id (Pendulum-v1) or module:id (the module "
                        "registers it); Box state or image (+state) observations, bounded Box actions; its "
                        "gym.make kwargs with --set env.KEY=VALUE; defaults to obs_mode state, action repeat 1, "
                        "and on state no frame stack or n-step")
    p.add_argument("--algo", help="drqv2 | sac | mbpo")
    p.add_argument("--demos", metavar="DIR", help="episode dataset loaded into the demo buffer; with --resume, "
                   "added to the demos the checkpoint holds (demos recorded on the arm for a sim-pretrained run)")
    p.add_argument("--random-steps", dest="random_steps", type=int, metavar="N",
                   help="the first N steps act uniformly at random (a warm-up; sets agent.random_steps for sac, "
                        "agent.sac.random_steps for mbpo, agent.num_expl_steps for drqv2). Unlike "
                        "learning_starts, which only delays updates while the policy acts")
    p.add_argument("--steps", type=int, metavar="N", help="agent steps to train, in total: with --resume the "
                   "run stops when its step count reaches N (a resumed run at or past N is an error)")
    p.add_argument("--more-steps", dest="more_steps", type=int, metavar="N",
                   help="with --resume: train N steps more than the checkpoint has (the new total is its step + N)")
    p.add_argument("--obs-mode", dest="obs_mode", help="pixels | state | both")
    p.add_argument("--encoder", metavar="FILE", help="sac/mbpo on pixels: a frozen pretrained encoder "
                   "(se-robot pretrain-encoder) whose features they learn from")
    p.add_argument("--image-size", dest="image_size", type=int, metavar="PX", help="square camera image side")
    add_backend_options(p)
    p.add_argument("--teleop", help="keyboard | gamepad | spacemouse | leader: an operator can take over; "
                   "takeovers also go to the demo buffer")
    p.add_argument("--teleop-device", dest="teleop_device", metavar="PATH",
                   help="evdev node, leader-arm serial port or tty of the teleop device")
    p.add_argument("--reward-model", dest="reward_model", metavar="FILE",
                   help="success classifier (se-robot reward train) as the reward: sparse, episodes end on success")
    p.add_argument("--reward-threshold", dest="reward_threshold", type=float, metavar="P",
                   help="the classifier's success probability threshold (default: the model's own)")
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/<task or env id>-<algo>-s<seed>-<time>)")
    p.add_argument("--resume", metavar="DIR", help="run directory or checkpoint to continue (newest checkpoint); "
                   "ask for more training with --more-steps N or a larger --steps; --backend hardware continues "
                   "a sim-trained run on the arm")
    p.add_argument("--replay", choices=("keep", "drop"), help="with --resume: keep the checkpoint's replay "
                   "(default) or drop it, so a sim-pretrained run fine-tuned on the arm learns from arm "
                   "transitions only (agent weights, optimizers, demos and the step count are kept; updates "
                   "wait for learning_starts new transitions)")
    p.add_argument("--seed", type=int)
    p.add_argument("--config", metavar="RECIPE", help="a recipe: a name in config/recipes/ (e.g. reach_mbpo_quick) "
                   "or a YAML path; it sets only what differs from the defaults")
    p.add_argument("--set", dest="set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, nested with dots: --set replay.capacity=50000")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_display_option(p)
    p.set_defaults(func=run)


def add_backend_options(p: argparse.ArgumentParser) -> None:
    """Where the env runs: the same option names for train and evaluate (each is an ``env.`` key)."""
    p.add_argument("--backend", help="sim (the MuJoCo twin) | hardware (SerialArm + camera) | "
                   "ros (topics of arm_node or sim_node)")
    p.add_argument("--port", metavar="PATH", help="hardware: the arm's serial port (env.port), e.g. /dev/ttyACM0 "
                   "or the pty se-robot emulate prints")
    p.add_argument("--arm-id", dest="arm_id", metavar="ID",
                   help="hardware: the arm id whose stored calibration SerialArm uses (default: the arm's name); "
                        "same as --set env.arm_id=ID")
    p.add_argument("--calibration", metavar="FILE", help="hardware: a calibration YAML instead of --arm-id's "
                   "(env.calibration)")
    p.add_argument("--scene-camera", dest="scene_camera", metavar="NAME",
                   help="hardware: scene camera, a name in config/cameras, a YAML path, or none (env.scene_camera)")
    p.add_argument("--camera-source", dest="camera_source", metavar="SRC",
                   help="hardware: the scene camera's source, a device index or a URL (env.camera_source)")
    p.add_argument("--scene-operator", dest="operator", metavar="WHO",
                   help="push/lift on a robot that cannot restore its own scene: who puts the cube back between "
                        "episodes, terminal (ask here, the default) or http://HOST:PORT of a scene service "
                        "(se-robot emulate --scene-port) (env.operator)")


#: Backend options that are ``env.`` keys of the same name.
ENV_OPTIONS = ("port", "arm_id", "calibration", "scene_camera", "camera_source")


def backend_overrides(args: argparse.Namespace) -> dict:
    """``backend`` and the ``env.`` keys the backend options give (only those given)."""
    env = {}
    for key in ENV_OPTIONS:
        value = getattr(args, key, None)
        if value is not None:
            env[key] = None if key == "scene_camera" and value.lower() == "none" else value
    if getattr(args, "operator", None) is not None:   # any robot that cannot restore a scene, not only hardware
        env["operator"] = args.operator
    if isinstance(env.get("camera_source"), str) and env["camera_source"].isdigit():
        env["camera_source"] = int(env["camera_source"])   # a device index, not a file name
    out: dict = {"env": env} if env else {}
    if getattr(args, "backend", None) is not None:
        out["backend"] = args.backend
    return out


#: ``env.`` keys only the sim twin reads: domain randomization and the aligned camera.
SIM_ENV_OPTIONS = ("randomize", "twin_camera")


def fit_backend(cfg, given: dict, set_pairs: list[str] | None = None):
    """``cfg`` for its backend: hardware options given on the command line for another backend are an
    error; with ``set_pairs`` (a saved run's config under these ``--set`` pairs), the ones the saved
    run carries from the arm and nobody set again are dropped when it runs elsewhere (a run trained
    on the arm evaluated in sim), and so are the twin's own (:data:`SIM_ENV_OPTIONS`) when a sim run
    goes to the arm. ``given`` is what :func:`backend_overrides` returned."""
    import dataclasses

    from se_robot.config import ConfigError, parse_set

    if cfg.backend != "sim" and set_pairs is not None:
        # the twin's own options stay with a sim-trained run fine-tuned or evaluated on the arm
        explicit = {*given.get("env", {}), *parse_set(set_pairs, "--set").get("env", {})}
        env = {k: v for k, v in cfg.env.items() if k not in SIM_ENV_OPTIONS or k in explicit}
        cfg = cfg if env == cfg.env else dataclasses.replace(cfg, env=env)
    if cfg.backend == "hardware":
        return cfg
    named = [k for k in given.get("env", {}) if k in ENV_OPTIONS and k != "arm_id"]   # check_arm_id: --arm-id
    if named:
        raise ConfigError("--" + named[0].replace("_", "-"), str(given["env"][named[0]]),
                          f"a hardware option; backend is {cfg.backend!r} (add --backend hardware)")
    if set_pairs is None:
        return cfg
    explicit = {*given.get("env", {}), *parse_set(set_pairs, "--set").get("env", {})}
    env = {k: v for k, v in cfg.env.items() if k not in ENV_OPTIONS or k in explicit}
    return cfg if env == cfg.env else dataclasses.replace(cfg, env=env)


#: Options that are config keys of the same name (the rest steer the command itself).
CONFIG_OPTIONS = ("task", "env_id", "algo", "demos", "encoder", "steps", "obs_mode", "image_size", "seed", "teleop",
                  "teleop_device", "reward_model", "reward_threshold")


def check_arm_id(cfg) -> None:
    """An arm id names a calibration on this machine: only the hardware backend reads one (a ROS
    arm_node has its own ``arm_id`` parameter)."""
    from se_robot.config import ConfigError

    if "arm_id" in cfg.env and cfg.backend != "hardware":
        raise ConfigError("--arm-id", str(cfg.env["arm_id"]),
                          f"only the hardware backend reads a calibration; backend is {cfg.backend!r}"
                          + (" (set arm_node's arm_id parameter instead)" if cfg.backend == "ros" else ""))


def resolve_config(args: argparse.Namespace):
    """The validated TrainConfig and the run directory, before anything is built."""
    from se_robot import checkpoint
    from se_robot.config import ConfigError
    from se_robot.train_config import load_config

    overrides = {k: getattr(args, k) for k in CONFIG_OPTIONS if getattr(args, k, None) is not None}
    given = backend_overrides(args)
    overrides.update(given)
    if getattr(args, "no_progress", False):
        overrides["progress"] = False
    more = getattr(args, "more_steps", None)
    if more is not None and (not args.resume or args.steps is not None or more < 1):
        raise ConfigError("--more-steps", str(more), "needs --resume, without --steps (which is the total), "
                                                     "and N >= 1")
    if getattr(args, "replay", None) and not args.resume:
        raise ConfigError("--replay", args.replay, "keeps or drops a checkpoint's replay: it needs --resume")
    if args.resume:
        if args.config:
            raise ConfigError("--config", args.config, "a resumed run keeps its own config; change keys with --set")
        try:
            ckpt = checkpoint.resolve(args.resume)
        except FileNotFoundError as e:
            raise ConfigError("--resume", args.resume, str(e)) from None
        if more is not None:
            overrides["steps"] = checkpoint_step(ckpt) + more
        cfg = fit_backend(load_config(None, overrides, args.set, saved=ckpt / "config.yaml", source="command line"),
                          given, args.set)
        cfg = with_random_steps(cfg, getattr(args, "random_steps", None))
        check_env_id(cfg)
        check_arm_id(cfg)
        done = checkpoint_step(ckpt)
        if done >= cfg.steps:
            raise ConfigError("--resume", args.resume,
                              f"the run is at step {done} and steps={cfg.steps}: nothing left to train; ask for "
                              f"more with --more-steps N (or --steps M, M > {done}: the new total)")
        if args.demos and not (Path(args.demos) / "dataset.json").is_file():
            raise ConfigError("--demos", args.demos, "not an episode dataset (no dataset.json there)")
        run_dir = Path(args.out) if args.out else ckpt.parent.parent
        return cfg, run_dir, ckpt
    cfg = with_random_steps(fit_backend(load_config(args.config, overrides, args.set, source="command line"), given),
                            getattr(args, "random_steps", None))
    cfg = with_absolute_files(cfg)
    check_env_id(cfg)
    check_arm_id(cfg)
    if cfg.demos and not (Path(cfg.demos) / "dataset.json").is_file():
        raise ConfigError("--demos", cfg.demos, "not an episode dataset (no dataset.json there)")
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in cfg.env_name)   # module:ns/Id-v0 -> one name
    run_dir = Path(args.out) if args.out else Path("runs") / (
        f"{name}-{cfg.algo}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}")
    if checkpoint.list_checkpoints(run_dir):
        raise ConfigError("--out", str(run_dir), "already holds checkpoints; continue it with --resume "
                          f"{run_dir} or pick another --out")
    return cfg, run_dir, None


def with_absolute_files(cfg):
    """``cfg`` with the model files it names (the frozen encoder, the reward classifier) as absolute
    paths: the run's saved config is read again by ``--resume`` and ``evaluate``, from wherever they
    are started."""
    import dataclasses

    def absolute(path: str) -> str:
        return str(Path(path).resolve()) if path and Path(path).is_file() else path

    agent = dict(cfg.agent)
    if agent.get("encoder_checkpoint"):
        agent["encoder_checkpoint"] = absolute(agent["encoder_checkpoint"])
    return dataclasses.replace(cfg, agent=agent, encoder=absolute(cfg.encoder),
                               reward_model=absolute(cfg.reward_model))


def check_env_id(cfg) -> None:
    """A Gymnasium env id that cannot be made, or whose spaces se_robot cannot map, stops here with
    the reason, before a run directory exists (the env is made, reset once, so rendered pixels
    are tried too, and closed)."""
    if not cfg.env_id:
        return
    import gymnasium as gym

    from se_robot.config import ConfigError
    from se_robot.envs import make_env

    try:
        env = make_env(env_id=cfg.env_id, obs_mode=cfg.obs_mode, image_size=cfg.image_size, frame_stack=0, **cfg.env)
        try:
            env.reset(seed=cfg.seed)
        finally:
            env.close()
    except (gym.error.Error, ImportError, ValueError, TypeError) as e:
        raise ConfigError("--env-id", cfg.env_id, str(e)) from None


def with_random_steps(cfg, random_steps: int | None):
    """``cfg`` with ``--random-steps N`` in the agent key that sets its algo's uniform random warm-up."""
    import dataclasses

    from se_robot.config import ConfigError, merge

    if random_steps is None:
        return cfg
    if random_steps < 0:
        raise ConfigError("--random-steps", str(random_steps), "must be >= 0")
    key = {"drqv2": {"num_expl_steps": random_steps}, "mbpo": {"sac": {"random_steps": random_steps}}}
    return dataclasses.replace(cfg, agent=merge(cfg.agent, key.get(cfg.algo, {"random_steps": random_steps})))


def checkpoint_step(ckpt: Path) -> int:
    """The step a checkpoint was taken at, from its trainer state (tensors and numbers only)."""
    import torch

    return int(torch.load(ckpt / "trainer.pt", map_location="cpu", weights_only=True)["step"])


def show_trainer(trainer, display) -> None:
    """The live view of training steps (``train/``) and evaluation episodes (``eval/``); a real arm's
    one env shows both under ``train/``."""
    from se_robot.envs.display import RerunDisplay

    shared = trainer.eval_env is trainer.env
    trainer.env = RerunDisplay(trainer.env, display, "train")
    trainer.eval_env = trainer.env if shared else RerunDisplay(trainer.eval_env, display, "eval")


def run(args: argparse.Namespace) -> int:
    cfg, run_dir, ckpt = resolve_config(args)
    from se_robot.envs.display import close_display
    from se_robot.train import FaultExit, build_trainer
    from se_robot.train_faults import EXIT_CODE

    display = open_display_of(args)
    resumed = {"drop_replay": getattr(args, "replay", None) == "drop", "add_demos": args.demos or ""} if ckpt else {}
    trainer = build_trainer(cfg, run_dir, resume=ckpt, **resumed)
    if display is not None:
        show_trainer(trainer, display)
    start, evals = trainer.step, trainer.last_eval
    print(f"se-robot train: {cfg.algo} on {cfg.env_name} ({cfg.obs_mode}, {cfg.backend}), run dir {run_dir}, "
          + (f"resumed at step {start}, training to step {cfg.steps}" if ckpt else f"{cfg.steps} steps")
          + (f"; replay {trainer.replay.transitions} transitions"
             + (f", demos {trainer.demos.transitions}" if trainer.demos is not None else "") if ckpt else ""))
    try:
        metrics = trainer.train()
    except FaultExit as e:
        print(f"se-robot train: {e}", file=sys.stderr)
        return EXIT_CODE
    finally:
        trainer.logger.close()
        trainer.env.close()  # hardware: torque policy on disconnect; teleop: release the device
        if trainer.eval_env is not trainer.env:
            trainer.eval_env.close()
        if display is not None:
            close_display(display)
    ran = trainer.step - start
    evaluated = metrics is not evals   # a new evaluation replaces the dict; an old one is not this run's
    print(f"done at step {trainer.step} ({ran} steps this run" + (f", {trainer.pauses} fault pauses" if trainer.pauses
                                                                  else "") + "): "
          + (", ".join(f"{k}={v:.3g}" for k, v in metrics.items()) if evaluated and metrics
             else "no evaluation in this run"))
    return 0
