"""Kinematics against the simulated scene and against finite differences."""

import mujoco
import numpy as np
import pytest

from se_robot.arm import load_arm
from se_robot.sim.twin import ArmTwin
from se_robot.sim.kinematics import Kinematics

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def kin():
    return Kinematics(load_arm())


def test_fk_matches_the_scene(kin):
    arm = kin.arm
    twin = ArmTwin(arm, "reach")
    rng = np.random.default_rng(0)
    for _ in range(10):
        q = rng.uniform(arm.lower, arm.upper)
        twin.reset(rng, q=q)
        np.testing.assert_allclose(kin.fk(q), twin.ee_position(), atol=1e-9)


def test_jacobian_matches_finite_differences(kin):
    q = kin.arm.home + 0.1
    jac = kin.jacobian(q)
    eps = 1e-6
    num = np.stack([(kin.fk(q + eps * e) - kin.fk(q - eps * e)) / (2 * eps) for e in np.eye(len(q))], axis=1)
    np.testing.assert_allclose(jac, num, atol=1e-6)


def test_ik_reaches_task_targets_pointing_down(kin):
    rng = np.random.default_rng(1)
    for _ in range(30):
        target = rng.uniform([0.13, -0.08, 0.03], [0.21, 0.08, 0.11])
        q = kin.ik(target, kin.arm.home, iters=100)
        assert np.linalg.norm(kin.fk(q) - target) < 2e-3
        assert kin.ee_axis(q)[2] < -0.95
        assert (q >= kin.arm.lower).all() and (q <= kin.arm.upper).all()


def test_link_points_lowest_point_is_exact_for_a_box(kin):
    q = kin.arm.home
    pts = kin.link_points(q)
    m, d = kin.model, kin.data
    kin._set(q)
    g = m.geom("palm_geom").id
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * m.geom_size[g]
    world = d.geom_xpos[g] + corners @ d.geom_xmat[g].reshape(3, 3).T
    idx = list(kin._geoms).index(g)
    assert pts[idx, 2] == pytest.approx(world[:, 2].min(), abs=1e-12)
    assert mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "base_geom") not in kin._geoms
