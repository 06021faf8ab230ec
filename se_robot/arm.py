"""The arm description: one YAML file that sim, kinematics, hardware and safety all read.

Keeping joint names, servo ids and limits in one place is what lets a policy trained on the twin
drive the real arm: both sides agree on the order and meaning of every joint vector.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from se_robot.config import from_dict, named_config, option, read_yaml


@dataclass(frozen=True)
class JointSpec:
    name: str = option(help="joint name, identical in the MJCF and on the ROS JointState")
    servo_id: int = option(help="id of the servo on the bus", range=(0, 252))
    home: float = option(0.0, help="home position (rad) that reset drives to")


@dataclass(frozen=True)
class JointLimits:
    """ros2_control's ``joint_limits`` entry for one joint (rad, rad/s, N*m)."""

    has_position_limits: bool = option(True, help="enforce min/max_position")
    min_position: float = option(-3.14159, help="lower position limit (rad)")
    max_position: float = option(3.14159, help="upper position limit (rad)")
    has_velocity_limits: bool = option(False, help="enforce max_velocity")
    max_velocity: float = option(3.0, help="largest speed (rad/s)", range=(0.0, None))
    has_acceleration_limits: bool = option(False, help="enforce max_acceleration")
    max_acceleration: float = option(0.0, help="largest acceleration (rad/s^2)", range=(0.0, None))
    has_effort_limits: bool = option(False, help="enforce max_effort")
    max_effort: float = option(0.0, help="largest torque (N*m)", range=(0.0, None))

    def __post_init__(self) -> None:
        if self.has_position_limits and not self.min_position < self.max_position:
            raise ValueError(f"min_position {self.min_position} must be below max_position {self.max_position}")


@dataclass(frozen=True)
class GripperSpec:
    joint: str = option(help="name of the gripper joint")
    closed_position: float = option(0.0, help="joint position with the jaws closed (rad)")
    open_position: float = option(1.0, help="joint position fully open (rad)")
    max_effort: float = option(1.0, help="torque cap while gripping (N*m)", range=(0.0, None))


@dataclass(frozen=True)
class BusSpec:
    protocol: Literal["feetech", "dynamixel"] = option("feetech", help="servo wire protocol")
    model: str = option("sts3215", help="register table", choices=("sts3215", "xl330", "xl430", "x_series"))
    baudrate: int = option(1_000_000, help="serial baud rate", range=(9600, 4_500_000))


@dataclass(frozen=True)
class SafetySpec:
    """Limits applied to every command at the layer that talks to the arm (see safety.py)."""

    soft_margin_rad: float = option(0.05, help="targets stay this far inside position limits", range=(0.0, 0.5))
    max_joint_step_rad: float = option(0.15, help="largest joint target change per tick", range=(1e-4, 1.0))
    max_ee_step_m: float = option(0.03, help="largest gripper Cartesian move per tick", range=(1e-4, 0.2))
    workspace_min: tuple[float, float, float] = option((0.0, -0.3, 0.0), help="gripper box lower corner (m)")
    workspace_max: tuple[float, float, float] = option((0.4, 0.3, 0.4), help="gripper box upper corner (m)")
    floor_z: float = option(0.0, help="table top height in the base frame (m)")
    floor_clearance_m: float = option(0.005, help="every link stays this far above the floor", range=(0.0, 0.1))
    watchdog_timeout_s: float = option(0.25, help="hold when no command came for this long", range=(0.01, 10.0))
    watchdog_action: Literal["hold", "disable_torque"] = option("hold", help="what the watchdog does")
    disconnect_action: Literal["hold", "disable_torque"] = option(
        "hold", help="on disconnect: keep torque and hold the last pose, or let the arm go limp")
    estop_action: Literal["hold", "disable_torque"] = option(
        "hold", help="on an e-stop or fault latch: one hold at the present position, or torque off")

    def __post_init__(self) -> None:
        if any(lo >= hi for lo, hi in zip(self.workspace_min, self.workspace_max)):
            raise ValueError(f"workspace_min {self.workspace_min} must be below workspace_max {self.workspace_max}")


@dataclass(frozen=True)
class ArmDescription:
    name: str = option(help="arm name")
    bus: BusSpec = option(default_factory=BusSpec, help="servo bus")
    mjcf: str = option("so101.xml", help="MJCF file of the twin, relative to sim/")
    ee_site: str = option("gripper_site", help="MJCF site moved by ee_delta actions")
    joints: tuple[JointSpec, ...] = option(default_factory=tuple, help="joints in vector order")
    gripper: GripperSpec | None = option(None, help="gripper joint and its positions")
    joint_limits: dict[str, JointLimits] = option(default_factory=dict, help="ros2_control joint_limits")
    safety: SafetySpec = option(default_factory=SafetySpec, help="safety layer limits")

    def __post_init__(self) -> None:
        names = [j.name for j in self.joints]
        if not names:
            raise ValueError("joints: at least one joint is required")
        if len(set(names)) != len(names):
            raise ValueError(f"joints: duplicate joint names in {names}")
        ids = [j.servo_id for j in self.joints]
        if len(set(ids)) != len(ids):
            raise ValueError(f"joints: duplicate servo ids in {ids}")
        missing = [n for n in names if n not in self.joint_limits]
        if missing:
            raise ValueError(f"joint_limits: no entry for joint(s) {missing}")
        extra = [n for n in self.joint_limits if n not in names]
        if extra:
            raise ValueError(f"joint_limits: entries for unknown joint(s) {extra}")
        if self.gripper is not None and self.gripper.joint not in names:
            raise ValueError(f"gripper.joint {self.gripper.joint!r} is not one of the joints {names}")
        for j in self.joints:
            lim = self.joint_limits[j.name]
            if lim.has_position_limits and not lim.min_position <= j.home <= lim.max_position:
                raise ValueError(f"joints: home {j.home} of {j.name} is outside its limits")

    # Vectors in joint order, the form every numeric consumer wants.
    @property
    def joint_names(self) -> list[str]:
        return [j.name for j in self.joints]

    @property
    def servo_ids(self) -> list[int]:
        return [j.servo_id for j in self.joints]

    @property
    def n_joints(self) -> int:
        return len(self.joints)

    @property
    def home(self) -> np.ndarray:
        return np.array([j.home for j in self.joints], dtype=np.float64)

    @property
    def lower(self) -> np.ndarray:
        return np.array([self.joint_limits[n].min_position for n in self.joint_names], dtype=np.float64)

    @property
    def upper(self) -> np.ndarray:
        return np.array([self.joint_limits[n].max_position for n in self.joint_names], dtype=np.float64)

    @property
    def max_velocity(self) -> np.ndarray:
        return np.array([self.joint_limits[n].max_velocity if self.joint_limits[n].has_velocity_limits
                         else np.inf for n in self.joint_names], dtype=np.float64)

    @property
    def gripper_index(self) -> int | None:
        return None if self.gripper is None else self.joint_names.index(self.gripper.joint)

    def gripper_fraction(self, q: np.ndarray) -> float:
        """Gripper opening from a joint vector: 0 closed .. 1 open (0 for an arm without one)."""
        if self.gripper is None:
            return 0.0
        g = self.gripper
        return float((q[self.gripper_index] - g.closed_position) / (g.open_position - g.closed_position))

    @property
    def arm_indices(self) -> list[int]:
        """Indices of the joints that move the gripper (all but the gripper jaw)."""
        g = self.gripper_index
        return [i for i in range(self.n_joints) if i != g]


def load_arm(name_or_path: str | Path = "so101") -> ArmDescription:
    """Load an arm by name (``config/arms/NAME.yaml``) or by path to a YAML file."""
    path = named_config("arms", name_or_path, hide_suffix="_calibration")
    return from_dict(ArmDescription, read_yaml(path), str(path))
