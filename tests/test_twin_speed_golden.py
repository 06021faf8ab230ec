"""The fast kinematics and safety paths give exactly what the straightforward code gave.

``tests/data/twin_speed_golden.npz`` holds the outputs of ``Kinematics`` (fk, ee_axis, jacobian,
link_points, ik) and of ``SafetyFilter.filter`` on the seeded random inputs made below, as computed
by se_robot at 7897b48, before the twin's per-step cost was cut (issue 21). The rewrite must
reproduce every safety decision (clipped, held, reasons) and every joint target bit for bit:
the filter is the last line of defence for a real arm, and a policy must see the same actions.

``tests/data/twin_env_golden.npz`` holds whole episodes of the twin's env (reach, push and lift
from the state, gripper-position actions, resets included): observations, rewards, episode ends,
the safety filter's verdicts and the commanded joints, as se_robot at f45afad computed them (whose
kinematics and filter give the outputs above). The per-step cost was cut again after it (issue 21);
an action that changed in its last bit would show here as the episode goes on.

A deliberate change of a rule or of config/arms/so101.yaml changes these outputs; regenerate the
files then with ``SE_ROBOT_REGENERATE_GOLDEN=1 pytest tests/test_twin_speed_golden.py`` and say
why in the commit.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from se_robot.arm import load_arm
from se_robot.safety import SafetyFilter
from se_robot.sim.kinematics import Kinematics

pytestmark = pytest.mark.timeout(120)

GOLDEN = Path(__file__).parent / "data" / "twin_speed_golden.npz"
GOLDEN_ENV = Path(__file__).parent / "data" / "twin_env_golden.npz"
ARM = load_arm("so101")


def _poses(rng: np.random.Generator, n: int) -> np.ndarray:
    """Joint vectors over the whole range, a tenth of them a little outside the hard limits
    (allowed as a reading), so links under the floor and poses outside the box occur."""
    q = rng.uniform(ARM.lower, ARM.upper, size=(n, ARM.n_joints))
    out = rng.random(n) < 0.1
    q[out] += rng.uniform(-0.2, 0.2, size=(out.sum(), ARM.n_joints))
    return q


def _filter_cases(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(current, target, goal) with steps from tiny to far past every cap; goal NaN: none given."""
    cur = _poses(rng, n)
    scale = rng.choice([0.005, 0.03, 0.1, 0.3, 1.0], size=(n, 1))
    target = cur + scale * rng.normal(size=cur.shape)
    goal = cur + 0.1 * rng.normal(size=cur.shape)
    goal[rng.random(n) < 0.5] = np.nan
    return cur, target, goal


def _ik_cases(rng: np.random.Generator, kin: Kinematics, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeds near the task's working poses and targets a control step or two away."""
    q0 = ARM.home + rng.uniform(-0.6, 0.6, size=(n, ARM.n_joints))
    q0 = np.clip(q0, ARM.lower, ARM.upper)
    target = np.array([kin.fk(q) for q in q0]) + rng.normal(scale=0.02, size=(n, 3))
    return q0, target


def _compute() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2024)
    kin = Kinematics(ARM)
    out: dict[str, np.ndarray] = {}
    q = _poses(rng, 100)
    out["fk"] = np.array([kin.fk(x) for x in q])
    out["ee_axis"] = np.array([kin.ee_axis(x) for x in q])
    out["jacobian"] = np.array([kin.jacobian(x) for x in q])
    out["link_points"] = np.array([kin.link_points(x) for x in q])
    q0, target = _ik_cases(rng, kin, 100)
    out["ik_decoder"] = np.array([kin.ik(t, s, point_down=True, iters=10, tol_m=1e-3) for s, t in zip(q0, target)])
    out["ik_default"] = np.array([kin.ik(t, s) for s, t in zip(q0, target)])
    out["ik_free"] = np.array([kin.ik(t, s, point_down=False, iters=10, tol_m=1e-3) for s, t in zip(q0, target)])
    cur, tgt, goal = _filter_cases(rng, 300)
    safety = SafetyFilter(ARM, Kinematics(ARM))
    positions, clipped, held, reasons = [], [], [], []
    for c, t, g in zip(cur, tgt, goal):
        cmd = safety.filter(t, c, None if np.isnan(g).any() else g)
        positions.append(cmd.positions)
        clipped.append(cmd.clipped)
        held.append(cmd.held)
        reasons.append(",".join(cmd.reasons))
    out["filter_positions"] = np.array(positions)
    out["filter_clipped"] = np.array(clipped)
    out["filter_held"] = np.array(held)
    out["filter_reasons"] = np.array(reasons, dtype=str)
    return out


@pytest.fixture(scope="module")
def computed() -> dict[str, np.ndarray]:
    out = _compute()
    if os.environ.get("SE_ROBOT_REGENERATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        np.savez_compressed(GOLDEN, **out)
    return out


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


@pytest.mark.parametrize("key", ["fk", "ee_axis", "jacobian", "link_points", "ik_decoder", "ik_default", "ik_free"])
def test_kinematics_reproduce_the_reference_bit_for_bit(computed, golden, key):
    np.testing.assert_array_equal(computed[key], golden[key])


def test_safety_filter_makes_the_same_decisions_bit_for_bit(computed, golden):
    for key in ("filter_reasons", "filter_clipped", "filter_held", "filter_positions"):
        np.testing.assert_array_equal(computed[key], golden[key], err_msg=key)


def test_the_cases_reach_every_rule(golden):
    """Inputs that never clip, project or start outside would prove nothing about those paths."""
    seen = set(",".join(golden["filter_reasons"]).split(","))
    for reason in ("joint_limit", "joint_step", "ee_step", "workspace", "floor", "current_unsafe"):
        assert reason in seen, reason
    assert golden["filter_held"].any() and golden["filter_clipped"].any()


def test_ik_refuses_an_undamped_system():
    """The solve assumes J J^T + damping^2 I is positive definite: no damping, no solve."""
    kin = Kinematics(ARM)
    with pytest.raises(ValueError, match="damping"):
        kin.ik(kin.fk(ARM.home) + 0.01, ARM.home, damping=0.0)


def _episodes() -> dict[str, np.ndarray]:
    """120 seeded steps per task (every 17th action saturated: clipped commands), resets included."""
    from se_robot.envs import make_env

    out: dict[str, np.ndarray] = {}
    for task in ("reach", "push", "lift"):
        env = make_env(task, obs_mode="state")
        actions = np.random.default_rng(7).uniform(-1, 1, size=(120, 4)).astype(np.float32)
        actions[5::17] = 1.0
        obs, _ = env.reset(seed=3)
        rows: dict[str, list] = {k: [] for k in ("state", "task", "reward", "ended", "clipped", "held", "commanded")}
        for a in actions:
            obs, reward, terminated, truncated, info = env.step(a)
            rows["state"].append(obs["state"])
            rows["task"].append(obs["task"])
            rows["reward"].append(reward)
            rows["ended"].append((terminated, truncated))
            rows["clipped"].append(info["safety/clipped"])
            rows["held"].append(info["safety/held"])
            rows["commanded"].append(env.unwrapped.commanded_joints)
            if terminated or truncated:
                obs, _ = env.reset()
        env.close()
        out.update({f"{task}/{k}": np.array(v) for k, v in rows.items()})
    return out


def test_env_episodes_reproduce_the_reference_bit_for_bit():
    computed = _episodes()
    if os.environ.get("SE_ROBOT_REGENERATE_GOLDEN") == "1":
        np.savez_compressed(GOLDEN_ENV, **computed)
    with np.load(GOLDEN_ENV, allow_pickle=False) as npz:
        golden = {k: npz[k] for k in npz.files}
    assert sorted(computed) == sorted(golden)
    for key, value in golden.items():
        np.testing.assert_array_equal(computed[key], value, err_msg=key)
    clipped = np.concatenate([golden[f"{t}/clipped"] for t in ("reach", "push", "lift")])
    assert clipped.any() and not clipped.all()  # the filter both acted and let commands through
