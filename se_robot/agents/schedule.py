"""Schedules written as strings in a config: a constant, ``linear(...)`` or ``step_linear(...)``.

DrQ-v2's exploration std follows one (``DrQV2Config.stddev_schedule``); the string form keeps the
config a plain value and is validated when the config is built.
"""

from __future__ import annotations

import re
from typing import Callable

__all__ = ["parse_schedule"]

_NUM = r"\s*([-+0-9.eE]+)\s*"


def parse_schedule(spec: str | float) -> Callable[[int], float]:
    """``"0.2"``, ``"linear(init,final,duration)"`` or ``"step_linear(init,mid,d1,final,d2)"`` -> f(step)."""
    try:
        value = float(spec)
        return lambda step: value
    except ValueError:
        pass
    m = re.fullmatch(rf"linear\({_NUM},{_NUM},{_NUM}\)", str(spec).strip())
    if m:
        init, final, duration = map(float, m.groups())
        return lambda step: init + (final - init) * min(max(step / duration, 0.0), 1.0)
    m = re.fullmatch(rf"step_linear\({_NUM},{_NUM},{_NUM},{_NUM},{_NUM}\)", str(spec).strip())
    if m:
        init, mid, d1, final, d2 = map(float, m.groups())

        def step_linear(step: int) -> float:
            if step <= d1:
                return init + (mid - init) * min(max(step / d1, 0.0), 1.0)
            return mid + (final - mid) * min((step - d1) / d2, 1.0)
        return step_linear
    raise ValueError(f"stddev_schedule {spec!r}: expected a number, linear(init,final,steps) "
                     "or step_linear(init,mid,steps1,final,steps2)")
