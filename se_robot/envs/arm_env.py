"""``ArmEnv``: the one Gymnasium env, over any ``se_robot.robot.Robot`` (twin, serial arm, ROS).

Observation assembly, action decoding, reward, termination, pacing and reset are written here
once, so a policy meets the same arrays and the same task wherever the joints come from. What a
backend alone knows (its joints, cameras, clock, safety filter, whether it can see the objects)
stays behind the ``Robot`` interface.

One step (period ``1 / control_hz``):

1. decode the action against the last *commanded* joints (``ActionDecoder``) and ``robot.send``
   it; the robot's safety filter returns what was applied, and that becomes the next reference;
   ``t_cmd = robot.now()``.
2. pace: a real-time robot waits on a ``ControlClock`` (a missed tick is an *overrun*: counted,
   its lateness reported, the schedule restarted from now instead of bursting to catch up); a
   simulated robot lets the period pass with ``robot.advance``.
3. sense: camera frames captured after ``t_cmd`` (at most ``frame_timeout_s``; a frame that
   does not come makes the step *stale*, counted, and the newest older frame is used), a fresh
   joint reading, and the objects (the robot's own ``object_state``, or the colour detector on
   the scene frame for a robot that has none).

Where the task's quantities come from: the gripper position from forward kinematics of the
measured joints; the cube and target from ``robot.object_state()`` where the backend knows them
(the twin, sim_node), else from a ``ColorDetector`` on the scene camera; the reach target of such
a robot is virtual, sampled by this env, since nothing marks a point in the air on a real table.

Reset homes the arm, then restores the scene: the robot's own ``reset_scene`` (the twin), else, for
push and lift, an operator (``se_robot.envs.operator``); a start that is already successful is
rejected and restored again (``info["scene/tries"]`` counts the restores of the returned start).

Episodes are truncated by Gymnasium's ``TimeLimit`` at the task's ``max_episode_steps`` on every
backend (the registered ids get it from ``gym.make``, the others from ``make_arm_env``).

``info`` carries ``is_success``, the command's safety clip (``safety/clipped``, ``safety/held``,
``safety/reasons``), ``timing/overrun``, ``timing/late_s``, ``timing/overruns`` (episode count),
``timing/act_s`` (decode and send) and ``timing/sense_s`` (waiting for and reading fresh data after
the tick; both on real-time robots only), the two parts of a step that are not pacing,
``camera/stale``, ``camera/stale_frames``, ``camera/frame_age_s`` (only when a camera was read)
and ``detector/cube_visible``, ``detector/target_visible``, ``detector/cube_held``.

A reading that does not come fresh in time (``se_robot.robot.StaleReading``: a topic went quiet)
ends the episode as truncated with ``info["truncation_reason"]``, instead of acting on old data.
"""

from __future__ import annotations

import time
from typing import Any

import cv2
import gymnasium as gym
import numpy as np

from se_robot.envs.detector import ColorDetector, Detections, DetectorCalibration, make_detector
from se_robot.envs.operator import SceneOperator, SceneResetError, make_operator
from se_robot.envs.spaces import ActionDecoder, action_space, build_proprio, observation_space, resolve_env_parts
from se_robot.robot import ControlClock, Frame, Robot, StaleReading
from se_robot.safety import SafeCommand
from se_robot.tasks import Task, TaskState

#: Seconds between a scene restore and the first frame that may judge it (camera pipeline latency,
#: the operator's hand leaving the view); paid once per episode on robots that need an operator.
SCENE_SETTLE_S = 0.25


def center_square(frame: np.ndarray, size: int) -> np.ndarray:
    """Centre crop to a square and resize: what the twin renders for a square image of the same
    camera (MuJoCo keeps the vertical field of view, so a square render is a horizontal crop)."""
    h, w = frame.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    crop = frame[y0:y0 + side, x0:x0 + side]
    if side == size:
        return np.ascontiguousarray(crop)
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


class ArmEnv(gym.Env):
    """A task on ``robot``; see the module docstring. Options are those of ``EnvConfig``.

    ``detector``: colour-detector calibration (object, name or YAML) for a robot without object
    state. ``home_tolerance_rad`` / ``home_timeout_s``: how close and how soon reset must get
    home. ``frame_timeout_s``: how long a step waits for a frame newer than its command.
    ``object_timeout_s``: how long reset waits for the detector to see the cube.
    ``render_size``: side of ``render()`` frames where the robot renders (the twin).
    ``operator``: who restores push/lift scenes on a robot whose ``reset_scene`` returns None
    (``se_robot.envs.operator``: ``terminal`` by default, or any object with ``restore``), with
    ``scene_timeout_s`` (None: wait) for a named one; ``scene_tries``: restores before a scene that
    keeps starting already successful stops reset. ``learned_reward``: a success classifier over the
    frames gives the reward (``make_env``'s ``reward_model``), so pixel reach needs no visible target.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    #: gripper opening (0 closed .. 1 open) below which a lift may be holding the cube
    held_max_gripper = 0.6
    #: how far short of their command the jaws must stop for something to be between them (opening
    #: fraction): an empty gripper reaches its command, one closing on the cube stops at its width
    blocked_margin = 0.05
    #: the gripper must be this close to where the cube was last seen for a grasp to start (m)
    grasp_radius_m = 0.04

    def __init__(self, robot: Robot, task: str | Task = "reach", *, render_mode: str | None = None,
                 render_size: int = 256, detector: str | DetectorCalibration | ColorDetector | None = None,
                 home_tolerance_rad: float = 0.05, home_timeout_s: float = 8.0, frame_timeout_s: float = 0.5,
                 object_timeout_s: float = 5.0, operator: SceneOperator | str | None = "terminal",
                 scene_timeout_s: float | None = None, scene_tries: int = 3, learned_reward: bool = False,
                 **options: Any):
        from se_robot.sim.kinematics import Kinematics

        self.cfg, self.arm, self.task = resolve_env_parts(task, robot.arm, render_mode, options)
        self.robot = robot
        self.render_mode = render_mode
        self.render_size = render_size
        self.metadata = {**self.metadata, "render_fps": self.cfg.control_hz}
        self.kin = Kinematics(self.arm)
        self.decoder = ActionDecoder(self.arm, self.kin, self.cfg)
        self.observation_space = observation_space(self.arm, self.task, self.cfg)
        self.action_space = action_space(self.arm, self.cfg)
        self.home_tolerance_rad = home_tolerance_rad
        self.home_timeout_s = home_timeout_s
        self.frame_timeout_s = frame_timeout_s
        self.object_timeout_s = object_timeout_s
        self.operator = make_operator(operator, scene_timeout_s)
        if scene_tries < 1:
            raise ValueError(f"scene_tries must be >= 1, got {scene_tries}")
        self.scene_tries = scene_tries
        self.learned_reward = learned_reward
        self.period_s = 1.0 / self.cfg.control_hz
        self.clock = ControlClock(self.period_s) if robot.realtime else None
        self.detector = self._check_sensing(make_detector(detector) if not robot.has_object_state else None)
        self._randomize(robot)
        self._cameras = self._cameras_to_read()
        self._q_cmd = self.arm.home.copy()
        self._q = self.arm.home.copy()
        self._qd = np.zeros(self.arm.n_joints)
        self._cube = np.full(3, np.nan)
        self._target = np.full(3, np.nan)
        self._frames: dict[str, Frame] = {}
        self._cube_held = self._grasped = False
        self._seen: Detections | None = None
        self.counters = {"steps": 0, "overruns": 0, "stale_frames": 0}
        self._timing = {"act_s": 0.0, "sense_s": 0.0}

    def _check_sensing(self, detector: ColorDetector | None) -> ColorDetector | None:
        """Refuse, at construction, a robot that cannot give this task what it needs."""
        names = self.robot.camera_names
        needs_cube = not self.robot.has_object_state and self.task.name != "reach"
        if needs_cube and "scene" not in names:
            raise ValueError(f"task {self.task.name!r} needs the scene camera (the cube is found by the "
                             "detector); pass scene_camera=")
        if needs_cube and detector is None:
            raise ValueError(f"task {self.task.name!r} needs a detector calibration (detector=, or a "
                             "`detector` section in the camera YAML)")
        if self.cfg.obs_mode != "state" and self.cfg.camera not in names:
            raise ValueError(f"obs_mode {self.cfg.obs_mode!r} with camera {self.cfg.camera!r} needs that camera "
                             f"(pass {self.cfg.camera}_camera=); this robot has: {', '.join(names) or 'none'}")
        self._check_reach_target()
        return detector if "scene" in names else None

    def _check_reach_target(self) -> None:
        """Pixel reach needs a target the camera sees: the robot's objects (the twin, sim_node), or a
        success classifier as the reward. A real table's reach target is virtual: refused, here at
        construction and again once a ROS robot has said at connect whether it has objects."""
        if (self.task.name == "reach" and self.cfg.obs_mode != "state" and not self.robot.has_object_state
                and not self.learned_reward):
            raise ValueError("reach from pixels on this robot has no target the camera can see (the target is "
                             "virtual on a real table): give a success classifier as the reward (reward_model=, "
                             "--reward-model; se-robot reward train), or use obs_mode state")

    def _randomize(self, robot: Robot) -> None:
        """Hand ``cfg.randomize`` to a robot that can randomize itself (the twin draws anew at every
        ``reset_scene``, seeded from the reset's generator); refused on any other robot."""
        if self.cfg.twin_camera and getattr(robot, "set_randomization", None) is None:
            raise ValueError(f"twin_camera={self.cfg.twin_camera!r}: an aligned camera is for the sim twin "
                             f"(make_twin_env applies it); this robot ({type(robot).__name__}) has its own camera")
        if not self.cfg.randomize:
            return
        if getattr(robot, "set_randomization", None) is None:
            raise ValueError(f"randomize={self.cfg.randomize!r}: domain randomization is for the sim twin; "
                             f"this robot ({type(robot).__name__}) cannot change its camera or physics")
        robot.set_randomization(self.cfg.randomize)

    def _cameras_to_read(self) -> tuple[str, ...]:
        """The pixel camera, and the scene camera when the detector looks at it."""
        cams = [self.cfg.camera] if self.cfg.obs_mode != "state" else []
        if self.detector is not None and "scene" not in cams:
            cams.append("scene")
        return tuple(cams)

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Home, restore the scene (the robot's own reset, else the operator), and start only from
        a scene that is not already successful: such a start is rejected and restored again, at
        most ``scene_tries`` times, then ``SceneResetError`` (never a fake-success episode)."""
        super().reset(seed=seed)
        robot = self.robot
        robot.connect()
        self._check_reach_target()
        scene = robot.reset_scene(self.np_random)
        robot.home(self.home_tolerance_rad, self.home_timeout_s)
        self._q_cmd = self.arm.home.copy()
        self.counters = {"steps": 0, "overruns": 0, "stale_frames": 0}
        by_operator = scene is None and self.task.name != "reach"
        message = f"new {self.task.name} episode: put the cube back on the table, in view, away from the goal"
        for attempt in range(1, self.scene_tries + 1):
            if attempt > 1 and not by_operator:
                robot.reset_scene(self.np_random)  # the twin resamples (arm at home); a virtual target below
            if by_operator and not self.operator.restore(self.task, self.np_random, message):
                raise SceneResetError(f"reset: the operator did not restore the {self.task.name} scene")
            stale = self._sense_start()
            s = self.object_state()
            if not self.task.success(s):
                break
            message = (f"the {self.task.name} episode would start already successful (cube at "
                       f"{np.round(s.cube_pos, 3).tolist()} m): move the cube away from the goal "
                       f"(try {attempt + 1} of {self.scene_tries})")
        else:
            raise SceneResetError(f"reset: the {self.task.name} scene started already successful "
                                  f"{self.scene_tries} times in a row; such an episode is never used. Check "
                                  "the scene (cube off the goal, on the table) and the detector's calibration")
        if self.clock is not None:
            self.clock.restart()
        return self._observe(s), {**self._info(s, None, 0.0, stale), "scene/tries": attempt}

    def _sense_start(self) -> bool:
        """The start state after a scene reset: a virtual reach target, the objects seen anew."""
        if not self.robot.has_object_state:
            sample = self.task.sample_reset(self.np_random)
            self._target = sample.target_pos.copy()
            self._cube = sample.cube_pos.copy() if self.task.name == "reach" else np.full(3, np.nan)
        self._cube_held, self._grasped, self._seen = False, False, None
        if self.detector is None or self.task.name == "reach":
            return self._sense(self.robot.now())
        self._see_restored_scene()
        self._wait_for_objects()
        return False

    def _see_restored_scene(self) -> None:
        """Sense from a frame grabbed ``SCENE_SETTLE_S`` after the scene was restored: a frame
        still in the camera's pipeline then (or the operator's hand leaving the view) must not
        decide whether the episode starts already successful. No fresh frame in
        ``object_timeout_s`` is a ``SceneResetError``: the start cannot be judged (a run pauses)."""
        since = self.robot.now() + SCENE_SETTLE_S
        deadline = since + self.object_timeout_s
        while self._sense(since):
            if self.robot.now() >= deadline:
                raise SceneResetError(f"reset: no fresh frame from the scene camera within "
                                      f"{self.object_timeout_s:.1f} s after the {self.task.name} scene was "
                                      "restored, so the start cannot be judged; check the camera")

    def step(self, action):
        t0 = time.perf_counter()
        target = self.decoder.decode(action, self._q_cmd)
        cmd = self.robot.send(target)
        t_cmd = self.robot.now()
        self._q_cmd = cmd.positions
        self._timing["act_s"] = time.perf_counter() - t0
        late_s = 0.0
        if self.clock is not None:
            late_s = self.clock.wait(self.robot.prefetch)
            self.counters["overruns"] += int(late_s > 0)
        else:
            self.robot.advance(self.period_s)
        self.counters["steps"] += 1
        t1 = time.perf_counter()
        try:
            stale = self._sense(t_cmd)
        except StaleReading as e:
            # Acting on old data is never safe: the episode ends here, the last observation is
            # returned as it was, and the reason travels in info (a learner drops nothing).
            s = self.object_state()
            info = {**self._info(s, cmd, late_s, True), "truncation_reason": str(e)}
            return self._observe(s), 0.0, False, True, info
        self._timing["sense_s"] = time.perf_counter() - t1
        s = self.object_state()
        success = bool(self.task.success(s))
        reward = float(self.task.reward(s, self.cfg.reward_type))
        terminated = success and self.task.cfg.terminate_on_success
        return self._observe(s), reward, terminated, False, self._info(s, cmd, late_s, stale, success)

    def render(self):
        if self.render_mode != "rgb_array" or "scene" not in self.robot.camera_names:
            return None
        return self.robot.capture("scene", self.render_size, -np.inf, self.frame_timeout_s).image

    def close(self):
        self.robot.close()

    # ------------------------------------------------------------------ sensing
    def _sense(self, t_cmd: float) -> bool:
        """Frames newer than the command (if they come in time), joints, objects; True if stale."""
        frames = {name: self.robot.capture(name, self.cfg.image_size, t_cmd, self.frame_timeout_s)
                  for name in self._cameras}
        stale = any(f.stale for f in frames.values())
        self.counters["stale_frames"] += int(stale)
        self._frames = frames
        state = self.robot.read()
        self._q, self._qd = state.positions, state.velocities
        objects = self.robot.object_state()
        if objects is not None:
            self._cube, self._target = objects.cube_pos, objects.target_pos
        elif self.detector is not None:
            self._update_objects(self.detector.detect(frames["scene"].image), frames["scene"].image.shape)
        return stale

    def _update_objects(self, det: Detections, frame_shape: tuple[int, ...]) -> None:
        """Keep the last known positions when a blob is hidden (e.g. the cube under the gripper)."""
        self._seen = det
        if self.task.name == "reach":
            return
        if det.cube is not None:
            self._cube, self._cube_held = self.detector.cube_position(det.cube, frame_shape, self._holding_ee())
        if self.task.name == "push" and det.target is not None:
            self._target = np.array([*det.target.table_xy_m, 0.0])

    def _holding_ee(self) -> np.ndarray | None:
        """The gripper's position when the cube may be in it (so off the table), else None. One
        camera sees a gripper held up on the cube's line of sight just as it sees a lift; so only a
        lift, only with jaws that closed on something (they stop short of their command, as the cube stops them) and only
        next to where the cube was last seen (then as long as they stay closed on it)."""
        if self.task.name != "lift":
            return None
        opening = self.arm.gripper_fraction(self._q)
        if not (opening < self.held_max_gripper
                and self.arm.gripper_fraction(self._q_cmd) < opening - self.blocked_margin):
            self._grasped = False
            return None
        ee = self.kin.fk(self._q)
        # latched while the jaws stay blocked: once the cube rises, its table estimate runs off
        self._grasped = self._grasped or bool(np.linalg.norm(ee - self._cube) < self.grasp_radius_m)
        return ee if self._grasped else None

    def _wait_for_objects(self) -> None:
        from se_robot.hardware.camera import CameraError

        deadline = self.robot.now() + self.object_timeout_s
        while np.isnan(self._cube).any() and self.robot.now() < deadline:
            self._sense(self.robot.now())
        if np.isnan(self._cube).any():
            raise CameraError(f"reset: the {self.task.name} task needs the cube, but the detector found no "
                              f"cube-coloured blob in {self.object_timeout_s:.1f} s; place the cube in view "
                              "or check the HSV ranges in the camera YAML")

    # ------------------------------------------------------------------ observations
    def object_state(self) -> TaskState:
        """What the task sees: FK of the measured joints, the robot's or the detected (or virtual)
        objects. Scripted experts and teleop read it, as a policy reads the observation."""
        return TaskState(self.kin.fk(self._q), np.float64(self.arm.gripper_fraction(self._q)),
                         np.array(self._cube, dtype=np.float64), np.array(self._target, dtype=np.float64))

    def _observe(self, s: TaskState) -> dict[str, np.ndarray]:
        mode, obs = self.cfg.obs_mode, {}
        if mode != "pixels":
            obs["state"] = build_proprio(self._q, self._qd, float(s.gripper), s.ee_pos)
        if mode == "state":
            obs["task"] = np.asarray(self.task.features(s), dtype=np.float32)
        if mode != "state":
            image = self._frames[self.cfg.camera].image
            size = self.cfg.image_size
            obs["pixels"] = image if image.shape[:2] == (size, size) else center_square(image, size)
        return obs

    def _info(self, s: TaskState, cmd: SafeCommand | None, late_s: float, stale: bool,
              success: bool | None = None) -> dict[str, Any]:
        """The step's info; ``success``: the task's verdict on ``s`` where the caller has it already."""
        det = self._seen
        frame = self._frames.get(self.cfg.camera if self.cfg.obs_mode != "state" else "scene")
        info = {
            "is_success": bool(self.task.success(s)) if success is None else success,
            "safety/clipped": bool(cmd.clipped) if cmd else False,
            "safety/held": bool(cmd.held) if cmd else False,
            "safety/reasons": ",".join(cmd.reasons) if cmd else "",
            "timing/overrun": late_s > 0,
            "timing/late_s": float(late_s),
            "timing/overruns": self.counters["overruns"],
            "camera/stale": bool(stale),
            "camera/stale_frames": self.counters["stale_frames"],
            "detector/cube_visible": bool(det is not None and det.cube is not None),
            "detector/target_visible": bool(det is not None and det.target is not None),
            "detector/cube_held": self._cube_held,
        }
        if self.clock is not None:  # wall-clock figures of a real-time robot (a twin's would only add noise)
            info["timing/act_s"], info["timing/sense_s"] = self._timing["act_s"], self._timing["sense_s"]
        if frame is not None:  # absent rather than NaN: NaN != NaN breaks determinism checks
            info["camera/frame_age_s"] = self.robot.now() - frame.stamp_s
        return info

    @property
    def commanded_joints(self) -> np.ndarray:
        """The last command the safety filter let through: the reference the next action moves."""
        return self._q_cmd.copy()

    @property
    def measured_joints(self) -> np.ndarray:
        """The joints of the last reading (rad): what the observation's state starts with."""
        return self._q.copy()

    @property
    def camera_images(self) -> dict[str, np.ndarray]:
        """The newest frame (RGB) of each camera this env reads, by camera name: the live view shows them."""
        return {name: frame.image for name, frame in self._frames.items()}


def make_arm_env(robot: Robot, task: str | Task = "reach", max_episode_steps: int | None = None,
                 **options: Any) -> gym.Env:
    """``ArmEnv`` in a ``TimeLimit`` at ``max_episode_steps`` (default: the task's)."""
    env = ArmEnv(robot, task, **options)
    return gym.wrappers.TimeLimit(env, max_episode_steps=max_episode_steps or env.task.cfg.max_episode_steps)


def make_twin_env(task: str | Task = "reach", arm: str = "so101", **options: Any) -> ArmEnv:
    """Entry point of the registered ``se_robot/Sim*-v0`` ids: ``ArmEnv(TwinRobot)``."""
    from se_robot.sim.twin_robot import TwinRobot
    from se_robot.tasks import load_task

    task_obj = load_task(task) if isinstance(task, str) else task
    robot = TwinRobot(arm, task_obj, control_hz=float(options.get("control_hz", 10.0)))
    if options.get("twin_camera"):   # before the env's randomizer, which keeps this camera as its nominal one
        from se_robot.envs.camera_fit import apply_camera_config

        apply_camera_config(robot.twin.model, options["twin_camera"])
    return ArmEnv(robot, task_obj, **options)


__all__ = ["ArmEnv", "center_square", "make_arm_env", "make_twin_env"]
