"""Servo ticks <-> joint radians, one entry per joint, stored as YAML beside the arm description.

A servo knows only its encoder count. Which count is the arm's zero, which way is positive and
how far each joint can physically travel differ from one assembled arm to the next, so they live
in ``config/arms/<arm>_calibration.yaml`` (written by ``se-robot calibrate``), not in code:

    rad = direction * (ticks - homing_offset_ticks) * 2*pi / ticks_per_rev

Goal ticks are clamped to ``[min_ticks, max_ticks]``, the range recorded by moving each joint by
hand, as the last line of defence after the safety filter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from se_robot.arm import ArmDescription
from se_robot.config import ConfigError, config_path, from_dict, option, read_yaml, to_dict


@dataclass(frozen=True)
class JointCalibration:
    servo_id: int = option(help="servo id on the bus", range=(0, 252))
    homing_offset_ticks: int = option(2048, help="servo ticks at joint position 0 rad")
    direction: int = option(1, help="+1 if servo ticks grow with the joint angle, -1 if not", choices=(1, -1))
    min_ticks: int = option(0, help="lowest tick the joint reaches without hitting anything", range=(-32767, 32767))
    max_ticks: int = option(4095, help="highest tick the joint reaches", range=(-32767, 32767))

    def __post_init__(self) -> None:
        if not self.min_ticks < self.max_ticks:
            raise ValueError(f"min_ticks {self.min_ticks} must be below max_ticks {self.max_ticks}")


@dataclass(frozen=True)
class ArmCalibration:
    arm: str = option(help="name of the arm description this calibration belongs to")
    model: str = option("sts3215", help="servo model (register table)")
    ticks_per_rev: int = option(4096, help="encoder ticks per full turn", range=(2, 1 << 20))
    joints: dict[str, JointCalibration] = option(default_factory=dict, help="per joint, by joint name")

    def check(self, arm: ArmDescription, source: str = "<calibration>") -> "ArmCalibration":
        """Raise ConfigError unless this covers exactly the joints and servo ids of ``arm``."""
        if self.arm != arm.name:
            raise ConfigError(source, "arm", f"calibration is for {self.arm!r}, not {arm.name!r}")
        missing = [n for n in arm.joint_names if n not in self.joints]
        extra = [n for n in self.joints if n not in arm.joint_names]
        if missing or extra:
            raise ConfigError(source, "joints", f"missing {missing}, unknown {extra}")
        for j in arm.joints:
            if self.joints[j.name].servo_id != j.servo_id:
                raise ConfigError(source, f"joints.{j.name}.servo_id",
                                  f"{self.joints[j.name].servo_id} but the arm says {j.servo_id}")
        return self

    def _vectors(self, names: list[str]) -> tuple[np.ndarray, ...]:
        js = [self.joints[n] for n in names]
        return (np.array([j.homing_offset_ticks for j in js], dtype=np.float64),
                np.array([j.direction for j in js], dtype=np.float64),
                np.array([j.min_ticks for j in js], dtype=np.float64),
                np.array([j.max_ticks for j in js], dtype=np.float64))

    @property
    def rad_per_tick(self) -> float:
        return 2 * math.pi / self.ticks_per_rev

    def ticks_to_rad(self, ticks: np.ndarray, names: list[str]) -> np.ndarray:
        offset, direction, _, _ = self._vectors(names)
        return direction * (np.asarray(ticks, dtype=np.float64) - offset) * self.rad_per_tick

    def rad_to_ticks(self, q_rad: np.ndarray, names: list[str], clamp: bool = True,
                     toward_rad: np.ndarray | None = None) -> np.ndarray:
        """Integer goal ticks, clamped to each joint's recorded range.

        With ``toward_rad`` (the present position) ticks round towards it rather than to the
        nearest tick, so quantisation never makes a step longer than the safety filter allowed.
        """
        offset, direction, lo, hi = self._vectors(names)
        exact = offset + direction * np.asarray(q_rad, dtype=np.float64) / self.rad_per_tick
        if toward_rad is None:
            ticks = np.rint(exact)
        else:
            ref = offset + direction * np.asarray(toward_rad, dtype=np.float64) / self.rad_per_tick
            ticks = np.where(exact > ref, np.floor(exact + 1e-9), np.ceil(exact - 1e-9))
        if clamp:
            ticks = np.clip(ticks, lo, hi)
        return ticks.astype(np.int64)

    def velocity_to_rad_s(self, counts: np.ndarray, names: list[str], unit_rad_s: float) -> np.ndarray:
        _, direction, _, _ = self._vectors(names)
        return direction * np.asarray(counts, dtype=np.float64) * unit_rad_s

    def direction_of(self, names: list[str]) -> np.ndarray:
        return self._vectors(names)[1]


def default_calibration(arm: ArmDescription, model: str | None = None, margin_rad: float = 0.1,
                        ticks_per_rev: int = 4096) -> ArmCalibration:
    """Zero at mid-range (2048 of 4096), positive direction, range = joint limits plus a margin:
    what a freshly assembled arm with centred servo horns gives."""
    centre = ticks_per_rev // 2
    joints = {}
    for j in arm.joints:
        lim = arm.joint_limits[j.name]
        lo = int(math.floor(centre + (lim.min_position - margin_rad) * ticks_per_rev / (2 * math.pi)))
        hi = int(math.ceil(centre + (lim.max_position + margin_rad) * ticks_per_rev / (2 * math.pi)))
        joints[j.name] = JointCalibration(j.servo_id, centre, 1, max(0, lo), min(ticks_per_rev - 1, hi))
    return ArmCalibration(arm.name, model or arm.bus.model, ticks_per_rev, joints)


def calibration_from_recording(arm: ArmDescription, home_ticks: dict[int, int], min_ticks: dict[int, int],
                               max_ticks: dict[int, int], directions: dict[int, int] | None = None,
                               model: str | None = None, ticks_per_rev: int = 4096) -> ArmCalibration:
    """Calibration from what a calibration run saw: ticks with the arm in its home pose (``arm.home``)
    and the extremes each servo reached while moved by hand."""
    joints = {}
    for j in arm.joints:
        sid = j.servo_id
        direction = (directions or {}).get(sid, 1)
        offset = int(round(home_ticks[sid] - direction * j.home * ticks_per_rev / (2 * math.pi)))
        lo, hi = int(min_ticks[sid]), int(max_ticks[sid])
        if hi <= lo:
            raise ValueError(f"joint {j.name} (servo {sid}) did not move during calibration: "
                             f"range {lo}..{hi}; move every joint through its range")
        joints[j.name] = JointCalibration(sid, offset, direction, lo, hi)
    return ArmCalibration(arm.name, model or arm.bus.model, ticks_per_rev, joints)


def calibration_path(arm: ArmDescription | str) -> Path:
    """Where the calibration of an arm lives by default: beside its description."""
    name = arm.name if isinstance(arm, ArmDescription) else arm
    return config_path("arms", f"{name}_calibration.yaml")


def load_calibration(path: str | Path, arm: ArmDescription | None = None) -> ArmCalibration:
    cal = from_dict(ArmCalibration, read_yaml(path), str(path))
    return cal.check(arm, str(path)) if arm is not None else cal


def load_or_default(arm: ArmDescription, path: str | Path | None = None) -> ArmCalibration:
    """The calibration at ``path`` (or beside the arm); the default one only if none exists."""
    p = Path(path) if path is not None else calibration_path(arm)
    if path is not None or p.exists():
        return load_calibration(p, arm)
    return default_calibration(arm)


def save_calibration(cal: ArmCalibration, path: str | Path) -> Path:
    """Write YAML (via a temporary file and rename, so a crash never leaves half a calibration)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = to_dict(cal)
    data["joints"] = {name: dict(v) for name, v in data["joints"].items()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        f.write(f"# Servo calibration of the {cal.arm} arm: rad = direction * (ticks - homing_offset_ticks)"
                f" * 2*pi / {cal.ticks_per_rev}\n")
        yaml.safe_dump(data, f, sort_keys=False, default_flow_style=None, width=200)
    tmp.replace(path)
    return path
