"""Import a calibration file written by LeRobot for an SO-100/SO-101 arm (Feetech STS3215 servos).

Most SO-101 owners calibrated their arm with LeRobot (``lerobot-calibrate``), which stores one JSON
file per arm id under ``~/.cache/huggingface/lerobot/calibration/robots/<robot type>/<id>.json``
(teleoperators under ``.../teleoperators/...``)::

    {"shoulder_pan": {"id": 1, "drive_mode": 0, "homing_offset": -1470, "range_min": 758, "range_max": 3292},
     ...}

What LeRobot did with those numbers, and how each becomes se_robot's ``JointCalibration``:

``homing_offset``
    LeRobot writes it into each servo's ``Homing_Offset`` register (EEPROM), and the servo itself
    subtracts it: ``Present_Position = actual position - Homing_Offset``. se_robot reads
    ``Present_Position``, so it sees ticks with the offset already applied and needs no offset of
    its own for it. The import therefore takes this number as a fact about the servos, not as a
    term of the tick-to-radian formula; ``se-robot calibrate --from-lerobot FILE --port PORT``
    reads the registers back and refuses if they hold something else (a servo reset or swapped).
``range_min``, ``range_max``
    The extremes recorded while the joints were moved by hand, in those homed ticks; they become
    ``min_ticks`` and ``max_ticks`` unchanged (the goal clamp; wrist_roll's 0..4095 is a full turn).
``drive_mode``
    1 inverts the joint (LeRobot negates its -100..100 reading and mirrors its 0..100 %):
    ``direction = -1``, else ``+1``. (LeRobot's degrees mode ignores it; its SO-100/101 files hold 0.)
zero (``homing_offset_ticks``)
    se_robot's 0 rad is put where LeRobot reads 0: for the body joints the middle of the recorded
    range, ``round((range_min + range_max) / 2)`` (LeRobot's ``use_degrees`` mode: degrees =
    ``(ticks - mid) * 360 / 4095``); for the gripper the end LeRobot reads as 0 % (``range_min``,
    or ``range_max`` with drive mode 1), the closed jaw, which is se_robot's gripper 0 rad. A joint
    then reads the same angle in both stacks, to half a tick and LeRobot's 4095-versus-4096 ticks
    per turn (0.025 %).

se_robot's SO-101 description uses LeRobot's motor names and ids (shoulder_pan 1 .. gripper 6), so
motors map to joints by name; a file with other names or ids is refused, naming them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from se_robot.arm import ArmDescription
from se_robot.config import ConfigError
from se_robot.hardware.calibration import ArmCalibration, JointCalibration
from se_robot.hardware.registers import get_model

#: the keys of one motor in LeRobot's file (its ``MotorCalibration`` dataclass)
MOTOR_KEYS = ("id", "drive_mode", "homing_offset", "range_min", "range_max")


@dataclass(frozen=True)
class LeRobotMotorCalibration:
    """One motor's entry of a LeRobot calibration file, as LeRobot's ``MotorCalibration`` holds it."""

    id: int
    drive_mode: int
    homing_offset: int
    range_min: int
    range_max: int


def read_lerobot_calibration(path: str | Path) -> dict[str, LeRobotMotorCalibration]:
    """Parse a LeRobot calibration JSON; anything not shaped like LeRobot's raises ConfigError."""
    path = Path(path)
    try:
        data: Any = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(str(path), "<file>", "does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(str(path), "<file>", f"not a LeRobot calibration (invalid JSON: {e})") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(str(path), "<root>", "expected an object of motors, e.g. {\"shoulder_pan\": {\"id\": 1, ...}}")
    motors = {}
    for name, entry in data.items():
        if not isinstance(entry, dict):
            raise ConfigError(str(path), name, f"expected an object with {', '.join(MOTOR_KEYS)}")
        missing = [k for k in MOTOR_KEYS if k not in entry]
        if missing:
            raise ConfigError(str(path), f"{name}.{missing[0]}", "missing (a LeRobot motor calibration holds "
                                                                f"{', '.join(MOTOR_KEYS)})")
        for key in MOTOR_KEYS:
            if not isinstance(entry[key], int) or isinstance(entry[key], bool):
                raise ConfigError(str(path), f"{name}.{key}", f"expected an integer, got {entry[key]!r}")
        if entry["drive_mode"] not in (0, 1):
            raise ConfigError(str(path), f"{name}.drive_mode", f"expected 0 or 1, got {entry['drive_mode']}")
        if not entry["range_min"] < entry["range_max"]:
            raise ConfigError(str(path), f"{name}.range_min",
                              f"{entry['range_min']} is not below range_max {entry['range_max']}")
        motors[name] = LeRobotMotorCalibration(**{k: entry[k] for k in MOTOR_KEYS})
    return motors


def calibration_from_lerobot(arm: ArmDescription, motors: dict[str, LeRobotMotorCalibration],
                             source: str = "<lerobot calibration>") -> ArmCalibration:
    """se_robot's calibration of ``arm`` from LeRobot's per-motor entries (the mapping above)."""
    if arm.bus.protocol != "feetech":
        raise ConfigError(source, "arm", f"{arm.name} uses {arm.bus.protocol} servos; LeRobot calibration "
                                         "import covers Feetech arms (SO-100/SO-101), whose servos hold the offset")
    missing = [n for n in arm.joint_names if n not in motors]
    extra = [n for n in motors if n not in arm.joint_names]
    if missing or extra:
        raise ConfigError(source, "<motors>", f"the {arm.name} arm has joints {arm.joint_names}; the file "
                                              f"lacks {missing} and has unknown motors {extra}")
    gripper = arm.gripper.joint if arm.gripper is not None else None
    joints = {}
    for j in arm.joints:
        m = motors[j.name]
        if m.id != j.servo_id:
            raise ConfigError(source, f"{j.name}.id", f"servo id {m.id}, but the {arm.name} arm has {j.servo_id}")
        if j.name == gripper:
            zero = m.range_max if m.drive_mode else m.range_min
        else:
            zero = math.floor((m.range_min + m.range_max) / 2 + 0.5)
        joints[j.name] = JointCalibration(m.id, zero, -1 if m.drive_mode else 1, m.range_min, m.range_max)
    model = get_model(arm.bus.model)
    return ArmCalibration(arm.name, model.name, model.ticks_per_rev, joints).check(arm, source)


def servo_offset_mismatches(motors: dict[str, LeRobotMotorCalibration], read_offset: Any) -> list[str]:
    """Motors whose ``Homing_Offset`` register (``read_offset(servo_id) -> int``) differs from the file.

    Such a servo does not subtract LeRobot's offset, so ticks read through the imported calibration
    would be off by that offset; running LeRobot once with the file (it writes the registers on
    connect) fixes it.
    """
    bad = []
    for name, m in motors.items():
        held = int(read_offset(m.id))
        if held != m.homing_offset:
            bad.append(f"{name} (servo {m.id}) holds Homing_Offset {held}, the file says {m.homing_offset}")
    return bad
