"""Forward kinematics, Jacobians and damped-least-squares IK on the MuJoCo model of the arm.

Uses a model of the arm alone (no scene, no simulation running), so the hardware driver, the
safety filter and the sim twin all compute the same poses from the same joint vector.
"""

from __future__ import annotations

import mujoco
import numpy as np

from se_robot.arm import ArmDescription

DOWN = np.array([0.0, 0.0, -1.0])


_NEXT, _PREV = np.array([1, 2, 0]), np.array([2, 0, 1])


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cross product of (k, 3) with (3,) or (k, 3); np.cross costs 3x more at this size."""
    return a.take(_NEXT, axis=1) * b.take(_PREV, axis=-1) - a.take(_PREV, axis=1) * b.take(_NEXT, axis=-1)


class Kinematics:
    """FK/IK for one arm. Not thread-safe: each thread should own its instance."""

    def __init__(self, arm: ArmDescription):
        from se_robot.sim.mjcf import build_model

        self.arm = arm
        self.model = build_model(arm, scene=False)
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._qadr = np.array([m.jnt_qposadr[m.joint(n).id] for n in arm.joint_names])
        self._dofadr = np.array([m.jnt_dofadr[m.joint(n).id] for n in arm.joint_names])
        self._site = m.site(arm.ee_site).id
        # Joints coupled to the gripper joint by equality constraints (parallel fingers).
        self._coupled: list[tuple[int, float, float]] = []
        if arm.gripper is not None:
            g = m.joint(arm.gripper.joint).id
            for e in range(m.neq):
                if m.eq_type[e] == mujoco.mjtEq.mjEQ_JOINT and m.eq_obj2id[e] == g:
                    j = m.eq_obj1id[e]
                    self._coupled.append((m.jnt_qposadr[j], m.eq_data[e, 0], m.eq_data[e, 1]))
        self._gripper_i = arm.gripper_index
        # Geoms that move with the arm (not the base fixed to the table): floor checks use them.
        self._geoms = np.array([g for g in range(m.ngeom) if m.body_weldid[m.geom_bodyid[g]] != 0], dtype=int)
        # Lowest point of a geom below its centre, as coefficients on |z-row of its rotation|:
        # drop = sum(|R_z| * a) + b + c * sqrt(1 - R_zz^2)  (box: a = half sizes; capsule:
        # a = (0, 0, half length), b = radius; cylinder: c = radius; sphere: b = radius).
        k = len(self._geoms)
        self._drop_a, self._drop_b, self._drop_c = np.zeros((k, 3)), np.zeros(k), np.zeros(k)
        for i, g in enumerate(self._geoms):
            t, size = m.geom_type[g], m.geom_size[g]
            if t == mujoco.mjtGeom.mjGEOM_BOX:
                self._drop_a[i] = size
            elif t == mujoco.mjtGeom.mjGEOM_CAPSULE:
                self._drop_a[i, 2], self._drop_b[i] = size[1], size[0]
            elif t == mujoco.mjtGeom.mjGEOM_CYLINDER:
                self._drop_a[i, 2], self._drop_c[i] = size[1], size[0]
            else:  # sphere, and a bounding sphere for anything else
                self._drop_b[i] = m.geom_rbound[g]
        self._has_cyl = bool(self._drop_c.any())
        # IK moves the joints that position and point the gripper; roll and the jaw stay put.
        self.ik_joints = [i for i in arm.arm_indices if arm.joint_names[i] != "wrist_roll"]
        ik_jnt = [m.joint(arm.joint_names[i]).id for i in self.ik_joints]
        # Views into MjData, made once: attribute access and fancy indexing cost more than the
        # arithmetic on arrays this small (IK runs every control tick).
        d = self.data
        sel = slice(ik_jnt[0], ik_jnt[-1] + 1) if ik_jnt == list(range(ik_jnt[0], ik_jnt[-1] + 1)) else ik_jnt
        self._v_axes, self._v_anchors = d.xaxis[sel], d.xanchor[sel]
        self._v_site_pos = d.site_xpos[self._site]
        self._v_site_xmat = d.site_xmat[self._site]
        self._ik_lo, self._ik_hi = arm.lower[self.ik_joints], arm.upper[self.ik_joints]
        self._last_q: np.ndarray | None = None
        self._jacp = np.zeros((3, m.nv))
        self._jacr = np.zeros((3, m.nv))

    # ------------------------------------------------------------------ forward
    def _set(self, q: np.ndarray) -> None:
        # fk(q) then link_points(q) of the same q is the safety filter's common pattern: skip the
        # second forward pass when nothing changed.
        if self._last_q is not None and np.array_equal(q, self._last_q):
            return
        self._last_q = np.array(q, dtype=np.float64)
        d = self.data
        d.qpos[self._qadr] = q
        if self._gripper_i is not None:
            g = q[self._gripper_i]
            for adr, c0, c1 in self._coupled:
                d.qpos[adr] = c0 + c1 * g
        mujoco.mj_kinematics(self.model, d)

    def fk(self, q: np.ndarray) -> np.ndarray:
        """Gripper site position (m, base frame) for a full joint vector."""
        self._set(np.asarray(q, dtype=np.float64))
        return self.data.site_xpos[self._site].copy()

    def ee_axis(self, q: np.ndarray) -> np.ndarray:
        """Unit vector along which the fingers point."""
        self._set(np.asarray(q, dtype=np.float64))
        return self.data.site_xmat[self._site].reshape(3, 3)[:, 0].copy()

    def link_points(self, q: np.ndarray) -> np.ndarray:
        """The lowest point of every moving link geometry, (k, 3); floor checks use their z."""
        self._set(np.asarray(q, dtype=np.float64))
        d = self.data
        pts = d.geom_xpos[self._geoms]  # fancy indexing: already a copy
        rz = np.abs(d.geom_xmat[self._geoms, 6:9])  # |z-row| of each geom's rotation
        drop = (rz * self._drop_a).sum(axis=1) + self._drop_b
        if self._has_cyl:
            drop += self._drop_c * np.sqrt(np.clip(1.0 - rz[:, 2] ** 2, 0.0, 1.0))
        pts[:, 2] -= drop
        return pts

    def jacobian(self, q: np.ndarray) -> np.ndarray:
        """Positional Jacobian (3, n_joints) of the gripper site."""
        self._set(np.asarray(q, dtype=np.float64))
        mujoco.mj_comPos(self.model, self.data)
        mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self._site)
        return self._jacp[:, self._dofadr].copy()

    # ------------------------------------------------------------------ inverse
    def ik(self, target_pos: np.ndarray, q_init: np.ndarray, point_down: bool = True,
           iters: int = 30, tol_m: float = 5e-4, damping: float = 1e-2,
           orientation_weight: float = 0.3) -> np.ndarray:
        """Damped-least-squares IK for the gripper position (and pointing it down if asked).

        Moves only ``self.ik_joints``; wrist roll and the gripper keep their values from
        ``q_init``. Returns the best joint vector found, clipped to the joint limits.
        """
        q = np.array(q_init, dtype=np.float64)
        idx = self.ik_joints
        lo, hi = self._ik_lo, self._ik_hi
        target = np.asarray(target_pos, dtype=np.float64)
        reg = damping**2 * np.eye(len(idx))
        w = orientation_weight
        pos, xmat = self._v_site_pos, self._v_site_xmat
        for _ in range(iters):
            self._set(q)
            err = target - pos
            axis = xmat[0::3]  # first column: the direction of the fingers
            ax_err = w * (DOWN - axis) if point_down else None
            if err @ err < tol_m * tol_m and (ax_err is None or ax_err @ ax_err < 1e-4):
                break
            # Hinge Jacobians from the joint axes and anchors mj_kinematics already computed:
            # cheaper than mj_comPos + mj_jacSite, and this loop runs every control tick.
            a = self._v_axes                                # (k, 3) world joint axes
            jp = _cross(a, pos - self._v_anchors)           # (k, 3) d(site)/dq
            if ax_err is not None:
                jac = np.concatenate([jp, w * _cross(a, axis)], axis=1)  # (k, 6)
                e = np.concatenate([err, ax_err])
            else:
                jac, e = jp, err
            dq = np.linalg.solve(jac @ jac.T + reg, jac @ e)
            q[idx] = np.minimum(np.maximum(q[idx] + dq, lo), hi)
        return q
