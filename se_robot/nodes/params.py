"""Declare a node's parameters from config dataclasses and reject bad updates with a reason.

The descriptors (type, description, range, read-only) come from :mod:`se_robot.ros_params`, so
``ros2 param describe`` shows the same help and range as the YAML docs, and the set-parameters
callback runs the same validation as loading a YAML file: a rejected ``ros2 param set`` answers
with the file-style message (``SimParams: camera_rate_hz: 500.0 is out of range [0.0, 240.0]``).
"""

from __future__ import annotations

import sys
from typing import Any, Callable

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

from se_robot.config import ConfigError
from se_robot.ros_params import ParamSpec, config_from_params, parameter_specs

_TYPES = {
    "bool": Parameter.Type.BOOL, "int": Parameter.Type.INTEGER, "float": Parameter.Type.DOUBLE,
    "str": Parameter.Type.STRING, "bool_array": Parameter.Type.BOOL_ARRAY,
    "int_array": Parameter.Type.INTEGER_ARRAY, "float_array": Parameter.Type.DOUBLE_ARRAY,
    "str_array": Parameter.Type.STRING_ARRAY,
}


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    d = ParameterDescriptor(name=spec.name, type=_TYPES[spec.type].value, description=spec.description,
                            read_only=spec.read_only, additional_constraints=spec.additional_constraints)
    if spec.range is not None and spec.type in ("int", "int_array", "float", "float_array"):
        lo, hi = spec.range
        if spec.type.startswith("int") and lo is not None and hi is not None:
            d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
        elif spec.type.startswith("float") and lo is not None and hi is not None:
            d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    return d


class NodeParams:
    """Holds a node's current config objects (one per dataclass) and keeps them valid.

    ``on_change(changed_names)`` runs after an accepted update, e.g. to change a timer period.
    Parameters of a field marked ``read_only`` in its metadata cannot change after start.
    """

    def __init__(self, node: Node, classes: tuple[type, ...],
                 on_change: Callable[[set[str]], None] | None = None):
        self.node = node
        self.classes = classes
        self.on_change = on_change
        self._owner: dict[str, type] = {}
        self.values: dict[type, dict[str, Any]] = {}
        self.configs: dict[type, Any] = {}
        for cls in classes:
            specs = parameter_specs(cls)
            for spec in specs:
                if spec.name in self._owner:
                    raise TypeError(f"parameter {spec.name} declared by both {self._owner[spec.name].__name__} "
                                    f"and {cls.__name__}")
                self._owner[spec.name] = cls
            declared = node.declare_parameters("", [(s.name, s.default, descriptor(s)) for s in specs])
            self.values[cls] = {p.name: p.value for p in declared}
            try:
                self.configs[cls] = config_from_params(cls, self.values[cls], f"{node.get_name()} parameters")
            except ConfigError as e:
                raise SystemExit(f"{node.get_name()}: invalid parameter: {e}") from None
        node.add_on_set_parameters_callback(self._on_set)

    def get(self, cls: type) -> Any:
        return self.configs[cls]

    def _on_set(self, params: list[Parameter]) -> SetParametersResult:
        staged = {cls: dict(v) for cls, v in self.values.items()}
        for p in params:
            cls = self._owner.get(p.name)
            if cls is None:
                continue  # rclpy's own (use_sim_time, qos_overrides.*): rclpy checks those
            staged[cls][p.name] = p.value
        new_configs = {}
        for cls, values in staged.items():
            if values == self.values[cls]:
                continue
            try:
                new_configs[cls] = config_from_params(cls, values, cls.__name__)
            except ConfigError as e:
                return SetParametersResult(successful=False, reason=str(e))
        self.values = staged
        self.configs.update(new_configs)
        if self.on_change is not None:
            try:
                self.on_change({p.name for p in params})
            except Exception as e:  # noqa: BLE001 - a hook failure must reach the caller, not kill the node
                print(f"{self.node.get_name()}: parameter hook failed: {e}", file=sys.stderr)
        return SetParametersResult(successful=True, reason="")
