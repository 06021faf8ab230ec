"""A fault on the arm pauses a training run instead of ending it.

Why: a run on a real arm is hours of arm time, and a bus glitch under CPU load or an overloaded
servo is routine. Transient bus errors never get here: ``SerialArm`` retries them on the bus. What
reaches the loop is a *latched* fault: a ``SafetyFault`` (servo error bit, retries exhausted, port
lost; the driver latched the e-stop before raising), a ``HomingError`` (reset could not bring the
arm home), a ``SceneResetError`` (nobody put the cube back: the operator declined or did not answer,
every start was already successful, the scene service did not answer), or the e-stop latched
during a step (a teleop key, the ROS service). ``Trainer`` then
makes sure the arm holds (:func:`hold_arm`), closes the episode as truncated with the reason
(never terminal: the policy did not cause it), writes a checkpoint at once, tells the operator what
happened and how to go on (:func:`instructions`), and waits (:class:`OperatorWait`) for the e-stop
to be reset: ``estop.reset()`` is the one "continue" action, whoever calls it (Enter in the
terminal, a scripted operator in tests; on ROS after ``arm/reset`` at the node).

Only an unrecoverable fault stops the run, with :class:`FaultExit`: ``fault_policy: exit``, the
operator typed ``q``, ``fault_wait_s`` ran out, the run paused ``fault_max_repeats`` times in a
row without completing a step (a port gone for good), or the scene operator cannot be asked at all
(``SceneSetupError``: no terminal, no teleop device; waiting would not help). The checkpoint is
saved before, and the message says how to ``--resume``.
"""

from __future__ import annotations

import os
import select
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from se_robot.envs.operator import SceneResetError, SceneSetupError
from se_robot.estop import EStop, FaultKind, SafetyFault
from se_robot.robot import HomingError

#: Exceptions from a step or a reset that pause the run (anything else is a bug and propagates;
#: ``SceneSetupError`` ends the run through :meth:`FaultPauses._setup_exit`).
PAUSING_FAULTS: tuple[type[Exception], ...] = (SafetyFault, HomingError, SceneResetError)

CONTINUED, GAVE_UP, TIMED_OUT = "continued", "gave_up", "timed_out"

EXIT_CODE = 3   # ``se-robot train`` exit status when a fault stopped the run (2 is a config error)


class FaultExit(RuntimeError):
    """The run stopped on an unrecoverable fault; ``checkpoint`` is where it can be resumed from."""

    def __init__(self, message: str, checkpoint: Path | None):
        super().__init__(message)
        self.checkpoint = checkpoint


def operator_terminal() -> TextIO | None:
    """stdin when a person can type into it (a tty), else None (CI, a service, a pipe)."""
    stdin = sys.stdin
    return stdin if stdin is not None and stdin.isatty() else None


def hold_arm(robot: Any, reason: str) -> str | None:
    """Latch the e-stop (if the fault did not) and hold the arm where it is; returns None, or why
    the hold could not be written (the port may be what failed: the servos keep their last goal)."""
    try:
        if robot.estop.latched:
            robot.hold("estop")
        else:
            robot.trigger_estop(reason)
    except (RuntimeError, OSError) as e:
        return f"could not write a hold ({type(e).__name__}: {e}); the servos keep their last goal"
    return None


def lost_port(error: Exception | None) -> bool:
    return isinstance(error, SafetyFault) and error.kind is FaultKind.PORT_LOST


def close_lost_port(robot: Any) -> str | None:
    """Close a robot whose port was lost, before the operator is asked to continue; None, or why it
    could not be closed. Open, its command watchdog would act on the dead port right after the
    operator's reset and latch the e-stop again, so the "continue" would never be seen. The e-stop
    stays latched; whoever continues opens the port again (``robot.connect()``) after the reset."""
    try:
        robot.close()
    except (RuntimeError, OSError) as e:
        return f"could not close the lost port ({type(e).__name__}: {e})"
    return None


def instructions(backend: str, terminal: bool, wait_s: float, run_dir: Path, device: str | None = None) -> str:
    """How the operator continues (or stops) the paused run, for this backend, terminal and teleop device."""
    ways = []
    if backend == "ros":
        ways.append("clear the arm node's latch: ros2 service call arm/reset std_srvs/srv/Trigger "
                    "(under the node's namespace)" + (", then" if terminal or device else ""))
    if device:
        ways.append(f"press 'scene restored' or 'success' on {device} (keyboard: p or Enter; gamepad: LB or A); "
                    "its quit button (keyboard q, gamepad Start) stops the run here")
    elif terminal:
        ways.append("press Enter in this terminal; type q and Enter to stop the run here")
    if not terminal and not device:
        ways.append("no terminal to press Enter in: whatever drives this run must call the robot's "
                    "estop.reset() (a scripted operator)")
    limit = f"within {wait_s:.0f} s" if wait_s > 0 else "whenever ready"
    return (f"to continue, fix the cause, then {limit}: " + "; ".join(ways)
            + f". To stop instead: Ctrl-C, then se-robot train --resume {run_dir}")


def resume_hint(run_dir: Path) -> str:
    return (f"continue it with: se-robot train --resume {run_dir} "
            "(add --more-steps N to train longer; --port/--arm-id if the arm moved)")


class OperatorWait:
    """Waits for the e-stop to be reset (the operator's "continue"), for at most ``timeout_s``
    (0: no limit). With a ``terminal``, Enter resets the e-stop and ``q`` gives up; bytes are read
    raw, so it works whether or not a keyboard teleop put the tty in cbreak mode. With a teleop
    ``device`` (the one attached to the run), its buttons answer instead, so an operator at the arm
    continues from the device in hand: "scene restored" (keyboard ``p``, gamepad LB) or "success"
    (Enter, gamepad A) resets the e-stop, "quit" gives up. The device reads the keyboard itself
    when it has one, so the terminal is not read beside it (the two would steal each other's keys)."""

    CONTINUE_BUTTONS = ("restored", "success")

    def __init__(self, estop: EStop, timeout_s: float, terminal: TextIO | None = None, poll_s: float = 0.1,
                 device: Any = None):
        self.estop, self.timeout_s, self.poll_s = estop, float(timeout_s), poll_s
        self.device = device
        self._fd = terminal.fileno() if terminal is not None and device is None else None

    def wait(self) -> str:
        """:data:`CONTINUED`, :data:`GAVE_UP` or :data:`TIMED_OUT`."""
        deadline = time.monotonic() + self.timeout_s if self.timeout_s > 0 else None
        if self.device is not None:
            self.device.poll()   # presses made before the pause do not count
        while True:
            if not self.estop.latched:
                return CONTINUED
            if deadline is not None and time.monotonic() >= deadline:
                return TIMED_OUT
            if self.device is not None:
                answer = self._poll_device()
                if answer is not None:
                    return answer
                time.sleep(self.poll_s)
                continue
            if self._fd is None:
                time.sleep(self.poll_s)
                continue
            ready, _, _ = select.select([self._fd], [], [], self.poll_s)
            if not ready:
                continue
            text = os.read(self._fd, 1024).decode(errors="replace").lower()
            if not text:   # the terminal went away: only a reset from elsewhere can continue now
                self._fd = None
            elif "q" in text:
                return GAVE_UP
            elif "\n" in text or "\r" in text:
                self.estop.reset()
                return CONTINUED

    def _poll_device(self) -> str | None:
        command = self.device.poll()
        if command.pressed("quit"):
            return GAVE_UP
        if any(command.pressed(b) for b in self.CONTINUE_BUTTONS) and not command.pressed("estop"):
            self.estop.reset()
            return CONTINUED
        return None


class FaultPauses:
    """The pause half of ``se_robot.train.Trainer`` (a mixin: it uses the trainer's ``cfg``, ``env``,
    ``logger``, ``run_dir``, ``step``, ``save_checkpoint``, ``_reset`` and ``_end_episode``)."""

    def _latched_reason(self) -> str | None:
        robot = getattr(self.env.unwrapped, "robot", None)
        return robot.estop.reason if robot is not None and robot.estop.latched else None

    def _start_episode(self) -> dict[str, Any]:
        try:
            return self._reset()
        except PAUSING_FAULTS as e:
            return self._pause_then_reset(f"{_what_failed(e)} during reset: {e}", e)

    def _setup_exit(self, error: SceneSetupError) -> FaultExit:
        """The scene operator cannot be asked (a setup error): checkpoint, then the run ends."""
        path = self.save_checkpoint(mid_episode=bool(self._ep_len))
        message = (f"stopped at step {self.step}: {error}. Checkpoint {path}; fix the scene operator "
                   "(env.operator: terminal with a terminal attached, an http:// scene service, or --teleop), then "
                   + resume_hint(self.run_dir))
        self._note(message)
        return FaultExit(message, path)

    def _interrupted(self, reason: str, error: Exception) -> dict[str, Any]:
        """A step or an evaluation raised: the episode ends here, truncated (its last stored
        transition bootstraps: the replay closes an open episode at the next ``add_first``)."""
        self._end_episode(reason)
        return self._pause_then_reset(reason, error, mid_episode=True)

    def _pause_then_reset(self, reason: str, error: Exception | None,
                          mid_episode: bool = False) -> dict[str, Any]:
        """Pause until the operator continues, then reset; a reset that faults pauses again."""
        while True:
            port_lost = lost_port(error)
            self._pause(reason, mid_episode, release_port=port_lost)
            robot = self.env.unwrapped.robot
            if port_lost:
                try:   # the port may be back (replugged): open it again
                    robot.connect()
                except (RuntimeError, OSError) as e:
                    reason, error = f"reconnecting after {error.kind.value} failed: {type(e).__name__}: {e}", error
                    continue
            try:
                obs = self._reset()
            except PAUSING_FAULTS as e:
                reason, error = f"{_what_failed(e)} during reset after the pause: {e}", e
                continue
            self._tick = time.perf_counter()   # the pause is not training time
            return obs

    def _pause(self, reason: str, mid_episode: bool, release_port: bool = False) -> None:
        """Hold, checkpoint at once, tell the operator, wait for the e-stop reset (or raise FaultExit).
        ``release_port``: close the robot before waiting (see :func:`close_lost_port`)."""
        cfg = self.cfg
        self._account_time()
        self._fault_streak += 1
        self.pauses += 1
        problem = hold_arm(self.env.unwrapped.robot, reason)
        if release_port:
            problem = close_lost_port(self.env.unwrapped.robot) or problem
        self._note(f"PAUSED at step {self.step}: {reason}; "
                   + (problem or "the arm holds where it is, e-stop latched"))
        path = self.save_checkpoint(mid_episode=mid_episode)
        self.logger.log({"fault/pauses": float(self.pauses)}, self.step)
        stop = None
        if cfg.fault_policy == "exit":
            stop = "fault_policy is exit"
        elif self._fault_streak > cfg.fault_max_repeats:
            stop = f"the run paused {self._fault_streak} times in a row without completing a step (unrecoverable)"
        if stop is None:
            terminal = operator_terminal()
            device = getattr(self.env, "device", None)   # the teleop device of --teleop (InterventionWrapper)
            self._note(f"checkpoint written: {path}; " + instructions(
                cfg.backend, terminal is not None, cfg.fault_wait_s, self.run_dir,
                getattr(device, "name", None) if device is not None else None))
            self.waiting_for_operator.set()
            try:
                outcome = OperatorWait(self.env.unwrapped.robot.estop, cfg.fault_wait_s, terminal,
                                       device=device).wait()
            finally:
                self.waiting_for_operator.clear()
            if outcome == CONTINUED:
                self._note(f"operator continued at step {self.step} (e-stop reset): resetting the arm")
                return
            stop = "the operator stopped the run" if outcome == GAVE_UP else \
                f"nobody reset the e-stop within fault_wait_s={cfg.fault_wait_s:g} s"
        message = f"stopped at step {self.step}: {stop}; last fault: {reason}. Checkpoint {path}; " + \
            resume_hint(self.run_dir)
        self._note(message)
        raise FaultExit(message, path)

    def _note(self, text: str) -> None:
        """An operator-facing line: stderr now, and ``<run>/events.log`` to read later."""
        line = f"se-robot train: {text}"
        print(line, file=sys.stderr, flush=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "events.log", "a") as f:
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} step={self.step} {text}\n")


def _what_failed(error: Exception) -> str:
    """'scene reset failed' or 'fault': how a pause reason names what stopped the arm."""
    return "scene reset failed" if isinstance(error, SceneResetError) else "fault"
