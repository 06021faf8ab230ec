"""Forward kinematics, Jacobians and damped-least-squares IK on the MuJoCo model of the arm.

Uses a model of the arm alone (no scene, no simulation running), so the hardware driver, the
safety filter and the sim twin all compute the same poses from the same joint vector.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np

from se_robot.arm import ArmDescription

DOWN = np.array([0.0, 0.0, -1.0])


# The IK's two row-wise cross products, a x r and a x axis (c_j = a_{j+1} b_{j+2} - a_{j+2} b_{j+1}),
# from the (k, 3) joint axes a and one (k, 6) array [r | axis]: a take of _LEFT from a times a
# take of _RIGHT from [r | axis] gives the (k, 12) products [a_{j+1} b_{j+2} | a_{j+2} b_{j+1}],
# the left half minus the right half the (k, 6) [a x r | a x axis]. Two takes and two arithmetic
# calls instead of fourteen calls.
_LEFT = np.array([1, 2, 0, 1, 2, 0, 2, 0, 1, 2, 0, 1])
_RIGHT = np.array([2, 0, 1, 5, 3, 4, 1, 2, 0, 4, 5, 3])

# The gufunc np.linalg.solve calls for a matrix and a vector (the same LAPACK gesv, so the same
# bits): on the IK's 4 x 4 system the wrapper's checks and error-state context cost four times
# the solve itself. It returns NaN instead of raising on a singular matrix; the IK's damped
# matrix J J^T + damping^2 I is positive definite for damping > 0, which ik() requires. The gufunc
# is private to numpy: a numpy without it gets the public solve (the same gesv, slower).
try:
    from numpy.linalg._umath_linalg import solve1 as _solve
except ImportError:
    _solve = np.linalg.solve


def index_of(ids: list[int] | np.ndarray) -> slice | np.ndarray:
    """A slice where the ids are consecutive (so indexing MjData gives a view, made once), else the ids."""
    ids = np.asarray(ids, dtype=int)
    if len(ids) and (np.diff(ids) == 1).all():
        return slice(int(ids[0]), int(ids[-1]) + 1)
    return ids


class Kinematics:
    """FK/IK for one arm. Not thread-safe: each thread should own its instance."""

    def __init__(self, arm: ArmDescription):
        from se_robot.sim.mjcf import build_model

        self.arm = arm
        self.model = build_model(arm, scene=False)
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._qadr = index_of([m.jnt_qposadr[m.joint(n).id] for n in arm.joint_names])
        self._dofadr = np.array([m.jnt_dofadr[m.joint(n).id] for n in arm.joint_names])
        self._site = m.site(arm.ee_site).id
        # Joints coupled to the gripper joint by equality constraints (parallel fingers).
        self._coupled: list[tuple[int, float, float]] = []
        if arm.gripper is not None:
            g = m.joint(arm.gripper.joint).id
            for e in range(m.neq):
                if m.eq_type[e] == mujoco.mjtEq.mjEQ_JOINT and m.eq_obj2id[e] == g:
                    j = m.eq_obj1id[e]
                    self._coupled.append((int(m.jnt_qposadr[j]), float(m.eq_data[e, 0]), float(m.eq_data[e, 1])))
        self._gripper_i = arm.gripper_index
        # Geoms that move with the arm (not the base fixed to the table): floor checks use them.
        self._geoms = np.array([g for g in range(m.ngeom) if m.body_weldid[m.geom_bodyid[g]] != 0], dtype=int)
        self._geom_index = index_of(self._geoms)
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
        # cylinders are few (one on the so101): their term is added one by one, in Python floats
        self._cylinders = [(i, float(self._drop_c[i])) for i in np.flatnonzero(self._drop_c)]
        # IK moves the joints that position and point the gripper; roll and the jaw stay put.
        self.ik_joints = [i for i in arm.arm_indices if arm.joint_names[i] != "wrist_roll"]
        ik_jnt = [m.joint(arm.joint_names[i]).id for i in self.ik_joints]
        # Views into MjData, made once: attribute access and fancy indexing cost more than the
        # arithmetic on arrays this small (IK runs every control tick), and the IK's work arrays
        # are preallocated here.
        d = self.data
        sel = index_of(ik_jnt)
        if not isinstance(sel, slice):
            raise ValueError(f"arm {arm.name!r}: the IK joints must be consecutive joints of the model "
                             "(their axes are read through views of MjData)")
        self._v_axes, self._v_anchors = d.xaxis[sel], d.xanchor[sel]
        self._v_site_pos = d.site_xpos[self._site]
        self._v_site_axis = d.site_xmat[self._site][0::3]  # first column: the direction of the fingers
        self._v_qpos = d.qpos[self._qadr] if isinstance(self._qadr, slice) else None
        self._v_qpos_all = d.qpos
        gi = self._geom_index
        self._v_geom_pos = d.geom_xpos[gi] if isinstance(gi, slice) else None
        self._v_geom_rz = d.geom_xmat[gi, 6:9] if isinstance(gi, slice) else None  # z-row of each rotation
        self._ik_index = index_of(self.ik_joints)
        self._ik_lo, self._ik_hi = arm.lower[self.ik_joints], arm.upper[self.ik_joints]
        k = len(self.ik_joints)
        self._ik_reg: dict[float, np.ndarray] = {}
        self._ik_jac = np.zeros((k, 6))     # [d(site)/dq | w * d(finger axis)/dq], joint rows
        self._ik_err = np.zeros(6)          # [site error | w * axis error]
        self._ik_rows = np.zeros((k, 6))    # [site - anchor | finger axis] per joint
        self._ik_products = np.zeros((k, 12))
        self._ik_m = np.zeros((k, k))       # J J^T + damping^2 I
        self._ik_rhs = np.zeros(k)          # J e
        # the loop's views of these, made once: (jacobian, its transpose, error) by rows used
        jac, err = self._ik_jac, self._ik_err
        self._ik_views = {n: (jac[:, :n], jac[:, :n].T, err[:n]) for n in (3, 6)}
        self._ik_halves = (self._ik_rows[:, :3], self._ik_rows[:, 3:], self._ik_products[:, :6],
                           self._ik_products[:, 6:], err[:3], err[3:], jac[:, 3:])
        self._last_q = b""
        self._jacp = np.zeros((3, m.nv))
        self._jacr = np.zeros((3, m.nv))

    # ------------------------------------------------------------------ forward
    def _set(self, q: np.ndarray) -> None:
        """Pose the model at ``q`` (float64, joint order). fk(q) then link_points(q) of the same q
        is the safety filter's common pattern: the second forward pass is skipped when the bytes
        of q are those of the last pass (identical bytes, identical pose)."""
        key = q.tobytes()
        if key == self._last_q:
            return
        d = self.data
        if self._v_qpos is not None:
            self._v_qpos[:] = q
        else:
            d.qpos[self._qadr] = q
        if self._gripper_i is not None:
            g = float(q[self._gripper_i])
            qpos = self._v_qpos_all
            for adr, c0, c1 in self._coupled:
                qpos[adr] = c0 + c1 * g
        mujoco.mj_kinematics(self.model, d)
        self._last_q = key

    def fk(self, q: np.ndarray) -> np.ndarray:
        """Gripper site position (m, base frame) for a full joint vector."""
        self._set(np.asarray(q, dtype=np.float64))
        return self._v_site_pos.copy()

    def ee_axis(self, q: np.ndarray) -> np.ndarray:
        """Unit vector along which the fingers point."""
        self._set(np.asarray(q, dtype=np.float64))
        return self._v_site_axis.copy()

    def link_points(self, q: np.ndarray) -> np.ndarray:
        """The lowest point of every moving link geometry, (k, 3); floor checks use their z."""
        self._set(np.asarray(q, dtype=np.float64))
        if self._v_geom_pos is not None:
            pts, rz = self._v_geom_pos.copy(), np.abs(self._v_geom_rz)
        else:
            d, geoms = self.data, self._geom_index
            pts, rz = d.geom_xpos[geoms], np.abs(d.geom_xmat[geoms, 6:9])
        drop = np.add.reduce(rz * self._drop_a, axis=1)
        drop += self._drop_b
        for i, c in self._cylinders:  # the other rows' term is 0
            rzz = float(rz[i, 2])
            # 1 - R_zz^2 <= 1 always, so only the lower bound can act
            drop[i] += c * math.sqrt(max(1.0 - rzz * rzz, 0.0))
        pts[:, 2] -= drop
        return pts

    def jacobian(self, q: np.ndarray) -> np.ndarray:
        """Positional Jacobian (3, n_joints) of the gripper site."""
        self._set(np.asarray(q, dtype=np.float64))
        mujoco.mj_comPos(self.model, self.data)
        mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self._site)
        return self._jacp[:, self._dofadr].copy()

    def poses(self, qs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``fk`` and ``link_points`` of every row of ``qs`` (m, n_joints): (m, 3) and (m, k, 3),
        the same values as a call of each per row. Homing ranks a few dozen poses a tick; this does
        one forward pass per row and the lowest points of all rows in one set of array operations,
        where the per-pose calls pay numpy's per-call cost for every pose."""
        qs = np.asarray(qs, dtype=np.float64)
        m, d, geoms, k = self.model, self.data, self._geom_index, len(self._geoms)
        qpos, xpos, xmat, site = d.qpos, d.geom_xpos, d.geom_xmat, self._v_site_pos  # views, taken once
        ee, pts, rot = np.empty((len(qs), 3)), np.empty((len(qs), k, 3)), np.empty((len(qs), k, 9))
        for i, q in enumerate(qs):
            # the pose as _set writes it (joints, then the coupled fingers), without its cache check
            qpos[self._qadr] = q
            if self._gripper_i is not None:
                g = float(q[self._gripper_i])
                for adr, c0, c1 in self._coupled:
                    qpos[adr] = c0 + c1 * g
            mujoco.mj_kinematics(m, d)
            ee[i] = site
            pts[i] = xpos[geoms]
            rot[i] = xmat[geoms]
        self._last_q = qs[-1].tobytes() if len(qs) else self._last_q  # the model is at the last row
        rz = np.abs(rot[:, :, 6:9])  # as link_points does, row by row
        drop = (rz * self._drop_a).sum(axis=2) + self._drop_b
        rzz = rz[:, :, 2]
        drop += self._drop_c * np.sqrt(np.maximum(1.0 - rzz * rzz, 0.0))  # adds exactly 0 but for cylinders
        pts[:, :, 2] -= drop
        return ee, pts

    # ------------------------------------------------------------------ inverse
    def ik(self, target_pos: np.ndarray, q_init: np.ndarray, point_down: bool = True,
           iters: int = 30, tol_m: float = 5e-4, damping: float = 1e-2,
           orientation_weight: float = 0.3) -> np.ndarray:
        """Damped-least-squares IK for the gripper position (and pointing it down if asked).

        Moves only ``self.ik_joints``; wrist roll and the gripper keep their values from
        ``q_init``. Returns the best joint vector found, clipped to the joint limits.
        """
        q = np.array(q_init, dtype=np.float64)
        idx = self._ik_index
        q_ik = q[idx] if isinstance(idx, slice) else None  # a view: updated in place
        lo, hi = self._ik_lo, self._ik_hi
        target = np.asarray(target_pos, dtype=np.float64)
        reg = self._ik_reg.get(damping)
        if reg is None:
            if not damping > 0:
                raise ValueError(f"damping must be > 0 (the damped system must be positive definite), got {damping}")
            reg = self._ik_reg[damping] = damping**2 * np.eye(len(self.ik_joints))
        w = orientation_weight
        pos, axis = self._v_site_pos, self._v_site_axis
        # Hinge Jacobians from the joint axes and anchors mj_kinematics already computed (cheaper
        # than mj_comPos + mj_jacSite), both cross products in one pass over preallocated arrays:
        # this loop runs every control tick, where numpy's per-call cost outweighs the arithmetic.
        jac, jac_t, e = self._ik_views[6 if point_down else 3]
        rows, products = self._ik_rows, self._ik_products
        rel, finger, left, right, err, ax_err, jac_rot = self._ik_halves
        axes, anchors, m, rhs = self._v_axes, self._v_anchors, self._ik_m, self._ik_rhs
        tol2 = tol_m * tol_m
        for _ in range(iters):
            self._set(q)
            np.subtract(target, pos, out=err)
            if point_down:
                np.subtract(DOWN, axis, out=ax_err)
                ax_err *= w
            if err @ err < tol2 and (not point_down or ax_err @ ax_err < 1e-4):
                break
            np.subtract(pos, anchors, out=rel)
            finger[:] = axis
            np.multiply(axes.take(_LEFT, axis=1), rows.take(_RIGHT, axis=1), out=products)
            np.subtract(left, right, out=self._ik_jac)
            if point_down:
                jac_rot *= w
            np.matmul(jac, jac_t, out=m)
            m += reg
            dq = _solve(m, np.matmul(jac, e, out=rhs))
            if q_ik is not None:
                q_ik += dq
                np.maximum(q_ik, lo, out=q_ik)
                np.minimum(q_ik, hi, out=q_ik)
            else:
                q[idx] = np.minimum(np.maximum(q[idx] + dq, lo), hi)
        return q
