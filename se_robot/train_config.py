"""What ``se-robot train`` runs: :class:`TrainConfig`, whose defaults are the defaults, and its one loader.

Where a value comes from, lowest first: the dataclass defaults below; a resumed run's saved
``config.yaml``; a recipe (``config/recipes/<name>.yaml``, a small diff over the defaults); the
command line's options; ``--set``. :func:`load_config` alone puts these layers together, with the
deep merge of ``se_robot.config``. Values that follow from another setting are derived here, once,
and have no key of their own (:data:`REPLACED` says which key sets each of them).

A Gymnasium env of another package (``env_id``) brings a few defaults of its own, beneath every
layer above (:func:`env_id_defaults`): the arm's defaults (pixels, two control ticks per action,
three-frame stacks, three-step returns) are choices for the arm's camera and control rate, not
for a state env, which gets no frame stack, n-step or action repeat unless asked for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from se_robot.agents.replay import ReplayConfig
from se_robot.config import ConfigError, Layer, merge, named_config, option, parse_set, read_yaml, resolve

ALGOS = ("drqv2", "sac", "mbpo")

#: Keys that are no longer settings -> the key that sets their value now. Any layer naming one stops.
REPLACED: dict[str, str] = {
    "replay.frame_stack": "frame_stack (the replay stacks as many frames as the env observes)",
    "agent.sac.gamma": "replay.discount (MBPO's model rollouts discount like the real batches)",
    "agent.gamma": "replay.discount (the replay builds every discounted target)",
    "total_steps": "steps",
}


@dataclass(frozen=True)
class TrainConfig:
    """One training run: the field defaults are the defaults (a recipe or --set changes some)."""

    task: str = option("reach", choices=("reach", "push", "lift"), help="task of the sim twin (or the real arm)")
    env_id: str = option("", help="a Gymnasium env id to train on instead of a task ('' : the task), e.g. "
                                  "Pendulum-v1 or my_pkg:MyEnv-v0 (the module that registers it); env holds "
                                  "its gym.make kwargs; obs_mode state: its vector, pixels/both: its image or "
                                  "render() frames (se_robot/envs/foreign.py)")
    algo: str = option("drqv2", choices=ALGOS, help="agent, looked up in se_robot.agents.registry")
    backend: str = option("sim", choices=("sim", "hardware", "ros"),
                          help="sim: the MuJoCo twin; hardware: SerialArm + camera; ros: arm_node/sim_node topics")
    obs_mode: str = option("pixels", choices=("pixels", "state", "both"),
                           help="what the agent observes (with env_id the default is state)")
    image_size: int = option(84, range=(16, 512), help="square camera image side (px)")
    frame_stack: int = option(3, range=(1, 16), help="frames per observation: the env's and the replay's "
                                                     "(replay.frame_stack is derived from it)")
    action_repeat: int = option(2, range=(1, 16), help="env control ticks per agent action")
    steps: int = option(100_000, range=(1, None), help="agent steps (env steps after action repeat) to train, "
                                                      "in total (also when resuming; train --more-steps N "
                                                      "sets it to the checkpoint's step + N)")
    seed: int = option(1, range=(0, None), help="seeds python, numpy, torch, the agent and every episode reset")
    learning_starts: int = option(1000, range=(1, None),
                                  help="online transitions in the replay before the first update; it only delays "
                                       "learning, not how the agent acts: sac and mbpo act with their untrained "
                                       "policy unless agent.random_steps (mbpo: agent.sac.random_steps) asks for "
                                       "uniform random actions; drqv2 acts uniformly for agent.num_expl_steps "
                                       "(2000); train --random-steps N sets the algo's key")
    demos: str = option("", help="episode dataset directory loaded into the demo buffer ('' : none)")
    encoder: str = option("", help="frozen pixel encoder file (se-robot pretrain-encoder) whose features sac "
                                   "and mbpo learn from on pixels ('' : none; drqv2 sets its own in agent)")
    eval_every: int = option(5000, range=(1, None), help="agent steps between evaluations")
    eval_episodes: int = option(10, range=(1, None), help="episodes per evaluation")
    eval_video: bool = option(True, help="write the first episode of each evaluation as mp4")
    stop_at_success: float = option(0.0, range=(0.0, 1.0),
                                    help="end training at the first evaluation with success >= this (0: never)")
    checkpoint_every: int = option(10_000, range=(1, None), help="agent steps between checkpoints (at episode ends)")
    checkpoint_every_s: float = option(600.0, range=(0.0, None),
                                       help="also checkpoint at the first episode end after this many seconds of "
                                            "training since the last checkpoint, so a crash on the arm loses "
                                            "minutes, not hours (0: steps only)")
    fault_policy: str = option("wait", choices=("wait", "exit"),
                               help="a latched fault (servo error, bus given up, e-stop, homing failed) pauses the "
                                    "run with a checkpoint; wait: hold the arm and wait fault_wait_s for the "
                                    "operator to reset the e-stop, then go on; exit: stop at once (resume later)")
    fault_wait_s: float = option(1800.0, range=(0.0, None),
                                 help="seconds to wait for the operator after a fault before the run stops "
                                      "(checkpointed, resumable; 0: wait as long as it takes)")
    fault_max_repeats: int = option(3, range=(1, None),
                                    help="fault pauses in a row (no step completed in between) the run waits "
                                         "through; one more is unrecoverable (the port stays gone, the arm "
                                         "faults again at once)")
    keep_checkpoints: int = option(3, range=(1, None), help="newest checkpoints kept")
    save_replay: bool = option(True, help="store the replay buffer in checkpoints (needed for exact resume)")
    log_every: int = option(1000, range=(1, None), help="agent steps between training-metric rows")
    tensorboard: bool = option(True, help="write TensorBoard events under <run>/tb")
    progress: bool = option(True, help="tqdm progress bar")
    device: str = option("auto", help="auto, cpu, cuda, cuda:N or mps")
    threads: int = option(0, range=(0, 256), help="torch CPU threads (0: torch's default)")
    async_learner: bool = option(False, help="update the agent in a background thread while the loop acts at the "
                                              "env's pace from a policy copy (what a real arm needs when an update "
                                              "takes longer than a control period; se_robot/train_async.py); "
                                              "false: act and update in turn, exactly reproducible and resumable")
    async_weights_every: int = option(1, range=(1, None), help="with async_learner: updates between refreshes of "
                                                              "the acting policy copy")
    async_max_backlog: int = option(0, range=(0, None),
                                    help="with async_learner: at an episode's end, wait while the learner owes "
                                         "more than this many updates (0: never wait); the arm idles between "
                                         "episodes so that learning per env step stays near the synchronous "
                                         "loop's, at the cost of arm time")
    rt_priority: int = option(0, range=(0, 99),
                              help="with async_learner: SCHED_FIFO priority of the acting thread while the "
                                   "loop runs (0: normal), as the arm and sim nodes' rt_priority; for a paced "
                                   "robot (backend hardware or ros), whose acting thread sleeps most of each "
                                   "tick. Needs root, CAP_SYS_NICE or an rtprio limit; otherwise the run warns "
                                   "and acts at normal priority")
    env: dict = option(default_factory=dict, help="extra make_env options (control_hz, reward_type, camera, ...)")
    reward_model: str = option("", help="success classifier file (se-robot reward train) whose sparse reward "
                                        "replaces the task's; episodes end on success ('' : the task's reward)")
    reward_threshold: float = option(0.0, range=(0.0, 1.0), help="the classifier's success probability "
                                                                 "threshold (0: the model's own)")
    teleop: str = option("", choices=("", "keyboard", "gamepad", "spacemouse", "leader"),
                         help="attach a teleop device that can take over ('' : none); its steps also go to the demo buffer")
    teleop_device: str = option("", help="evdev node, leader-arm port or tty of the teleop device ('' : default)")
    intervention_demo_capacity: int = option(50_000, range=(16, None), help="demo slots for interventions when no --demos")
    replay: ReplayConfig = option(default_factory=ReplayConfig,
                                  help="replay buffer (agents/replay.py); its frame_stack follows frame_stack")
    agent: dict = option(default_factory=dict, help="the algo's own config (validated by the agent); "
                                                    "for mbpo, sac.gamma follows replay.discount")

    def __post_init__(self) -> None:
        # Derived once, here, so every consumer (the loop, the ROS learner, a saved config.yaml)
        # sees the one value: the replay stacks the env's frames, MBPO's rollouts use the replay's discount.
        object.__setattr__(self, "replay", dataclasses.replace(self.replay, frame_stack=self.frame_stack))
        if self.algo == "mbpo" and isinstance(self.agent.get("sac", {}), dict):
            object.__setattr__(self, "agent", merge(self.agent, {"sac": {"gamma": self.replay.discount}}))
        if self.algo == "mbpo" and self.replay.n_step != 1:
            raise ConfigError("<train config>", "replay.n_step",
                              f"MBPO learns one-step dynamics and needs replay.n_step=1, got {self.replay.n_step}")
        if self.encoder and self.algo == "drqv2":
            raise ConfigError("<train config>", "encoder", "drqv2 takes a pretrained encoder in its agent config: "
                              "agent.encoder=checkpoint, agent.encoder_checkpoint=FILE, agent.freeze_encoder=true")
        if self.encoder and self.obs_mode == "state":
            raise ConfigError("<train config>", "encoder", "a pixel encoder needs obs_mode pixels or both, got state")
        if self.reward_model and self.obs_mode == "state":
            raise ConfigError("<train config>", "reward_model", "a success classifier judges camera frames: "
                              "use obs_mode pixels or both")
        if self.rt_priority and not self.async_learner:
            raise ConfigError("<train config>", "rt_priority", "needs async_learner: true (in the synchronous loop "
                              "the acting thread also runs the updates, and a real-time thread that computes "
                              "starves everything else on its core)")
        if self.env_id:
            self._check_env_id()
        if self.algo in ("sac", "mbpo") and self.obs_mode != "state" and not self.encoder:
            raise ConfigError("<train config>", "encoder", f"{self.algo} learns on vectors: with obs_mode "
                              f"{self.obs_mode} give a pretrained encoder file (se-robot pretrain-encoder), "
                              "or use obs_mode state")

    def _check_env_id(self) -> None:
        """What a Gymnasium env of another package cannot have: the arm's robot, reward and data."""
        for key, value, why in (("backend", self.backend != "sim", "the env runs in this process (keep backend sim)"),
                                ("reward_model", self.reward_model, "a success classifier judges the arm's camera"),
                                ("demos", self.demos, "demos are episodes recorded on the arm"),
                                ("teleop", self.teleop, "teleop devices drive the arm")):
            if value:
                raise ConfigError("<train config>", key, f"not with env_id {self.env_id!r}: {why}")

    @property
    def env_name(self) -> str:
        """What the run trains on: the env id, else the task (run names, messages)."""
        return self.env_id or self.task


def recipe_path(name_or_path: str | Path) -> Path:
    """``config/recipes/<name>.yaml`` for a bare name (an unknown one lists the recipes), else the path."""
    return named_config("recipes", name_or_path)


def read_recipe(name_or_path: str | Path) -> dict:
    """A recipe's settings as written: a diff over the :class:`TrainConfig` defaults."""
    return read_yaml(recipe_path(name_or_path))


def load_config(recipe: str | Path | None = None, overrides: dict | None = None, set_pairs: Sequence[str] = (),
                *, saved: str | Path | None = None, source: str = "<overrides>",
                set_source: str = "--set") -> TrainConfig:
    """The validated config: defaults, ``saved``, ``recipe``, ``overrides`` (named ``source`` in
    errors), then ``set_pairs`` (``key=value``, named ``set_source``), each deep-merged on the last.

    ``saved`` is a run's own ``config.yaml`` (resume): the derived values it records are dropped
    and derived again, so a changed ``frame_stack`` or ``replay.discount`` carries through.
    """
    layers: list[Layer] = []
    if saved is not None:
        data = read_yaml(saved)
        for derived in REPLACED:
            data = _without(data, derived)
        layers.append((str(saved), data))
    if recipe:
        path = recipe_path(recipe)
        layers.append((str(path), read_yaml(path)))
    if overrides:
        layers.append((source, overrides))
    if set_pairs:
        layers.append((set_source, parse_set(set_pairs, set_source)))
    given: dict = {}
    for _, data in layers:
        given = merge(given, data)
    if given.get("env_id"):
        layers.insert(0, ("<env_id defaults>", env_id_defaults(given.get("obs_mode", "state"))))
    return resolve(TrainConfig, layers, REPLACED)


def env_id_defaults(obs_mode: str) -> dict:
    """The defaults a Gymnasium env id changes (beneath every layer): its vector, one control tick
    per action, and for a state env no frame stack and one-step returns (MBPO's setting too)."""
    defaults: dict = {"obs_mode": "state", "action_repeat": 1}
    if obs_mode == "state":
        defaults.update(frame_stack=1, replay={"n_step": 1})
    return defaults


def _without(data: dict, dotted: str) -> dict:
    """``data`` less the key ``dotted`` (a copy along its path; absent keys are fine)."""
    head, _, rest = dotted.partition(".")
    if head not in data:
        return data
    if not rest:
        return {k: v for k, v in data.items() if k != head}
    if not isinstance(data[head], dict):
        return data
    return {**data, head: _without(data[head], rest)}
