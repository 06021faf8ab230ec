"""The training loop: owns the envs, the agent, the replay buffers, the logger and checkpoints.

``Trainer(cfg, env, eval_env, agent, replay, demos, logger, run_dir)`` follows tdmpc2's shape; the
agent is a plain object (``se_robot.agents.base.Agent``) that samples from the buffers itself.
Observations are dicts with the keys of ``se_robot.agents.obs``; the loop hands them to the agent
and the replay as the env gives them, never reshaping or guessing a layout.

Resume is exact: periodic checkpoints are taken at the first episode boundary at or after each
multiple of ``checkpoint_every``, and every training episode is reset with seed ``seed + episode``,
so a resumed run replays the same env, agent and replay random streams as one never stopped.
A ``kill -9`` loses at most the steps since the last checkpoint (see ``se_robot.checkpoint``); on
the arm a checkpoint also comes every ``checkpoint_every_s`` seconds, so that is minutes, not hours.
Faults on the arm pause the loop instead of ending it (``se_robot.train_faults``).
With ``async_learner`` the agent updates in a background thread while the loop acts at the env's
pace from a policy copy (``se_robot.train_async``); such a run resumes, but not exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from se_robot import checkpoint
from se_robot.agents.obs import PIXELS, newest_frame
from se_robot.agents.replay import ReplayBuffer
from se_robot.config import ConfigError, merge, to_dict
from se_robot.envs.operator import SceneSetupError
from se_robot.train_async import AsyncActing, BackgroundLearner, acting_copy, acting_priority, updates_owed
from se_robot.train_faults import PAUSING_FAULTS, FaultExit, FaultPauses, hold_arm  # noqa: F401  (FaultExit: callers)
from se_robot.train_config import TrainConfig, load_config  # noqa: F401  (load_config: known here to callers)

EVAL_SEED_OFFSET = 1_000_000   # eval episodes use seeds seed+1e6+i: the same start states every evaluation
ACTING_SEED_OFFSET = 2_000_000  # the async loop's acting copy draws its own exploration from seed+2e6


def make_envs(cfg: TrainConfig):
    """Training and evaluation envs through ``se_robot.envs.make_env`` (frame stack, action repeat,
    the learned reward of ``cfg.reward_model``; scene operator options ride in ``cfg.env``; with
    ``cfg.env_id`` a Gymnasium env of another package, ``cfg.env`` its ``gym.make`` kwargs)."""
    from se_robot.envs import make_env

    kwargs = dict(backend=cfg.backend, frame_stack=cfg.frame_stack, action_repeat=cfg.action_repeat,
                  obs_mode=cfg.obs_mode, image_size=cfg.image_size, **cfg.env)
    if cfg.env_id:
        kwargs["env_id"] = cfg.env_id
    else:
        kwargs.update(reward_model=cfg.reward_model, reward_threshold=cfg.reward_threshold or None)
    if cfg.encoder:
        from se_robot.agents.base import pick_device

        kwargs.update(encoder=cfg.encoder, encoder_device=pick_device(cfg.device))
    env = make_env(cfg.task, **kwargs)
    if cfg.backend != "sim":  # one real arm: evaluation episodes run on the same env
        return env, env
    if cfg.eval_video:  # film the scene camera, whatever the agent observes
        kwargs.update(render_mode="rgb_array", **({} if cfg.env_id else {"render_size": 256}))
    return env, make_env(cfg.task, **kwargs)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer(FaultPauses, AsyncActing):
    """Runs ``cfg.steps`` agent steps with evaluation, logging and checkpoints."""

    def __init__(self, cfg: TrainConfig, env: Any, eval_env: Any, agent: Any, replay: ReplayBuffer,
                 demos: ReplayBuffer | None, logger: Any, run_dir: str | Path):
        self.cfg, self.env, self.eval_env, self.agent = cfg, env, eval_env, agent
        self.replay, self.demos, self.logger = replay, demos, logger
        self.run_dir = Path(run_dir)
        self.step = 0
        self.episode = 0
        self.next_checkpoint = cfg.checkpoint_every
        self.last_eval: dict[str, float] = {}
        self.train_seconds = 0.0
        self.interventions = 0
        self._in_takeover = False
        self.pauses = 0                                  # fault pauses in this process
        self.waiting_for_operator = threading.Event()    # set while a pause waits for the e-stop reset
        self._fault_streak = 0                           # pauses since the last completed step
        self._ep_return, self._ep_len, self._ep_success = 0.0, 0, False
        self._ep_safety = {"clipped": 0, "held": 0}      # steps whose command the safety filter changed
        self._bar: Any = None
        self._tick = time.perf_counter()
        self._saved_at_s = time.monotonic()
        # async_learner: a BackgroundLearner owns agent and buffers while train() runs; the loop
        # acts with a copy of the policy, refreshed between steps (``acting is agent`` otherwise)
        self.acting = acting_copy(cfg.algo, env, agent, _agent_config(cfg), cfg.device, cfg.seed + ACTING_SEED_OFFSET) \
            if cfg.async_learner else agent
        self.learner: BackgroundLearner | None = None
        self.learner_updates = 0
        self._saved_learner_updates = 0   # in the newest checkpoint: the learner may update after it
        self._acting_version = 0

    # ------------------------------------------------------------------ state
    def trainer_state(self, mid_episode: bool) -> dict[str, Any]:
        env_rng = self.env.unwrapped.np_random
        return {"step": self.step, "episode": self.episode, "next_checkpoint": self.next_checkpoint,
                "last_eval": self.last_eval, "train_seconds": self.train_seconds, "mid_episode": mid_episode,
                "interventions": self.interventions,
                "rng": checkpoint.rng_state(),
                "env_rng": env_rng.bit_generator.state,
                **({"learner_updates": self.learner_updates} if self.cfg.async_learner else {})}

    def load_trainer_state(self, state: dict[str, Any]) -> None:
        self.step, self.episode = int(state["step"]), int(state["episode"])
        self.next_checkpoint = int(state["next_checkpoint"])
        self.last_eval, self.train_seconds = dict(state["last_eval"]), float(state["train_seconds"])
        self.interventions = int(state.get("interventions", 0))
        # from a synchronous run: it had made every update its transitions allowed
        self.learner_updates = int(state.get("learner_updates",
                                             updates_owed(self.replay.transitions, self.cfg.learning_starts, 0)))
        checkpoint.set_rng_state(state["rng"])
        self.env.unwrapped.np_random.bit_generator.state = state["env_rng"]   # episodes also reset with seed+episode

    def save_checkpoint(self, mid_episode: bool = False) -> Path:
        buffers = {"replay": self.replay, "demos": self.demos} if self.cfg.save_replay else None
        self._saved_at_s = time.monotonic()
        with self.learner.paused() if self.learner else contextlib.nullcontext():   # between two updates
            if self.learner:
                self.learner_updates = self.learner.updates
            self._saved_learner_updates = self.learner_updates
            return checkpoint.save(self.run_dir, self.step, self.agent.state_dict(), self.trainer_state(mid_episode),
                                   to_dict(self.cfg), buffers, self.cfg.keep_checkpoints)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict[str, float]:
        """``eval_episodes`` greedy episodes from fixed start states; the first one filmed."""
        returns, successes, lengths, frames = [], [], [], []
        self._refresh_acting()
        for i in range(self.cfg.eval_episodes):
            obs, info = self.eval_env.reset(seed=self.cfg.seed + EVAL_SEED_OFFSET + i)
            film = self.cfg.eval_video and i == 0
            total, success, length, done = 0.0, False, 0, False
            while not done:
                if film:
                    frames.append(self._frame(obs))
                action = self.acting.act(obs, self.step, eval_mode=True)
                obs, reward, terminated, truncated, info = self.eval_env.step(action)
                total += float(reward)
                success |= bool(info.get("is_success", False))
                length += 1
                done = terminated or truncated
            if film:
                frames.append(self._frame(obs))
            returns.append(total)
            successes.append(float(success))
            lengths.append(length)
        if frames and frames[0] is not None:
            self._write_video(frames)
        return {"eval/success": float(np.mean(successes)), "eval/return": float(np.mean(returns)),
                "eval/episode_length": float(np.mean(lengths))}

    def _frame(self, obs: dict[str, np.ndarray]) -> np.ndarray | None:
        if self.eval_env.render_mode == "rgb_array":
            return np.asarray(self.eval_env.render())
        if PIXELS not in obs:
            return None
        return newest_frame(obs[PIXELS]).transpose(1, 2, 0)   # the agent's view: newest frame of its stack

    def _write_video(self, frames: list[np.ndarray]) -> None:
        import imageio.v2 as imageio

        out = self.run_dir / "videos" / f"eval_{self.step:09d}.mp4"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp.mp4")
        # macro_block_size=1: small robot images (84x84) are not multiples of 16.
        fps = self.eval_env.metadata.get("render_fps") or \
            float(self.cfg.env.get("control_hz", 10)) / self.cfg.action_repeat
        imageio.mimsave(tmp, frames, fps=max(1.0, float(fps)), macro_block_size=1)
        os.replace(tmp, out)

    # ------------------------------------------------------------------ the loop
    def _reset(self) -> dict[str, np.ndarray]:
        obs, _ = self.env.reset(seed=self.cfg.seed + self.episode)
        self._buffer_in().add_first(obs)
        return obs

    def train(self, stop_at: int | None = None) -> dict[str, float]:
        """Train until ``cfg.steps`` (or ``stop_at``); returns the last evaluation's metrics.

        A latched fault pauses the run (see ``se_robot.train_faults``); an unrecoverable one
        raises :class:`FaultExit` after its checkpoint is written.
        """
        cfg = self.cfg
        end = min(cfg.steps, stop_at or cfg.steps)
        if self.step >= end:
            return self.last_eval
        if cfg.progress:
            from tqdm import tqdm
            self._bar = tqdm(total=cfg.steps, initial=self.step, unit="step", dynamic_ncols=True, smoothing=0.05)
        try:
            if cfg.async_learner:
                self._start_learner()
            with acting_priority(cfg.rt_priority, self._note):   # after the learner's start: it stays normal
                self._loop(end)
            self._refresh_acting()   # async: a learner error after the last step ends the run here too
        except SceneSetupError as e:
            raise self._setup_exit(e) from e
        finally:
            self._stop_learner()
            if self._bar is not None:
                self._bar.close()
                self._bar = None
        if self.step >= cfg.steps and self.step % cfg.eval_every != 0:
            try:
                self._log_eval()
            except (*PAUSING_FAULTS, SceneSetupError) as e:   # the training is done and saved below: say why no final eval
                self._note(f"final evaluation stopped by a fault: {e}; "
                           + (hold_arm(self.env.unwrapped.robot, str(e)) or "the arm holds, e-stop latched"))
        if self._ep_len:   # stopped mid-episode: the final checkpoint is not a resume point for exactness
            self.save_checkpoint(mid_episode=True)
        elif not checkpoint.list_checkpoints(self.run_dir) or \
                checkpoint.list_checkpoints(self.run_dir)[-1].name != f"step_{self.step:09d}" or \
                (cfg.async_learner and self.learner_updates != self._saved_learner_updates):
            self.save_checkpoint()
        return self.last_eval

    def _loop(self, end: int) -> None:
        cfg = self.cfg
        obs = None
        if self.step == 0 and not self.last_eval:
            try:
                self._log_eval()
            except PAUSING_FAULTS as e:   # one arm: evaluation episodes fault like training ones
                obs = self._pause_then_reset(f"fault during evaluation: {e}", e)
        self._tick = time.perf_counter()
        obs = obs if obs is not None else self._start_episode()
        update_metrics: dict[str, float] = {}
        while self.step < end:
            self._refresh_acting()
            action = self.acting.act(obs, self.step, eval_mode=False)
            prev_obs = obs
            try:
                obs, reward, terminated, truncated, info = self.env.step(action)
            except PAUSING_FAULTS as e:
                obs = self._interrupted(f"fault during a step: {e}", e)
                continue
            latched = self._latched_reason()   # a teleop key, the ROS service, a fault that held
            if latched and not terminated:
                truncated, info = True, {**info, "truncation_reason": f"e-stop latched: {latched}"}
            # With a teleop device attached, what the arm did may be the operator's action.
            executed = info.get("executed_action", action)
            self._buffer_in().add(executed, float(reward), obs, terminated, truncated)
            self._record_intervention(info, prev_obs, executed, float(reward), obs, terminated, truncated)
            self.step += 1
            self._fault_streak = 0
            self._ep_return += float(reward)
            self._ep_len += 1
            self._ep_success |= bool(info.get("is_success", False))
            for key in self._ep_safety:
                self._ep_safety[key] += int(bool(info.get(f"safety/{key}", False)))
            if self.learner is not None:
                update_metrics = self._learner_metrics() or update_metrics
            elif self.replay.transitions >= cfg.learning_starts:
                update_metrics = self.agent.update(self.replay, self.demos, self.step) or update_metrics
            if self.step % cfg.log_every == 0 and update_metrics:
                self.logger.log(update_metrics, self.step)
            if self.step % cfg.eval_every == 0:
                self._account_time()
                try:
                    self._log_eval()
                except PAUSING_FAULTS as e:   # one arm: evaluation episodes fault like training ones
                    obs = self._interrupted(f"fault during evaluation: {e}", e)
                    continue
                if cfg.stop_at_success and self.last_eval.get("eval/success", 0.0) >= cfg.stop_at_success:
                    end = self.step   # solved: the run ends here, checkpointed like any other end
            if self._bar is not None:
                self._bar.update(1)
                if self.last_eval:
                    self._bar.set_postfix(success=f"{self.last_eval['eval/success']:.2f}", ep=self.episode,
                                          refresh=False)
            if terminated or truncated:
                self._end_episode(info.get("truncation_reason"))
                self._periodic_checkpoint()
                self._wait_for_learner()
                if self.step < end and latched:
                    obs = self._pause_then_reset(f"e-stop latched: {latched}", None)
                elif self.step < end:
                    obs = self._start_episode()
        self._account_time()

    def _account_time(self) -> None:
        now = time.perf_counter()
        self.train_seconds += now - self._tick
        self._tick = now

    def _end_episode(self, reason: str | None = None) -> None:
        """Count and log the episode that just ended; ``reason`` when something other than the task
        ended it (a fault, a stale reading), also said on stderr and in ``events.log``."""
        self.episode += 1
        self.logger.log({"train/episode_return": self._ep_return, "train/episode_length": self._ep_len,
                         "train/success": float(self._ep_success), "train/episode": self.episode,
                         "train/interrupted": float(reason is not None),
                         **{f"train/safety_{k}": float(v) for k, v in self._ep_safety.items()}}, self.step)
        if reason:
            self._note(f"episode {self.episode} truncated after {self._ep_len} steps: {reason}")
        self._ep_return, self._ep_len, self._ep_success = 0.0, 0, False
        self._ep_safety = dict.fromkeys(self._ep_safety, 0)

    def _periodic_checkpoint(self) -> None:
        """At an episode end: every ``checkpoint_every`` steps, and every ``checkpoint_every_s`` seconds."""
        cfg = self.cfg
        due_time = cfg.checkpoint_every_s > 0 and time.monotonic() - self._saved_at_s >= cfg.checkpoint_every_s
        if self.step < self.next_checkpoint and not due_time:
            return
        while self.next_checkpoint <= self.step:
            self.next_checkpoint += cfg.checkpoint_every
        self._account_time()
        self.save_checkpoint()

    def _record_intervention(self, info: dict, prev_obs: dict[str, np.ndarray], action: np.ndarray, reward: float,
                             obs: dict[str, np.ndarray], terminated: bool, truncated: bool) -> None:
        """Operator steps go to the demo buffer too (HIL-SERL): each takeover is one demo episode."""
        if "intervention" not in info or self.demos is None:
            return
        if info["intervention"]:
            if not self._in_takeover:
                self._buffer_in(demos=True).add_first(prev_obs)  # closes the previous takeover as truncated
                self._in_takeover = True
            self._buffer_in(demos=True).add(action, reward, obs, terminated, truncated)
            self._in_takeover = not (terminated or truncated)
        else:
            self._in_takeover = False
        self.interventions += int(bool(info["intervention"]))
        if terminated or truncated:
            self.logger.log({"train/intervention_rate": float(info.get("intervention_rate", 0.0)),
                             "train/intervention_steps": float(self.interventions)}, self.step)

    def _log_eval(self) -> None:
        metrics = self.evaluate()
        metrics["eval/episodes_trained"] = float(self.episode)
        metrics["eval/train_seconds"] = self.train_seconds
        self.last_eval = metrics
        self.logger.log(metrics, self.step)


# ---------------------------------------------------------------------- assembly
def build_trainer(cfg: TrainConfig, run_dir: str | Path, resume: str | Path | None = None,
                  envs: tuple[Any, Any] | None = None, *, drop_replay: bool = False,
                  add_demos: str = "") -> Trainer:
    """Envs, agent, buffers and logger for ``cfg``; with ``resume``, restored from that checkpoint.

    A resumed run moving to another backend (a sim run fine-tuned on the arm) may start its replay
    empty (``drop_replay``: the agent, its optimizers and the step counter are kept) and take an
    episode dataset recorded there into its demo buffer next to the demos it had (``add_demos``)."""
    from se_robot.logger import Logger

    run_dir = Path(run_dir)
    saved = checkpoint.load(resume) if resume else None
    seed_everything(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    env, eval_env = envs or make_envs(cfg)
    agent, replay, demos = make_learner(cfg, env, saved["path"] if saved else None, takeovers=bool(cfg.teleop),
                                        drop_replay=drop_replay, add_demos=add_demos)
    if cfg.teleop:
        env = attach_teleop(env, cfg)
    logger = Logger(run_dir, tensorboard=cfg.tensorboard,
                    resume_step=int(saved["trainer"]["step"]) if saved else None)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    trainer = Trainer(cfg, env, eval_env, agent, replay, demos, logger, run_dir)
    if saved:
        try:
            agent.load_state_dict(saved["agent"])
        except RuntimeError as e:   # torch's size mismatch: the checkpoint's networks for other spaces
            raise ConfigError("--resume", str(saved["path"]),
                              f"its agent was trained on other observation or action shapes than this env's "
                              f"(observations {_shapes(env.observation_space)}, actions "
                              f"{env.action_space.shape}): {str(e).strip().splitlines()[-1].strip()}") from None
        trainer.load_trainer_state(saved["trainer"])
        if trainer.acting is not agent:
            trainer.acting.load_acting_state_dict(agent.acting_state_dict())
    return trainer


def make_learner(cfg: TrainConfig, env: Any, ckpt_dir: Path | None = None, takeovers: bool = False,
                 drop_replay: bool = False, add_demos: str = "") -> tuple[Any, ReplayBuffer, ReplayBuffer | None]:
    """The agent with its replay and demo buffers, for ``env``'s spaces and task.

    One recipe for the single-process loop and for a learner fed by actors over ROS
    (``learner_node`` split mode passes a twin of the actors' env), so both learn the same way.
    ``ckpt_dir`` restores the buffers saved with a checkpoint; ``takeovers`` gives an operator's
    takeovers a demo buffer when no demos were given (HIL-SERL); ``drop_replay`` starts the replay
    empty instead of restoring it; ``add_demos`` loads that dataset into the restored demo buffer.
    """
    from se_robot.agents.registry import make_agent
    from se_robot.agents.replay_io import load_replay
    from se_robot.data.demos import dataset_slots, load_demos

    agent = make_agent(cfg.algo, env.observation_space, env.action_space, _agent_config(cfg), cfg.device, cfg.seed)
    if ckpt_dir is not None and (ckpt_dir / "replay").is_dir() and not drop_replay:
        replay = ReplayBuffer.load(ckpt_dir / "replay")
        _check_shapes(replay, env.observation_space, str(ckpt_dir / "replay"), "replay",
                      "the run was trained on other observations than this env gives")
    else:
        replay = ReplayBuffer(cfg.replay, seed=cfg.seed)
    demos = None
    source = add_demos or cfg.demos
    if ckpt_dir is not None and (ckpt_dir / "demos").is_dir():
        saved_demos = ckpt_dir / "demos"
        if add_demos:   # grown to hold the new episodes next to the saved ones
            demos = load_replay(saved_demos, ReplayBuffer, grow_by=dataset_slots(add_demos) + 16)
            _check_shapes(demos, env.observation_space, str(saved_demos), "demo")
        else:
            demos = ReplayBuffer.load(saved_demos)
    if source and (add_demos or demos is None):
        if demos is None:
            demo_cap = dataset_slots(source) + 16
            demos = ReplayBuffer(dataclasses.replace(cfg.replay, capacity=demo_cap), seed=cfg.seed + 1)
        # behind a frozen encoder the agent learns on features: demo frames go through it once, here
        from se_robot.envs.encoder_features import EncoderFeatures

        encoded = env if isinstance(env, EncoderFeatures) else None
        load_demos(source, demos, obs_keys=encoded.source_keys if encoded else tuple(env.observation_space.spaces),
                   image_size=cfg.image_size, action_repeat=cfg.action_repeat,
                   episode_fn=encoded.encode_episode if encoded else None, success_fn=_demo_success_fn(cfg))
    if demos is not None and demos.transitions:
        _check_shapes(demos, env.observation_space, source or str(ckpt_dir), "demo")
    if takeovers and demos is None:
        demos = ReplayBuffer(dataclasses.replace(cfg.replay, capacity=cfg.intervention_demo_capacity),
                             seed=cfg.seed + 1)
    if hasattr(agent, "set_reward_fn"):
        # MBPO scores model rollouts with the task's own reward and termination when the state
        # vector carries the task (state obs) and one agent step is one control tick; on an env
        # of another package (env_id) it learns the reward with the dynamics.
        from se_robot.envs.spaces import state_reward_fn

        agent.set_reward_fn(state_reward_fn(env) if cfg.action_repeat == 1 and not cfg.env_id else None)
    agent_cfg = getattr(agent, "cfg", None)
    if getattr(agent_cfg, "freeze_encoder", False) and hasattr(agent, "encode_frames"):
        for buf in (replay, demos):
            if buf is not None:
                buf.set_feature_fn(agent.encode_frames)
    return agent, replay, demos


def _agent_config(cfg: TrainConfig) -> dict:
    if cfg.algo == "mbpo":  # model rollouts discount like the real batches the replay builds
        return merge(dict(cfg.agent), {"sac": {"gamma": cfg.replay.discount}})
    return dict(cfg.agent)


def _demo_success_fn(cfg: TrainConfig) -> Any:
    """With a learned reward, demos are relabelled by the same classifier and threshold the env
    uses, so their rewards are on the scale of the online ones (sparse 0/1, ending on success)."""
    if not cfg.reward_model:
        return None
    from se_robot.data.reward_model import load_reward_model

    model = load_reward_model(cfg.reward_model)
    threshold = cfg.reward_threshold or model.threshold
    return lambda frames: model.probability(frames) >= threshold


def attach_teleop(env: Any, cfg: TrainConfig) -> Any:
    """Wraps the training env so an operator can take over (the outermost wrapper)."""
    from se_robot.envs.intervention import InterventionWrapper, find_estop
    from se_robot.teleop.devices import make_teleop

    device = make_teleop(cfg.teleop, device=cfg.teleop_device or None, estop=find_estop(env))
    device.connect()
    return InterventionWrapper(env, device)


def _check_shapes(buffer: ReplayBuffer, space: Any, source: str, what: str,
                  fix: str = "record the demos with the same obs mode and image size") -> None:
    """A buffer filled with another obs mode, camera size or task (demos recorded elsewhere, a
    resumed run's replay on another backend) fails here, not at the first update."""
    if not buffer._arrays:   # nothing written yet
        return
    for key, sub in space.spaces.items():
        stored = buffer._arrays.get(key)
        # the replay keeps one (3, H, W) frame of each (3k, H, W) pixel stack
        want = (3, *sub.shape[1:]) if key == PIXELS else tuple(sub.shape)
        if stored is None or stored.shape[1:] != want:
            have = None if stored is None else stored.shape[1:]
            raise ConfigError(source, key, f"{what} observations have shape {have}, the env gives {want} ({fix})")


def _shapes(space: Any) -> dict[str, tuple[int, ...]]:
    """An observation space's shapes by key, for messages."""
    return {key: tuple(sub.shape) for key, sub in space.spaces.items()}
