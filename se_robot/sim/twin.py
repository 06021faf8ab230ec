"""The MuJoCo twin of the arm in its task scene, without any Gymnasium around it.

The Gymnasium env, the byte-level emulator and the ROS ``sim_node`` all step this one object, so
the servo model, scene and cameras are identical wherever a policy meets the twin.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

import mujoco
import numpy as np

from se_robot.arm import ArmDescription
from se_robot.sim.kinematics import index_of
from se_robot.tasks import CUBE_HALF_M, ResetSample, Task, TaskState, load_task


class ArmTwin:
    def __init__(self, arm: ArmDescription, task: Task | str = "reach"):
        from se_robot.sim.mjcf import build_model

        self.arm = arm
        self.task = load_task(task) if isinstance(task, str) else task
        self.model = build_model(arm, scene=True)
        self.data = mujoco.MjData(self.model)
        m = self.model
        joint_ids = [m.joint(n).id for n in arm.joint_names]
        # slices where the arm's entries are consecutive (they are in the built models): cheaper
        # to read every tick than index arrays
        self._qadr = index_of([m.jnt_qposadr[j] for j in joint_ids])
        self._dadr = index_of([m.jnt_dofadr[j] for j in joint_ids])
        self._act = index_of([m.actuator(n).id for n in arm.joint_names])
        self._site = m.site(arm.ee_site).id
        self._cube_q = m.jnt_qposadr[m.joint("cube_joint").id]
        self._cube_dof = m.jnt_dofadr[m.joint("cube_joint").id]
        self._cube_body = m.body("cube").id
        self._mocap = m.body_mocapid[m.body("target").id]
        self._target_geom = m.geom("target_geom").id
        self._post_geom = m.geom("target_post").id
        self._goal_geom = m.geom("goal_geom").id
        self._coupled = [(m.jnt_qposadr[m.eq_obj1id[e]], m.eq_data[e, 1]) for e in range(m.neq)
                         if m.eq_type[e] == mujoco.mjtEq.mjEQ_JOINT]
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._cameras: dict[str, mujoco.MjvCamera] = {}
        self.time_s = 0.0
        # Hooks of se_robot.sim.randomize (TwinRandomizer): off, the twin is the compiled model as is.
        #: applied to every rendered frame (noise, blur), or None
        self.image_filter: Callable[[np.ndarray], np.ndarray] | None = None
        #: where a resized cube rests: added to the height of a reset's cube centre (m)
        self.cube_z_offset_m = 0.0
        self._delay: deque[np.ndarray] | None = None  # targets in flight, oldest first
        self._delay_ticks = 0
        #: position-servo deadband (rad): a joint's applied target moves only for a change of at least this
        self.servo_deadband_rad = 0.0
        # bumped by textures_changed; each renderer remembers the count its textures were uploaded at
        self._textures_version = 0
        self._renderer_textures: dict[tuple[int, int], int] = {}
        self._style_target()

    def _style_target(self) -> None:
        """Reach shows a sphere on a post; push shows a goal disc on the table; lift shows none."""
        m = self.model
        name = self.task.name
        # A geom's own rgba overrides its material's, so set whole colours, not only alpha.
        for geom in (self._target_geom, self._post_geom):
            m.geom_rgba[geom] = (0.95, 0.15, 0.15, 1.0 if name == "reach" else 0.0)
        m.geom_rgba[self._goal_geom] = (0.15, 0.3, 0.95, 1.0 if name == "push" else 0.0)

    # ------------------------------------------------------------------ control
    def reset(self, rng: np.random.Generator | None = None, sample: ResetSample | None = None,
              q: np.ndarray | None = None) -> ResetSample:
        """Arm at home (or ``q``), objects from ``sample`` or drawn from the task."""
        if sample is None:
            sample = self.task.sample_reset(rng if rng is not None else np.random.default_rng())
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        q0 = self.arm.home if q is None else np.asarray(q, dtype=np.float64)
        d.qpos[self._qadr] = q0
        if self.arm.gripper is not None:
            for adr, coef in self._coupled:
                d.qpos[adr] = coef * q0[self.arm.gripper_index]
        d.ctrl[self._act] = q0
        if self._delay is not None:
            self._fill_delay(q0)
        self.place_objects(sample)
        self.time_s = 0.0
        return sample

    def place_objects(self, sample: ResetSample) -> None:
        """Cube (at rest) and target where ``sample`` says, the arm untouched: what a person
        restoring the scene between episodes does (the emulator's scripted operator)."""
        m, d = self.model, self.data
        c = self._cube_q
        d.qpos[c:c + 3] = sample.cube_pos
        if self.cube_z_offset_m:
            d.qpos[c + 2] += self.cube_z_offset_m
        d.qpos[c + 3:c + 7] = [np.cos(sample.cube_yaw / 2), 0, 0, np.sin(sample.cube_yaw / 2)]
        d.qvel[self._cube_dof:self._cube_dof + 6] = 0.0
        d.mocap_pos[self._mocap] = sample.target_pos
        mujoco.mj_forward(m, d)

    def set_targets(self, q: np.ndarray) -> None:
        """Position-servo targets (rad, joint order); the servos track them as the physics steps.

        With an action delay of k ticks (``set_action_delay``) the targets set k calls earlier are
        applied instead: control latency, one tick per command.

        With a deadband (``servo_deadband_rad``), a joint keeps its applied target while the one
        arriving differs from it by less than the deadband, as a real servo ignores an error of a few
        ticks; it acts where the servo is, after the delay line."""
        if self._delay is not None:
            self._delay.append(np.array(q, dtype=np.float64))
            q = self._delay.popleft()
        if self.servo_deadband_rad:
            held = self.data.ctrl[self._act]
            q = np.where(np.abs(np.asarray(q, dtype=np.float64) - held) < self.servo_deadband_rad, held, q)
        self.data.ctrl[self._act] = q

    def set_targets_now(self, q: np.ndarray) -> None:
        """Targets applied at once, whatever the delay or deadband, and the delay line filled with
        them: a stop must not wait behind commands still in flight."""
        if self._delay is not None:
            self._fill_delay(q)
        self.data.ctrl[self._act] = q

    def set_action_delay(self, ticks: int) -> None:
        """Apply each target ``ticks`` ``set_targets`` calls late (0: at once, no per-call work)."""
        if ticks < 0:
            raise ValueError(f"action delay must be >= 0 ticks, got {ticks}")
        self._delay_ticks = ticks
        self._delay = deque() if ticks else None
        if self._delay is not None:
            self._fill_delay(self.targets())

    def _fill_delay(self, q: np.ndarray) -> None:
        self._delay.clear()
        self._delay.extend(np.array(q, dtype=np.float64) for _ in range(self._delay_ticks))

    def targets(self) -> np.ndarray:
        return self.data.ctrl[self._act].copy()

    def step(self, dt_s: float) -> None:
        n = max(1, int(round(dt_s / self.model.opt.timestep)))
        mujoco.mj_step(self.model, self.data, nstep=n)
        self.time_s += n * self.model.opt.timestep

    # ------------------------------------------------------------------ sensing
    def joint_positions(self) -> np.ndarray:
        return self.data.qpos[self._qadr].copy()

    def joint_velocities(self) -> np.ndarray:
        return self.data.qvel[self._dadr].copy()

    def joint_efforts(self) -> np.ndarray:
        return self.data.actuator_force[self._act].copy()

    def ee_position(self) -> np.ndarray:
        return self.data.site_xpos[self._site].copy()

    def cube_position(self) -> np.ndarray:
        return self.data.xpos[self._cube_body].copy()

    def target_position(self) -> np.ndarray:
        return self.data.mocap_pos[self._mocap].copy()

    def gripper_fraction(self, q: np.ndarray | None = None) -> float:
        """Gripper opening as 0 (closed) .. 1 (open), from the jaw joint."""
        return self.arm.gripper_fraction(self.joint_positions() if q is None else q)

    def task_state(self) -> TaskState:
        return TaskState(self.ee_position(), np.float64(self.gripper_fraction()),
                         self.cube_position(), self.target_position())

    def render(self, camera: str = "scene", width: int = 84, height: int = 84) -> np.ndarray:
        """RGB uint8 (height, width, 3) from a named camera."""
        key = (height, width)
        r = self._renderers.get(key)
        if r is None:  # a new renderer uploads the model's textures as they are now
            r = self._renderers[key] = mujoco.Renderer(self.model, height=height, width=width)
            self._renderer_textures[key] = self._textures_version
        elif self._renderer_textures[key] != self._textures_version:
            upload_textures(self.model, r)
            self._renderer_textures[key] = self._textures_version
        cam = self._cameras.get(camera)
        if cam is None:  # made once: update_scene would look the name up and build one every frame
            cam_id = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
            if cam_id < 0:
                raise ValueError(f"the twin has no camera {camera!r}")
            cam = self._cameras[camera] = mujoco.MjvCamera()
            cam.type, cam.fixedcamid = mujoco.mjtCamera.mjCAMERA_FIXED, cam_id
        r.update_scene(self.data, camera=cam)
        if self.image_filter is None:
            return r.render()
        return self.image_filter(r.render())

    def textures_changed(self) -> None:
        """Say that ``model.tex_data`` was rewritten: each live renderer uploads it before its next
        frame (a renderer copies textures to its GL context once, when it is made)."""
        self._textures_version += 1

    def close(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()
        self._renderer_textures.clear()


def upload_textures(model: mujoco.MjModel, renderer: mujoco.Renderer) -> None:
    """Copy every texture of ``model`` to ``renderer``'s GL context. ``mujoco.Renderer`` has no public
    handle on its contexts; its ``_gl_context`` and ``_mjr_context`` are the ones it renders with."""
    renderer._gl_context.make_current()
    for texture in range(model.ntex):
        mujoco.mjr_uploadTexture(model, renderer._mjr_context, texture)


__all__ = ["ArmTwin", "CUBE_HALF_M"]
