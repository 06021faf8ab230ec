"""Who puts the scene back between episodes on a robot that cannot do it itself.

The twin resamples its objects in ``Robot.reset_scene``; a real table returns None there, and for
push and lift somebody has to put the cube back, or every later episode starts where the last one
ended (already at the goal or already lifted: fake successes that poison replay and evaluation).
``ArmEnv.reset`` therefore homes the arm and then asks a ``SceneOperator`` to restore the scene.

The interface is one call, so a person at a terminal, a button on the teleop device, a ROS service
(a node above the env layer can implement it) or a scripted rig (the emulator's
``VirtualArm.scene_operator``) all fit:

    restore(task, rng, message) -> bool

``task`` is the ``se_robot.tasks.Task`` whose reset distribution the scene should follow
(``task.sample_reset(rng)``: a scripted operator draws from it with ``rng``, the env's own
generator, so a seeded run is reproducible); ``message`` says what to do and why (the first
request of an episode, or a retry because the scene would start already successful). It returns
True once the scene is restored and False when the operator declines (the env raises
``SceneResetError``); it raises ``SceneResetTimeout`` when its timeout policy gives up.

Two kinds of failure, because a training run treats them differently:
- ``SceneResetError``: this scene could not be restored now (the operator declined or did not
  answer in time, every try started already successful, the scene service did not answer). A
  person can fix it, so ``se-robot train`` and the actor node pause, the arm held, and continue
  when told (``se_robot.train_faults``).
- ``SceneSetupError``: nobody can be asked at all (no terminal, the terminal closed, no teleop
  device, the scene service refused the request as malformed or for another task). Waiting cannot
  help, so the run ends at once, checkpointed, with the fix in the message.

Timeout policy (``timeout_s``): None waits as long as it takes (a person fetching a cube that fell
off the table); a number fails after that many seconds with an error that says what was asked.
"""

from __future__ import annotations

import os
import select
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol, TextIO

import numpy as np

from se_robot.tasks import Task


class SceneResetError(RuntimeError):
    """The scene could not be restored: the operator declined, or every try started successful."""


class SceneResetTimeout(SceneResetError):
    """The operator did not answer within the timeout policy's limit."""


class SceneSetupError(RuntimeError):
    """The scene operator cannot be asked at all: a setup error that waiting does not fix."""


class SceneOperator(Protocol):
    """Restores the scene of ``task`` when asked; see the module docstring."""

    def restore(self, task: Task, rng: np.random.Generator, message: str) -> bool: ...


def wait_for_answer(poll: Callable[[], bool | None], timeout_s: float | None, what: str, *,
                    poll_s: float = 0.05, clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep) -> bool:
    """Call ``poll`` until it answers True/False (None: no answer yet); the timeout policy.

    ``timeout_s`` None waits forever; otherwise ``SceneResetTimeout`` after that long, naming ``what``.
    """
    if timeout_s is not None and timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0 or None (wait forever), got {timeout_s}")
    deadline = None if timeout_s is None else clock() + timeout_s
    while True:
        answer = poll()
        if answer is not None:
            return bool(answer)
        if deadline is not None and clock() >= deadline:
            raise SceneResetTimeout(f"scene reset: no answer in {timeout_s:.0f} s to: {what} "
                                    "(raise the timeout, or restore the scene and run again)")
        sleep(poll_s)


class TerminalOperator:
    """Prints the request and waits for Enter (restored) or ``q`` then Enter (give up) on ``stdin``."""

    def __init__(self, timeout_s: float | None = None, stdin: TextIO | None = None, out: TextIO | None = None):
        self.timeout_s = timeout_s
        self.stdin = stdin
        self.out = out

    def restore(self, task: Task, rng: np.random.Generator, message: str) -> bool:
        stdin, out = self.stdin or sys.stdin, self.out or sys.stdout
        try:
            fd = stdin.fileno()
        except (OSError, ValueError) as e:
            raise SceneSetupError(f"scene reset: {message}, but there is no terminal to ask on ({e}); "
                                  "pass a SceneOperator (make_env(..., operator=...))") from None
        print(f"[scene] {message}. Press Enter when done (q + Enter: stop).", file=out, flush=True)

        def poll() -> bool | None:
            if not select.select([fd], [], [], 0.1)[0]:
                return None
            line = os.read(fd, 4096).decode(errors="replace")
            if line == "":
                raise SceneSetupError(f"scene reset: {message}, but the terminal closed (end of input)")
            return not line.strip().lower().startswith("q")

        return wait_for_answer(poll, self.timeout_s, message, poll_s=0.0)


class TeleopButtonOperator:
    """Waits for the teleop device's ``restored`` button (keyboard ``p``); ``quit`` gives up.

    ``device`` may be set after construction (a recorder builds the env before the device).
    """

    def __init__(self, device: Any = None, timeout_s: float | None = None, log: Callable[[str], None] = print):
        self.device = device
        self.timeout_s = timeout_s
        self.log = log

    def restore(self, task: Task, rng: np.random.Generator, message: str) -> bool:
        if self.device is None:
            raise SceneSetupError("TeleopButtonOperator has no device yet; set .device before reset")
        self.log(f"[scene] {message}; press 'scene restored' on {self.device.name} (keyboard: p)")
        self.device.poll()  # presses made before the request do not count

        def poll() -> bool | None:
            cmd = self.device.poll()
            if cmd.pressed("quit") or cmd.pressed("estop"):
                return False
            return True if cmd.pressed("restored") else None

        return wait_for_answer(poll, self.timeout_s, message)


def post_scene_restore(url: str, body: dict, timeout_s: float) -> dict:
    """POST ``body`` to ``URL/scene/restore`` (``se_robot.hardware.scene_service``); its JSON answer.
    urllib's errors are the caller's to map: a scene operator and a calibration react differently."""
    import json
    import urllib.request

    request = urllib.request.Request(f"{url.rstrip('/')}/scene/restore", data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as reply:
        return json.loads(reply.read(4096))


class HttpSceneOperator:
    """A scripted operator in another process (``se-robot emulate --scene-port``): POSTs the task
    and a seed drawn from ``rng`` to ``URL/scene/restore`` (``se_robot.hardware.scene_service``)."""

    def __init__(self, url: str, timeout_s: float | None = None):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def restore(self, task: Task, rng: np.random.Generator, message: str) -> bool:
        import urllib.error

        body = {"task": task.name, "seed": int(rng.integers(0, 2**31 - 1))}
        try:
            return bool(post_scene_restore(self.url, body, self.timeout_s or 30.0).get("restored", False))
        except urllib.error.HTTPError as e:
            raise SceneSetupError(f"scene reset: {self.url} refused ({e.code}): {e.read(4096).decode(errors='replace')}"
                                  ) from None
        except (urllib.error.URLError, TimeoutError, ValueError) as e:
            raise SceneResetError(f"scene reset: no answer from the scene operator at {self.url}: {e}") from None


def make_operator(spec: Any, timeout_s: float | None = None) -> SceneOperator:
    """An operator from a name (``terminal``, an ``http://`` URL) or an object with ``restore``."""
    if hasattr(spec, "restore"):
        return spec
    if spec in (None, "terminal"):
        return TerminalOperator(timeout_s)
    if isinstance(spec, str) and spec.startswith(("http://", "https://")):
        return HttpSceneOperator(spec, timeout_s)
    raise ValueError(f"unknown scene operator {spec!r}; allowed: terminal, http://HOST:PORT (se-robot emulate "
                     "--scene-port), or an object with restore(task, rng, message) (TeleopButtonOperator, "
                     "VirtualArm.scene_operator(), a ROS service client)")


__all__ = ["HttpSceneOperator", "SceneOperator", "post_scene_restore", "SceneResetError", "SceneResetTimeout", "SceneSetupError",
           "TeleopButtonOperator", "TerminalOperator", "make_operator", "wait_for_answer"]
