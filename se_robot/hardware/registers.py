"""Control tables of the servos se_robot drives, and how their values are encoded.

Addresses and sizes come from the vendors' manuals (Feetech STS3215, ROBOTIS X series). Both
store values little-endian. Signed values differ: Dynamixel uses two's complement, Feetech puts
the sign in one bit (bit 15 for positions and speeds, bit 10 for load, bit 11 for the homing
offset) and the magnitude in the rest, so a decoder that guesses wrong sees -1 as 32769.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Register:
    name: str
    address: int
    size: int  # bytes: 1, 2 or 4
    sign_bit: int | None = None  # Feetech sign-magnitude: index of the sign bit
    twos_complement: bool = False  # Dynamixel signed registers
    writable: bool = True

    def encode(self, value: int) -> bytes:
        """Integer -> little-endian bytes; raises ValueError naming the register if it does not fit."""
        value = int(value)
        if self.sign_bit is not None:
            magnitude = abs(value)
            if magnitude >= (1 << self.sign_bit):
                raise ValueError(f"{self.name}: {value} does not fit sign-magnitude with sign bit {self.sign_bit}")
            raw = magnitude | ((1 << self.sign_bit) if value < 0 else 0)
        elif self.twos_complement:
            lo, hi = -(1 << (8 * self.size - 1)), (1 << (8 * self.size - 1)) - 1
            if not lo <= value <= hi:
                raise ValueError(f"{self.name}: {value} is outside [{lo}, {hi}]")
            raw = value & ((1 << (8 * self.size)) - 1)
        else:
            if not 0 <= value < (1 << (8 * self.size)):
                raise ValueError(f"{self.name}: {value} is outside [0, {(1 << (8 * self.size)) - 1}]")
            raw = value
        return raw.to_bytes(self.size, "little")

    def decode(self, data: bytes) -> int:
        if len(data) != self.size:
            raise ValueError(f"{self.name}: expected {self.size} bytes, got {len(data)}")
        raw = int.from_bytes(data, "little")
        if self.sign_bit is not None:
            magnitude = raw & ((1 << self.sign_bit) - 1)
            return -magnitude if raw & (1 << self.sign_bit) else magnitude
        if self.twos_complement and raw >= (1 << (8 * self.size - 1)):
            return raw - (1 << (8 * self.size))
        return raw


@dataclass(frozen=True)
class ServoModel:
    """One servo model: its control table and the unit conversions the arm layer needs."""

    name: str
    protocol: str
    model_number: int
    registers: dict[str, Register]
    ticks_per_rev: int = 4096
    velocity_unit_rad_s: float = 2 * math.pi / 4096  # one count of the velocity registers
    effort_unit_nm: float = 0.0029  # one count of the load/current register, approximately
    effort_register: str = "Present_Load"
    # Contiguous block read in every control tick: position, velocity and load/current.
    state_block: tuple[str, ...] = field(default=())
    defaults: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Register:
        try:
            return self.registers[name]
        except KeyError:
            raise KeyError(f"{self.name} has no register {name!r}; known: {sorted(self.registers)}") from None

    @property
    def table_size(self) -> int:
        return max(r.address + r.size for r in self.registers.values())

    def block(self, names: tuple[str, ...]) -> tuple[int, int]:
        """Start address and length of registers that must be contiguous (one sync read)."""
        regs = sorted((self[n] for n in names), key=lambda r: r.address)
        for a, b in zip(regs, regs[1:]):
            if a.address + a.size != b.address:
                raise ValueError(f"{self.name}: registers {a.name} and {b.name} are not contiguous")
        return regs[0].address, regs[-1].address + regs[-1].size - regs[0].address

    def decode_block(self, names: tuple[str, ...], data: bytes) -> dict[str, int]:
        start, _ = self.block(names)
        return {n: self[n].decode(data[self[n].address - start:self[n].address - start + self[n].size])
                for n in names}


def _table(*regs: Register) -> dict[str, Register]:
    return {r.name: r for r in regs}


R = Register
STS3215 = ServoModel(
    name="sts3215", protocol="feetech", model_number=777,
    registers=_table(
        R("Firmware_Major_Version", 0, 1, writable=False), R("Firmware_Minor_Version", 1, 1, writable=False),
        R("Model_Number", 3, 2, writable=False), R("ID", 5, 1), R("Baud_Rate", 6, 1),
        R("Return_Delay_Time", 7, 1), R("Response_Status_Level", 8, 1),
        R("Min_Position_Limit", 9, 2), R("Max_Position_Limit", 11, 2),
        R("Max_Temperature_Limit", 13, 1), R("Max_Voltage_Limit", 14, 1), R("Min_Voltage_Limit", 15, 1),
        R("Max_Torque_Limit", 16, 2), R("Phase", 18, 1), R("Unloading_Condition", 19, 1),
        R("LED_Alarm_Condition", 20, 1), R("P_Coefficient", 21, 1), R("D_Coefficient", 22, 1),
        R("I_Coefficient", 23, 1), R("Minimum_Startup_Force", 24, 2), R("CW_Dead_Zone", 26, 1),
        R("CCW_Dead_Zone", 27, 1), R("Protection_Current", 28, 2), R("Angular_Resolution", 30, 1),
        R("Homing_Offset", 31, 2, sign_bit=11), R("Operating_Mode", 33, 1), R("Protective_Torque", 34, 1),
        R("Protection_Time", 35, 1), R("Overload_Torque", 36, 1),
        R("Torque_Enable", 40, 1), R("Acceleration", 41, 1), R("Goal_Position", 42, 2, sign_bit=15),
        R("Goal_Time", 44, 2), R("Goal_Velocity", 46, 2, sign_bit=15), R("Torque_Limit", 48, 2),
        R("Lock", 55, 1),
        R("Present_Position", 56, 2, sign_bit=15, writable=False),
        R("Present_Velocity", 58, 2, sign_bit=15, writable=False),
        R("Present_Load", 60, 2, sign_bit=10, writable=False),
        R("Present_Voltage", 62, 1, writable=False), R("Present_Temperature", 63, 1, writable=False),
        R("Status", 65, 1, writable=False), R("Moving", 66, 1, writable=False),
        R("Present_Current", 69, 2, sign_bit=15, writable=False),
    ),
    velocity_unit_rad_s=2 * math.pi / 4096,  # STS speed registers count steps per second
    effort_unit_nm=2.9 / 1000,  # load is 0.1 % of the ~2.9 N*m stall torque
    effort_register="Present_Load",
    state_block=("Present_Position", "Present_Velocity", "Present_Load"),
    defaults={"Firmware_Major_Version": 3, "Firmware_Minor_Version": 9, "Model_Number": 777,
              "Baud_Rate": 0, "Return_Delay_Time": 0, "Response_Status_Level": 1,
              "Min_Position_Limit": 0, "Max_Position_Limit": 4095, "Max_Temperature_Limit": 70,
              "Max_Voltage_Limit": 140, "Min_Voltage_Limit": 40, "Max_Torque_Limit": 1000,
              "P_Coefficient": 32, "I_Coefficient": 0, "D_Coefficient": 32, "Angular_Resolution": 1,
              "Torque_Limit": 1000, "Present_Voltage": 120, "Present_Temperature": 30,
              "Protection_Current": 500, "Overload_Torque": 80},
)


def _x_series(name: str, model_number: int, current_unit_a: float, torque_per_amp_nm: float) -> ServoModel:
    return ServoModel(
        name=name, protocol="dynamixel", model_number=model_number,
        registers=_table(
            R("Model_Number", 0, 2, writable=False), R("Model_Information", 2, 4, writable=False),
            R("Firmware_Version", 6, 1, writable=False), R("ID", 7, 1), R("Baud_Rate", 8, 1),
            R("Return_Delay_Time", 9, 1), R("Drive_Mode", 10, 1), R("Operating_Mode", 11, 1),
            R("Secondary_ID", 12, 1), R("Protocol_Type", 13, 1),
            R("Homing_Offset", 20, 4, twos_complement=True), R("Moving_Threshold", 24, 4),
            R("Temperature_Limit", 31, 1), R("Max_Voltage_Limit", 32, 2), R("Min_Voltage_Limit", 34, 2),
            R("PWM_Limit", 36, 2), R("Current_Limit", 38, 2), R("Velocity_Limit", 44, 4),
            R("Max_Position_Limit", 48, 4), R("Min_Position_Limit", 52, 4), R("Shutdown", 63, 1),
            R("Torque_Enable", 64, 1), R("LED", 65, 1), R("Status_Return_Level", 68, 1),
            R("Registered_Instruction", 69, 1, writable=False), R("Hardware_Error_Status", 70, 1, writable=False),
            R("Velocity_I_Gain", 76, 2), R("Velocity_P_Gain", 78, 2), R("Position_D_Gain", 80, 2),
            R("Position_I_Gain", 82, 2), R("Position_P_Gain", 84, 2),
            R("Goal_PWM", 100, 2, twos_complement=True), R("Goal_Current", 102, 2, twos_complement=True),
            R("Goal_Velocity", 104, 4, twos_complement=True), R("Profile_Acceleration", 108, 4),
            R("Profile_Velocity", 112, 4), R("Goal_Position", 116, 4, twos_complement=True),
            R("Realtime_Tick", 120, 2, writable=False), R("Moving", 122, 1, writable=False),
            R("Moving_Status", 123, 1, writable=False),
            R("Present_PWM", 124, 2, twos_complement=True, writable=False),
            R("Present_Current", 126, 2, twos_complement=True, writable=False),
            R("Present_Velocity", 128, 4, twos_complement=True, writable=False),
            R("Present_Position", 132, 4, twos_complement=True, writable=False),
            R("Velocity_Trajectory", 136, 4, writable=False), R("Position_Trajectory", 140, 4, writable=False),
            R("Present_Input_Voltage", 144, 2, writable=False), R("Present_Temperature", 146, 1, writable=False),
        ),
        velocity_unit_rad_s=0.229 * 2 * math.pi / 60,  # 0.229 rpm per count
        effort_unit_nm=current_unit_a * torque_per_amp_nm,
        effort_register="Present_Current",
        state_block=("Present_Current", "Present_Velocity", "Present_Position"),
        defaults={"Model_Number": model_number, "Firmware_Version": 52, "Baud_Rate": 3,
                  "Return_Delay_Time": 0, "Operating_Mode": 3, "Protocol_Type": 2, "Temperature_Limit": 70,
                  "Max_Voltage_Limit": 140, "Min_Voltage_Limit": 60, "PWM_Limit": 885, "Current_Limit": 1750,
                  "Velocity_Limit": 445, "Max_Position_Limit": 4095, "Min_Position_Limit": 0,
                  "Shutdown": 52, "Status_Return_Level": 2, "Position_P_Gain": 800,
                  "Present_Input_Voltage": 120, "Present_Temperature": 30},
    )


XL330 = _x_series("xl330", 1200, 0.001, 0.5)
XL430 = _x_series("xl430", 1060, 0.00269, 0.6)
X_SERIES = _x_series("x_series", 1020, 0.00269, 1.6)  # XM430-W350 figures

MODELS: dict[str, ServoModel] = {m.name: m for m in (STS3215, XL330, XL430, X_SERIES)}


def get_model(name: str) -> ServoModel:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown servo model {name!r}; known: {sorted(MODELS)}") from None
