"""The arm server's ``/diagnostics`` report: bus, loop, e-stop and safety, one status each.

Built from plain values (the robot's ``diagnostics()`` counts, the node's own counters, its tick
times), so the node only gathers them and publishes the message.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from se_robot.estop import EStop
from se_robot.nodes import conversions as conv


def loop_rate_hz(tick_times_s: Sequence[float]) -> float:
    """Mean rate of the control loop over the recorded tick times (0 until there are three)."""
    t = tick_times_s
    return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 2 and t[-1] > t[0] else 0.0


def arm_diagnostics(hardware_id: str, stamp_ns: int, robot_stats: Mapping[str, Any], estop: EStop, *,
                    counters: Mapping[str, int], last_error: str, rate_hz: float, want_rate_hz: float,
                    mode: str, active: bool) -> DiagnosticArray:
    """The four statuses: ``bus`` (WARN after an error), ``loop`` (WARN below 80% of the wanted
    rate), ``estop`` (ERROR while latched) and ``safety`` (the robot's non-bus counts)."""

    def status(name: str, level: bytes, message: str, values: dict[str, Any]) -> DiagnosticStatus:
        return DiagnosticStatus(level=level, name=f"{hardware_id}: {name}", message=message,
                                hardware_id=hardware_id,
                                values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])

    bus_errors = counters["bus_errors"] + int(robot_stats.get("bus/errors", 0))
    msg = DiagnosticArray()
    msg.header.stamp = conv.ns_to_time(stamp_ns)
    msg.status = [
        status("bus", DiagnosticStatus.OK if not last_error else DiagnosticStatus.WARN,
               last_error or "ok", {"errors": bus_errors, **{k: v for k, v in robot_stats.items()
                                                             if k.startswith("bus/")}}),
        status("loop", DiagnosticStatus.OK if rate_hz >= 0.8 * want_rate_hz else DiagnosticStatus.WARN,
               f"{rate_hz:.1f} Hz (want {want_rate_hz:.1f})", {"rate_hz": f"{rate_hz:.2f}", "mode": mode,
                                                              "active": active, **counters}),
        status("estop", DiagnosticStatus.ERROR if estop.latched else DiagnosticStatus.OK,
               estop.reason or "clear", {"latched": estop.latched, "latch_count": estop.latch_count}),
        status("safety", DiagnosticStatus.OK, "counts since start",
               {k: v for k, v in robot_stats.items() if not k.startswith("bus/")}),
    ]
    return msg
