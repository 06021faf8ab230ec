"""Teleoperated recording: a human drives the env with a teleop device and judges each episode.

``record_teleop`` is the one loop behind ``se-robot record`` and the ROS teleop launch: it paces
the env at its control rate, steps it with the device's action, writes the same episode format as
``se-robot demos`` and acts on the operator's buttons:

- success / failure: close the episode with that label (the operator is the judge); the env's own
  ``is_success`` is stored beside it (metadata ``env_success``, ``operator_success``,
  ``label_conflict``) and a label that contradicts it is warned about;
- re-record: drop the episode in progress and start it again;
- e-stop: the device already latched the safety layer's EStop; the episode is kept as a failure
  with ``metadata["estop"]`` and the session ends (resetting the e-stop is a separate act);
- quit: drop the episode in progress and end the session.

When the env itself ends an episode (termination or time limit) the operator is asked to mark it,
unless ``auto_label`` is set, in which case ``info["is_success"]`` decides (the twin knows).
Every step of a teleop episode has ``intervention = True``: a human chose the action.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from se_robot.data.writer import EpisodeWriter
from se_robot.data.recording import env_control_hz
from se_robot.teleop.base import TeleopCommand, TeleopDevice


@dataclasses.dataclass
class SessionResult:
    written: int = 0
    successes: int = 0
    rerecorded: int = 0
    ended_by: str = "done"  # done | quit | estop


def follower_joints(env: Any) -> np.ndarray:
    """The follower's commanded joints (``ArmEnv.commanded_joints``), the reference a joint-space
    device's next delta is taken from."""
    return env.unwrapped.commanded_joints


class _Pacer:
    """Sleeps so ticks happen every ``period_s`` on the monotonic clock; when behind, it sleeps 0
    and starts counting again from now (no burst of catch-up ticks)."""

    def __init__(self, period_s: float, sleep: Callable[[float], None]):
        self.period_s, self.sleep = period_s, sleep
        self.next_s = time.monotonic()

    def wait(self) -> None:
        self.next_s += self.period_s
        delay = self.next_s - time.monotonic()
        if delay <= 0:
            self.next_s = time.monotonic()
        self.sleep(max(0.0, delay))


def _wait_for_label(device: TeleopDevice, pacer: _Pacer, log: Callable[[str], None]) -> str:
    log("episode ended: mark success (Enter/y), failure (n) or re-record (x)")
    while True:
        cmd = device.poll()
        for button in ("estop", "quit", "rerecord", "success", "failure"):
            if cmd.pressed(button):
                return button
        pacer.wait()


def _labels(operator_success: bool, env_success: bool, log: Callable[[str], None]) -> dict[str, bool]:
    """Both judgements, kept apart: the episode's ``success`` is the operator's label (the judge a
    reward classifier learns from), the metadata also holds the env's; a disagreement is warned
    about, since it is either a mislabel or a detector that is wrong, and either poisons data."""
    conflict = operator_success != env_success
    if conflict:
        log(f"warning: the operator marked {'success' if operator_success else 'failure'} but the env says "
            f"{'success' if env_success else 'failure'}; both are stored (success = the operator's label, "
            "metadata env_success = the env's)")
    return {"env_success": env_success, "operator_success": operator_success, "label_conflict": conflict}


def record_teleop(env: Any, device: TeleopDevice, writer: EpisodeWriter, episodes: int, *,
                  source: str | None = None, auto_label: bool = False, max_steps: int | None = None,
                  episode_metadata: dict | None = None, log: Callable[[str], None] = print,
                  on_step: Callable[[Any, TeleopCommand], None] | None = None,
                  sleep: Callable[[float], None] = time.sleep, seed: int | None = None) -> SessionResult:
    """Record up to ``episodes`` operator-labelled episodes into ``writer``; see the module docstring.

    ``on_step(obs, cmd)`` is called every tick (e.g. to publish the frame to a viewer); ``sleep``
    is the pacing function (``lambda s: None`` runs as fast as the device is polled).
    """
    result = SessionResult()
    source = source or f"teleop:{device.name}"
    pacer = _Pacer(1.0 / env_control_hz(env), sleep)
    meta = {"source": source, "teleop": device.name, **(episode_metadata or {})}
    episode_seed = seed
    while result.written < episodes:
        obs, info = env.reset(seed=episode_seed)
        episode_seed = None if episode_seed is None else episode_seed + 1
        device.poll(follower_joints(env))  # drop presses made between episodes
        writer.start_episode(obs, timestamp=time.time(), metadata=meta)
        log(f"episode {writer.next_index}: recording ({result.written}/{episodes} done)")
        label, steps, success = None, 0, bool(info.get("is_success", False))
        pacer.next_s = time.monotonic()
        while label is None:
            cmd = device.poll(follower_joints(env))
            for button in ("estop", "quit", "rerecord", "success", "failure"):
                if cmd.pressed(button):
                    label = button
                    break
            if label is not None:
                break
            obs, reward, terminated, truncated, info = env.step(cmd.action)
            steps += 1
            success = bool(info.get("is_success", False))
            writer.add_step(cmd.action, obs, reward, terminated, truncated, intervention=True, timestamp=time.time())
            if on_step is not None:
                on_step(obs, cmd)
            if terminated or truncated or (max_steps is not None and steps >= max_steps):
                label = ("success" if success else "failure") if auto_label else _wait_for_label(device, pacer, log)
                break
            pacer.wait()
        if label in ("success", "failure") and steps == 0:
            log("nothing recorded yet; mark after moving (episode restarted)")
            writer.discard()
            continue
        if label in ("success", "failure"):
            path = writer.end_episode(label == "success", metadata=_labels(label == "success", success, log))
            result.written += 1
            result.successes += int(label == "success")
            log(f"{path.name}: {steps} steps, {label}")
        elif label == "rerecord":
            writer.discard()
            result.rerecorded += 1
            log("episode dropped; re-recording")
        elif label == "estop":
            reason = getattr(device.estop, "reason", None) or "teleop e-stop"
            if steps:
                path = writer.end_episode(False, metadata={"estop": reason, "env_success": success})
                result.written += 1
                log(f"{path.name}: {steps} steps, kept as failure (e-stop: {reason})")
            else:
                writer.discard()
            result.ended_by = "estop"
            return result
        else:  # quit
            writer.discard()
            result.ended_by = "quit"
            return result
    return result
