"""Builds the MuJoCo model of the arm from its MJCF geometry and its arm description.

The MJCF in ``sim/`` holds the geometry; joint and actuator ranges are overwritten here from
``config/arms/<arm>.yaml`` so that the twin, kinematics, driver and safety layer cannot disagree
about limits.
"""

from __future__ import annotations

import mujoco

from se_robot.arm import ArmDescription
from se_robot.config import ConfigError, sim_path

SCENE_FILE = "scene.xml"


def _apply_arm(spec: mujoco.MjSpec, arm: ArmDescription, source: str) -> None:
    joint_names = {j.name for j in spec.joints}
    actuator_names = {a.name for a in spec.actuators}
    for name in arm.joint_names:
        if name not in joint_names:
            raise ConfigError(source, f"joints.{name}", f"no joint of that name in the MJCF; it has {sorted(joint_names)}")
        if name not in actuator_names:
            raise ConfigError(source, f"joints.{name}", f"no actuator of that name in the MJCF; it has {sorted(actuator_names)}")
        lim = arm.joint_limits[name]
        if lim.has_position_limits:
            spec.joint(name).range = [lim.min_position, lim.max_position]
            spec.actuator(name).ctrlrange = [lim.min_position, lim.max_position]
        if lim.has_effort_limits and arm.gripper is not None and name != arm.gripper.joint:
            spec.actuator(name).forcerange = [-lim.max_effort, lim.max_effort]
    if arm.gripper is not None:
        effort = min(arm.gripper.max_effort, arm.joint_limits[arm.gripper.joint].max_effort
                     if arm.joint_limits[arm.gripper.joint].has_effort_limits else arm.gripper.max_effort)
        spec.actuator(arm.gripper.joint).forcerange = [-effort, effort]
    if not any(s.name == arm.ee_site for s in spec.sites):
        raise ConfigError(source, "ee_site", f"no site {arm.ee_site!r} in the MJCF")


def build_spec(arm: ArmDescription, scene: bool = True) -> mujoco.MjSpec:
    """The spec of the arm alone (``scene=False``, for kinematics) or in its task scene."""
    path = sim_path(SCENE_FILE if scene else arm.mjcf)
    try:
        spec = mujoco.MjSpec.from_file(str(path))
    except Exception as e:  # mujoco raises ValueError with its own parser message
        raise ConfigError(str(path), "<mjcf>", f"MuJoCo could not load it: {e}") from None
    _apply_arm(spec, arm, f"config/arms/{arm.name}.yaml")
    return spec


def build_model(arm: ArmDescription, scene: bool = True) -> mujoco.MjModel:
    return build_spec(arm, scene).compile()
