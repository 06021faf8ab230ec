"""RosArmEnv: the task env over ROS 2 topics, with the sim/hardware envs' spaces (pure: no rclpy).

The env logic lives here and talks to the robot through a small :class:`RobotLink`; the rclpy
implementation of that link is ``se_robot.nodes.ros_arm_env`` (the only layer allowed rclpy), and
``se_robot.envs.make_env(task, backend="ros")`` builds both. Observation and action spaces,
action decoding and task rewards are the same code as ``SimArmEnv`` (``se_robot.envs.spaces``,
``se_robot.tasks``), so a policy moves between twin, hardware and ROS unchanged.

Timing policy (one ``step``):
1. decode the action against the last *commanded* joints, run it through a local copy of the
   SafetyFilter (the node applies the authoritative one again; the local copy keeps the commanded
   reference identical to ``SimArmEnv``'s), publish it and note the wall-clock send time ``t_cmd``;
2. sleep until the control tick ends (``t_prev_tick + 1/control_hz``; a late step does not sleep
   and is counted in ``info["ros/overruns"]``);
3. wait for a joint state (and, per ``obs_mode``, an image and the task state) whose header stamp
   is newer than ``t_cmd``. Nothing older is ever reused. If one is still missing
   ``stale_timeout_s`` after the tick, the step ends the episode with ``truncated=True`` and
   ``info["truncation_reason"]`` naming the topic and the age of its newest message, or raises
   :class:`StaleObservationError` when ``strict_freshness`` is set.
Stamps are wall-clock, so the env and the nodes need synchronised clocks (same machine, or
chrony/PTP across machines).

Reset: on the twin, ``sim/reset_task`` resamples objects (seeded); then ``arm/home`` drives to
the home pose and the env checks a fresh joint state is within tolerance of home before it
returns the first observation; a failure raises :class:`ResetError` with the service's reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from se_robot.arm import ArmDescription, load_arm
from se_robot.config import from_dict
from se_robot.envs.spaces import ActionDecoder, EnvConfig, action_space, build_obs, build_state, observation_space
from se_robot.tasks import Task, TaskState, load_task
from se_robot.ros_params import HOME_NOT_ACTIVE


class StaleObservationError(RuntimeError):
    """A fresh enough joint state / image / task state did not arrive in time."""


class ResetError(RuntimeError):
    """Homing or the task reset failed; the message carries the node's reason."""


@dataclass
class Observation:
    """The newest messages, converted; stamps are wall-clock ns (``time.time_ns``)."""

    q: np.ndarray
    qd: np.ndarray
    state_ns: int
    image: np.ndarray | None = None
    image_ns: int | None = None
    target_pos: np.ndarray | None = None
    cube_pos: np.ndarray | None = None
    task_ns: int | None = None


class RobotLink(Protocol):
    """What RosArmEnv needs from the transport (see ``se_robot.nodes.ros_arm_env.RclpyLink``)."""

    has_task_state: bool

    def send_command(self, q: np.ndarray) -> int:
        """Publish joint targets; returns the wall-clock ns at which they went out."""

    def wait_observation(self, newer_than_ns: int, need_image: bool, need_task: bool,
                         timeout_s: float) -> Observation:
        """Block until every needed message is newer than ``newer_than_ns``; raises
        :class:`StaleObservationError` with the topic and the age of its newest message."""

    def reset_task(self, seed: int | None) -> tuple[bool, str]: ...

    def home(self, timeout_s: float) -> tuple[bool, str]: ...

    def estop(self, reason: str) -> None:
        """Latch the e-stop where it stops the bus (arm_node / sim_node)."""

    def close(self) -> None: ...


class RosArmEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, link: RobotLink, task: str | Task = "reach", arm: str | ArmDescription = "so101", *,
                 max_episode_steps: int | None = None, stale_timeout_s: float = 0.5,
                 strict_freshness: bool = False, home_tolerance_rad: float = 0.05, **options: Any):
        from se_robot.sim.kinematics import Kinematics
        from se_robot.safety import SafetyFilter

        self.link = link
        self.cfg = from_dict(EnvConfig, options, source="RosArmEnv options")
        self.arm = load_arm(arm) if isinstance(arm, str) else arm
        self.task = load_task(task) if isinstance(task, str) else task
        if self.cfg.obs_mode == "state" and not link.has_task_state:
            raise ValueError("obs_mode='state' needs the task state (sim/task_state from sim_node or a "
                             "detector); use obs_mode='pixels' or 'both' on hardware")
        self.kin = Kinematics(self.arm)
        self.safety = SafetyFilter(self.arm, self.kin)
        # A latch here (a teleop e-stop button, a fault) must also stop the arm at the node.
        if hasattr(link, "estop"):
            self.safety.estop.add_listener(link.estop)
        self.decoder = ActionDecoder(self.arm, self.kin, self.cfg)
        self.observation_space = observation_space(self.arm, self.task, self.cfg)
        self.action_space = action_space(self.arm, self.cfg)
        self.max_episode_steps = max_episode_steps or self.task.cfg.max_episode_steps
        self.stale_timeout_s = stale_timeout_s
        self.strict_freshness = strict_freshness
        self.home_tolerance_rad = home_tolerance_rad
        self.period_s = 1.0 / self.cfg.control_hz
        self._q_cmd = self.arm.home.copy()
        self._last: Observation | None = None
        self._tick_t = time.monotonic()
        self._steps = 0
        self.overruns = 0
        #: seconds of the last step: ``work_s`` (decode, filter, publish, convert), ``sleep_s``
        #: (pacing to the tick), ``wait_s`` (fresh messages still missing after the tick)
        self.last_timing = {"work_s": 0.0, "sleep_s": 0.0, "wait_s": 0.0}

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if self.link.has_task_state:
            ok, message = self.link.reset_task(seed)
            if not ok:
                raise ResetError(f"sim/reset_task failed: {message}")
        # A node that was just launched answers before its lifecycle activation finishes: give it a
        # few seconds, then report its reason (an arm someone left inactive stays an error).
        deadline = time.monotonic() + 5.0
        ok, message = self.link.home(timeout_s=30.0)
        while not ok and message.startswith(HOME_NOT_ACTIVE) and time.monotonic() < deadline:
            time.sleep(0.1)
            ok, message = self.link.home(timeout_s=30.0)
        if not ok:
            raise ResetError(f"arm/home failed: {message}")
        t0 = time.time_ns()
        obs = self._wait(t0, self.stale_timeout_s + 1.0)
        err = np.abs(obs.q - self.arm.home)
        if np.any(err > self.home_tolerance_rad):
            worst = int(np.argmax(err))
            raise ResetError(f"after arm/home, {self.arm.joint_names[worst]} is {err[worst]:.3f} rad from home "
                             f"(tolerance {self.home_tolerance_rad})")
        self._q_cmd = self.arm.home.copy()
        self._steps = 0
        self._tick_t = time.monotonic()
        self._last = obs
        return self._observe(obs), self._info(obs, None)

    def step(self, action):
        t0 = time.perf_counter()
        target = self.decoder.decode(action, self._q_cmd)
        cmd = self.safety.filter(target, self._last.q if self._last is not None else self._q_cmd)
        self._q_cmd = cmd.positions
        t_cmd = self.link.send_command(cmd.positions)
        t1 = time.perf_counter()
        # pace: the tick ends one period after the previous one
        self._tick_t += self.period_s
        delay = self._tick_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            self.overruns += 1
            self._tick_t = time.monotonic()
        self._steps += 1
        t2 = time.perf_counter()
        try:
            obs = self._wait(t_cmd, self.stale_timeout_s)
        except StaleObservationError as e:
            if self.strict_freshness:
                raise
            # The episode ends here; the observation returned is the last fresh one, flagged stale.
            info = {"is_success": False, "truncation_reason": str(e), "ros/stale": True,
                    "ros/overruns": self.overruns}
            return self._observe(self._last), 0.0, False, True, info
        self._last = obs
        s = self.object_state()
        success = bool(self.task.success(s))
        reward = float(self.task.reward(s, self.cfg.reward_type))
        terminated = success and self.task.cfg.terminate_on_success
        truncated = not terminated and self._steps >= self.max_episode_steps
        info = self._info(obs, cmd)
        if truncated:
            info["truncation_reason"] = f"time limit ({self.max_episode_steps} steps)"
        t3 = time.perf_counter()
        out = self._observe(obs)
        t4 = time.perf_counter()
        self.last_timing = {"work_s": (t1 - t0) + (t4 - t3), "sleep_s": t2 - t1, "wait_s": t3 - t2}
        return out, reward, terminated, truncated, info

    def close(self):
        self.link.close()

    # ------------------------------------------------------------------ helpers
    def _wait(self, t_ns: int, timeout_s: float) -> Observation:
        need_image = self.cfg.obs_mode != "state"
        return self.link.wait_observation(t_ns, need_image, self.link.has_task_state, timeout_s)

    def _observe(self, obs: Observation):
        cfg = self.cfg
        pixels = None
        if cfg.obs_mode != "state":
            pixels = self._resize(obs.image)
        features = self.task.features(self.object_state(obs)) if cfg.obs_mode == "state" else None
        ee = self.kin.fk(obs.q)
        state = build_state(obs.q, obs.qd, self._gripper(obs.q), ee, features)
        return build_obs(cfg, state, pixels)

    def _resize(self, image: np.ndarray) -> np.ndarray:
        size = self.cfg.image_size
        if image.shape[:2] == (size, size):
            return image
        import cv2

        return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)

    def _gripper(self, q: np.ndarray) -> float:
        g = self.arm.gripper
        if g is None:
            return 0.0
        return float((q[self.arm.gripper_index] - g.closed_position) / (g.open_position - g.closed_position))

    def _info(self, obs: Observation, cmd) -> dict:
        s = self.object_state(obs)
        now = time.time_ns()
        info = {"is_success": bool(self.task.success(s)),
                "safety/clipped": bool(cmd.clipped) if cmd else False,
                "safety/held": bool(cmd.held) if cmd else False,
                "safety/reasons": ",".join(cmd.reasons) if cmd else "",
                "ros/state_age_s": (now - obs.state_ns) * 1e-9,
                "ros/overruns": self.overruns}
        if obs.image_ns is not None:
            info["ros/image_age_s"] = (now - obs.image_ns) * 1e-9
        return info

    # Same privileged access as SimArmEnv, for the scripted experts (task state from the twin or
    # a detector).
    def object_state(self, obs: Observation | None = None) -> TaskState:
        obs = obs if obs is not None else self._last
        if obs is None:
            raise RuntimeError("call reset() before asking for the object state")
        cube = obs.cube_pos if obs.cube_pos is not None else np.full(3, np.nan)
        target = obs.target_pos if obs.target_pos is not None else np.full(3, np.nan)
        return TaskState(self.kin.fk(obs.q), np.float64(self._gripper(obs.q)), cube, target)

    @property
    def commanded_joints(self) -> np.ndarray:
        return self._q_cmd.copy()
