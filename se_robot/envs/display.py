"""Live view: every step of an env logged to Rerun (``--display`` on record, train and evaluate).

What an operator wants to see while the arm moves, on one time axis: the camera frames the env
reads, the measured and commanded joints, the action the arm executed (the operator's during a
takeover), the reward, success and interventions, and where each episode began and ended. The
``RerunDisplay`` wrapper sits outermost, so it sees what the loop sees (the learned reward, the
intervention flags); the frames and joints come from the ``ArmEnv`` underneath it. Any other
Gymnasium env shows its action, reward, success and flat observation vectors.

``open_display(where)`` picks the sink: None spawns a Rerun viewer on this machine,
``HOST:PORT`` (or a ``rerun+http://`` URL) streams to a viewer already running there (``rerun``
on the watching machine, then ``--display THAT_HOST:9876``), a path ending in ``.rrd`` saves the
recording for ``rerun FILE.rrd`` later. Rerun batches and sends from its own thread, so a slow
viewer or network does not hold up the control loop.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gymnasium as gym
import numpy as np

INSTALL_HINT = "pip install -e '.[display]'  (rerun-sdk==0.41.0; bash scripts/install.sh installs it too)"
_HOST_PORT = re.compile(r"^(?P<host>[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:]+\]):(?P<port>\d{1,5})$")


def display_url(where: str) -> str | None:
    """The gRPC URL of a viewer for ``HOST:PORT`` or a ``rerun`` URL; None for anything else."""
    if where.startswith(("rerun://", "rerun+http://", "rerun+https://")):
        return where
    match = _HOST_PORT.match(where)
    return f"rerun+http://{match['host']}:{match['port']}/proxy" if match else None


def open_display(where: str | None, application_id: str = "se_robot") -> Any:
    """A Rerun ``RecordingStream`` sending to ``where``: None spawns a viewer, else ``HOST:PORT``, a
    ``rerun+http://`` URL or an ``.rrd`` path.

    Raises ``ConfigError`` for anything else, and when rerun-sdk (an optional dependency: the
    rest of se_robot runs without it) is missing, with the line that installs it.
    """
    from se_robot.config import ConfigError

    url = display_url(where) if where is not None else None
    if where is not None and url is None and not where.endswith(".rrd"):
        raise ConfigError("command line", "--display", f"{where!r}: expected no value (spawn a viewer), HOST:PORT "
                          "of a running viewer, or a file name ending in .rrd")
    try:
        import rerun as rr
    except ImportError as e:
        raise ConfigError("command line", "--display", f"needs rerun-sdk ({e}): {INSTALL_HINT}") from None
    if where is None:
        check_can_spawn()
    recording = rr.RecordingStream(application_id)
    if where is None:
        try:
            recording.spawn()
        except RuntimeError as e:   # e.g. no viewer executable found
            raise ConfigError("command line", "--display", f"could not start the Rerun viewer: {e}") from None
    elif url is not None:
        check_reachable(url)
        recording.connect_grpc(url)
    else:
        Path(where).parent.mkdir(parents=True, exist_ok=True)
        recording.save(where)
    return recording


def check_can_spawn() -> None:
    """A viewer needs a screen: on Linux without one, say what works instead (rather than logging
    into a viewer that never opened). The viewer executable comes with rerun-sdk into this Python's
    bin directory, which is on PATH only in an activated venv: put it there for the spawn."""
    from se_robot.config import ConfigError

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise ConfigError("command line", "--display", "no screen here to open a viewer on (DISPLAY is not set): "
                          "run `rerun` on the machine you watch from and pass --display THAT_HOST:9876, "
                          "or save with --display FILE.rrd and open it with `rerun FILE.rrd`")
    bin_dir = str(Path(sys.executable).parent)
    if shutil.which("rerun") is None and shutil.which("rerun", path=bin_dir):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


def check_reachable(url: str, timeout_s: float = 5.0) -> None:
    """Refuse a viewer address nothing listens on: Rerun would buffer the steps silently and fail
    only at the end."""
    from se_robot.config import ConfigError

    parts = urlsplit(url.replace("rerun://", "rerun+http://", 1))
    try:
        socket.create_connection((parts.hostname, parts.port or 9876), timeout=timeout_s).close()
    except OSError as e:
        raise ConfigError("command line", "--display", f"no Rerun viewer at {parts.hostname}:{parts.port} ({e}): "
                          "start one there with `rerun` (it listens on 9876), or save with --display "
                          "FILE.rrd") from None


def close_display(recording: Any) -> None:
    """Send what is buffered and end the recording (an .rrd file is complete after this). A viewer
    that went away is reported, not raised: the run's own results matter more than its live view."""
    try:
        recording.flush()
    except RuntimeError as e:
        print(f"live view: not everything reached the viewer: {e}", file=sys.stderr)
    recording.disconnect()


class RerunDisplay(gym.Wrapper):
    """Logs each reset and step of ``env`` under ``prefix/`` (``record``, ``train``, ``eval``).

    Entities: ``camera/<name>`` (images), ``joints/measured`` and ``joints/commanded`` (rad, one
    series per joint), ``action`` (as executed), ``reward``, ``success`` and ``intervention`` (0/1),
    ``observation/<key>`` for envs other than ``ArmEnv``, and ``events`` (episode starts and ends).
    Time axes: ``<prefix>/step`` counts this wrapper's steps, ``<prefix>/episode`` its episodes.
    """

    def __init__(self, env: gym.Env, recording: Any, prefix: str):
        super().__init__(env)
        import rerun as rr

        self._rr, self.recording, self.prefix = rr, recording, prefix
        self.steps, self.episodes = 0, 0
        self._episode_return = 0.0
        base = env.unwrapped
        self._arm_env = base if hasattr(base, "measured_joints") and hasattr(base, "camera_images") else None
        if self._arm_env is not None:
            names = list(self._arm_env.arm.joint_names)
            for which in ("measured", "commanded"):
                self._log(f"joints/{which}", rr.SeriesLines(names=names), static=True)
        if isinstance(env.action_space, gym.spaces.Box):
            self._log("action", rr.SeriesLines(names=[f"a{i}" for i in range(int(np.prod(env.action_space.shape)))]),
                      static=True)

    # ------------------------------------------------------------------ gym API
    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.episodes += 1
        self._episode_return = 0.0
        self._set_time()
        self._log("events", self._rr.TextLog(f"episode {self.episodes} starts"))
        self._log_sensors(obs)
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        self._episode_return += float(reward)
        self._set_time()
        executed = info.get("executed_action", action)
        self._log("action", self._rr.Scalars(np.asarray(executed, dtype=np.float64).reshape(-1)))
        self._log("reward", self._rr.Scalars(float(reward)))
        self._log("success", self._rr.Scalars(float(bool(info.get("is_success", False)))))
        self._log("intervention", self._rr.Scalars(float(bool(info.get("intervention", False)))))
        self._log_sensors(obs)
        if terminated or truncated:
            how = "succeeded" if info.get("is_success") else ("truncated" if truncated else "ended")
            self._log("events", self._rr.TextLog(f"episode {self.episodes} {how}: return "
                                                 f"{self._episode_return:.3f}"))
        return obs, reward, terminated, truncated, info

    # ------------------------------------------------------------------ logging
    def _set_time(self) -> None:
        self.recording.set_time(f"{self.prefix}/step", sequence=self.steps)
        self.recording.set_time(f"{self.prefix}/episode", sequence=self.episodes)

    def _log(self, path: str, item: Any, static: bool = False) -> None:
        self.recording.log(f"{self.prefix}/{path}", item, static=static)

    def _log_sensors(self, obs: Any) -> None:
        rr = self._rr
        if self._arm_env is not None:
            for name, image in self._arm_env.camera_images.items():
                self._log(f"camera/{name}", rr.Image(image))
            self._log("joints/measured", rr.Scalars(self._arm_env.measured_joints))
            self._log("joints/commanded", rr.Scalars(self._arm_env.commanded_joints))
            return
        vectors = obs.items() if isinstance(obs, dict) else [("state", obs)]
        for key, value in vectors:
            value = np.asarray(value)
            if value.ndim == 1 and np.issubdtype(value.dtype, np.number):   # images of a foreign env: unknown layout
                self._log(f"observation/{key}", rr.Scalars(value.astype(np.float64)))


def with_display(env: gym.Env, recording: Any | None, prefix: str) -> gym.Env:
    """``env`` under a ``RerunDisplay`` when a display is open, else ``env`` itself."""
    return env if recording is None else RerunDisplay(env, recording, prefix)
