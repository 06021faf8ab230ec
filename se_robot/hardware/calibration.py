"""Servo ticks <-> joint radians, one entry per joint, stored per arm id in the user's data directory.

A servo knows only its encoder count. Which count is the arm's zero, which way is positive and
how far each joint can physically travel differ from one assembled arm to the next, so they are
measured on that arm by ``se-robot calibrate`` and written to

    <data dir>/calibration/<arm_id>.yaml     (data dir: $SE_ROBOT_DATA_DIR, else
                                              $XDG_DATA_HOME/se_robot, else ~/.local/share/se_robot)

never into the package (an installed package is shared by every arm on the machine). The arm id
is a name the user picks for one physical arm; it defaults to the arm description's name
(``so101``), which is enough with one arm of a kind; a leader arm's defaults to
``<arm name>_leader`` (``so101_leader``), so it never picks up its follower's calibration.
Drivers refuse to start without a calibration rather than guess one:

    rad = direction * (ticks - homing_offset_ticks) * 2*pi / ticks_per_rev

Goal ticks are clamped to ``[min_ticks, max_ticks]``, the range recorded by moving each joint by
hand, as the last line of defence after the safety filter. The emulator's factory calibration is a
fixture of its own, ``config/arms/<arm>_emulator_calibration.yaml``.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from se_robot.arm import ArmDescription
from se_robot.config import ConfigError, from_dict, option, read_yaml, share_dir, to_dict

DATA_DIR_ENV = "SE_ROBOT_DATA_DIR"
ARM_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class CalibrationError(RuntimeError):
    """No calibration for an arm, or one that does not fit the arm on the bus; the message says
    what to run."""


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

    def check_within_range(self, ticks: np.ndarray, names: list[str], fix: str = "",
                           slack_ticks: int | None = None) -> None:
        """Raise CalibrationError naming every joint whose present ``ticks`` lie outside its
        recorded range.

        A servo outside the range it was calibrated over means the calibration belongs to another
        arm, or a horn was remounted: radians read through it would be wrong, and the goal clamp
        would jerk the joint back into the range. ``slack_ticks`` (default: about one degree)
        lets a joint resting at the end of its range sit a little past it (backlash, noise).
        """
        slack = math.ceil(self.ticks_per_rev / 360) if slack_ticks is None else slack_ticks
        bad = []
        for name, t in zip(names, np.asarray(ticks).tolist()):
            j = self.joints[name]
            if not j.min_ticks - slack <= t <= j.max_ticks + slack:
                bad.append(f"joint {name} (servo {j.servo_id}) is at {int(t)} ticks, outside its "
                           f"calibrated range {j.min_ticks}..{j.max_ticks}")
        if bad:
            raise CalibrationError(f"the {self.arm} calibration does not fit this arm: " + "; ".join(bad)
                                   + ". Is this the arm it was made on? " + (fix or "Recalibrate it."))


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


def data_dir() -> Path:
    """se_robot's per-user data: ``$SE_ROBOT_DATA_DIR``, else ``$XDG_DATA_HOME/se_robot``, else
    ``~/.local/share/se_robot`` (the XDG base directory default)."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share") / "se_robot"


def default_arm_id(arm: ArmDescription) -> str:
    """The arm id used when none is given: the arm description's name (``so101``)."""
    return arm.name


def default_leader_arm_id(arm: ArmDescription) -> str:
    """The arm id of a leader arm when none is given: ``<arm name>_leader`` (``so101_leader``), so a
    leader beside its follower of the same kind never picks up the follower's calibration."""
    return f"{arm.name}_leader"


def calibration_file(arm_id: str) -> Path:
    """Where the calibration of the arm called ``arm_id`` lives: ``<data dir>/calibration/<arm_id>.yaml``."""
    if not ARM_ID_PATTERN.fullmatch(arm_id):
        raise ValueError(f"arm id {arm_id!r}: use letters, digits, '_', '-' and '.' (e.g. my_so101)")
    return data_dir() / "calibration" / f"{arm_id}.yaml"


def calibrate_command(arm: ArmDescription, arm_id: str, port: str | None = None) -> str:
    """The exact command that writes the calibration ``SerialArm`` looks for."""
    return f"se-robot calibrate --port {port or 'PORT'} --arm {arm.name} --arm-id {arm_id}"


def resolve_calibration(arm: ArmDescription, calibration: ArmCalibration | str | Path | None = None,
                        arm_id: str | None = None, port: str | None = None) -> ArmCalibration:
    """The calibration a driver uses: the one given (object or YAML path), else the one stored
    for ``arm_id`` (default: the arm's name). Never a made-up default: a real arm driven with
    another arm's calibration has its joint limits in the wrong place."""
    if isinstance(calibration, ArmCalibration):
        return calibration.check(arm)
    if calibration is not None and str(calibration):
        return load_calibration(calibration, arm)
    arm_id = arm_id or default_arm_id(arm)
    path = calibration_file(arm_id)
    if not path.exists():
        raise CalibrationError(
            f"no calibration for arm id {arm_id!r} ({path} does not exist). Calibrate this arm once with\n"
            f"    {calibrate_command(arm, arm_id, port)}\n"
            f"or pass the path of a calibration YAML explicitly.")
    return load_calibration(path, arm)


def inside_package(path: str | Path) -> bool:
    """Whether ``path`` lies in the installed package: its code, or its shipped ``config/`` and
    ``sim/`` (the whole share directory when installed). Calibrations never go there."""
    share = share_dir().resolve()
    package = Path(__file__).resolve().parents[1]
    dirs = [package, share / "config", share / "sim"] + ([share] if share != package.parent else [])
    p = Path(path).expanduser().resolve()
    return any(p == d or d in p.parents for d in dirs)


def load_calibration(path: str | Path, arm: ArmDescription | None = None) -> ArmCalibration:
    cal = from_dict(ArmCalibration, read_yaml(path), str(path))
    return cal.check(arm, str(path)) if arm is not None else cal


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
