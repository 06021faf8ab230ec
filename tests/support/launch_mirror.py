"""Run this package's launch files without ``launch``/``launch_ros`` (no PyPI wheels): evaluate each
file's ``generate_launch_description()`` and build every ``Node`` action's command line as
launch_ros does, so a test can start those very processes and probe them over DDS.

What is mirrored (read from ros2/launch and ros2/launch_ros, rolling; written here from scratch):
- launch arguments: a ``DeclareLaunchArgument`` default applies only when the argument is not set;
  an ``IncludeLaunchDescription`` sets its ``launch_arguments`` before the included file runs (and
  here each must be declared there, which catches a misspelt name);
- conditions: ``IfCondition``/``UnlessCondition`` take only ``true``/``false``/``1``/``0`` (any case,
  stripped), anything else is an error; ``LaunchConfigurationEquals``/``NotEquals`` compare text;
- the command line: ``[*prefix, <prefix>/lib/<package>/<executable>, --ros-args, -r __node:=NAME,
  (-r __ns:=NS), --params-file FILE..., (-r FROM:=TO)...]``, ``prefix`` split like a shell would;
- parameters: a file path is passed as is; a dict is written to a temporary YAML file under
  ``/**: ros__parameters:`` (the node's full name when a namespace is given), each substituted
  value typed by YAML rules (``'0'`` becomes the integer 0, ``''`` the empty string), unless it is
  a ``ParameterValue`` with a ``value_type``: ``str`` keeps the text, ``int``/``float`` convert it,
  ``bool`` takes YAML's booleans and ``1``/``0``.

Not mirrored: events, respawn, ``OpaqueFunction``, frontends, composable nodes: a launch file that
uses a name this module does not define fails to import here, so nothing passes by being skipped.
"""

from __future__ import annotations

import ast
import os
import runpy
import shlex
import sys
import tempfile
import types
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

PACKAGE = "se_robot"


# ---------------------------------------------------------------------------------------- the API
class LaunchConfiguration:
    def __init__(self, variable_name: str, default: Any = None):
        self.name, self.default = variable_name, default


class ParameterValue:
    def __init__(self, value: Any, *, value_type: type | None = None):
        self.value, self.value_type = value, value_type


class DeclareLaunchArgument:
    def __init__(self, name: str, *, default_value: Any = None, description: str = "", choices: Any = None):
        self.name, self.default_value, self.choices = name, default_value, choices


class PythonLaunchDescriptionSource:
    def __init__(self, launch_file_path: Any):
        self.path = launch_file_path


class IncludeLaunchDescription:
    def __init__(self, launch_description_source: PythonLaunchDescriptionSource, *,
                 launch_arguments: Any = None, condition: Any = None):
        self.source, self.condition = launch_description_source, condition
        self.arguments = list(launch_arguments or [])


class LaunchDescription:
    def __init__(self, initial_entities: list[Any] | None = None):
        self.entities = list(initial_entities or [])

    def add_action(self, action: Any) -> None:
        self.entities.append(action)


class IfCondition:
    def __init__(self, predicate_expression: Any):
        self.expression = predicate_expression

    def evaluate(self, context: "LaunchContext") -> bool:
        return context.truth(self.expression)


class UnlessCondition(IfCondition):
    def evaluate(self, context: "LaunchContext") -> bool:
        return not context.truth(self.expression)


class LaunchConfigurationEquals:
    def __init__(self, launch_configuration_name: str, expected_value: Any):
        self.name, self.expected = launch_configuration_name, expected_value

    def evaluate(self, context: "LaunchContext") -> bool:
        expected = None if self.expected is None else context.text(self.expected)
        return context.configurations.get(self.name) == expected


class LaunchConfigurationNotEquals(LaunchConfigurationEquals):
    def evaluate(self, context: "LaunchContext") -> bool:
        return not super().evaluate(context)


#: ExecuteProcess options the launch files may pass and launch accepts (any other is a TypeError).
_PROCESS_OPTIONS = {"output", "respawn", "respawn_delay", "emulate_tty", "prefix", "condition", "sigterm_timeout",
                    "sigkill_timeout", "additional_env", "cwd", "exec_name", "arguments", "ros_arguments"}


class Node:
    def __init__(self, *, executable: str, package: str | None = None, name: str | None = None,
                 namespace: str | None = None, parameters: list[Any] | None = None,
                 remappings: list[tuple[Any, Any]] | None = None, **options: Any):
        unknown = set(options) - _PROCESS_OPTIONS
        if unknown:
            raise TypeError(f"Node() got unexpected keyword arguments {sorted(unknown)}")
        self.executable, self.package, self.name, self.namespace = executable, package, name, namespace
        self.parameters, self.remappings, self.options = list(parameters or []), list(remappings or []), options


def _module(name: str, **attributes: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


def _stand_ins() -> dict[str, types.ModuleType]:
    modules = {
        "launch": _module("launch", LaunchDescription=LaunchDescription),
        "launch.actions": _module("launch.actions", DeclareLaunchArgument=DeclareLaunchArgument,
                                  IncludeLaunchDescription=IncludeLaunchDescription),
        "launch.conditions": _module("launch.conditions", IfCondition=IfCondition, UnlessCondition=UnlessCondition,
                                     LaunchConfigurationEquals=LaunchConfigurationEquals,
                                     LaunchConfigurationNotEquals=LaunchConfigurationNotEquals),
        "launch.substitutions": _module("launch.substitutions", LaunchConfiguration=LaunchConfiguration),
        "launch.launch_description_sources": _module("launch.launch_description_sources",
                                                     PythonLaunchDescriptionSource=PythonLaunchDescriptionSource),
        "launch_ros": _module("launch_ros"),
        "launch_ros.actions": _module("launch_ros.actions", Node=Node),
        "launch_ros.parameter_descriptions": _module("launch_ros.parameter_descriptions",
                                                     ParameterValue=ParameterValue),
    }
    for name, module in modules.items():
        if "." in name:
            parent, child = name.rsplit(".", 1)
            setattr(modules[parent], child, module)
    return modules


@contextmanager
def _launch_api() -> Iterator[None]:
    """The stand-in modules in sys.modules while a launch file is imported, the old ones after."""
    stand_ins = _stand_ins()
    saved = {name: sys.modules.get(name) for name in stand_ins}
    sys.modules.update(stand_ins)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


# ------------------------------------------------------------------------------------ evaluation
@dataclass
class NodeProcess:
    """One ``Node`` action as launch would start it."""

    executable: str
    name: str | None
    cmd: list[str]
    parameters: list[dict[str, Any]]   # what each --params-file holds, in order
    options: dict[str, Any]


@dataclass
class LaunchContext:
    configurations: dict[str, str] = field(default_factory=dict)
    param_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="launch_params_")))

    def text(self, value: Any) -> str:
        """A substitution (or a list of them) performed to text, as launch does."""
        if isinstance(value, str):
            return value
        if isinstance(value, LaunchConfiguration):
            if value.name in self.configurations:
                return self.configurations[value.name]
            if value.default is not None:
                return self.text(value.default)
            raise KeyError(f"launch configuration '{value.name}' does not exist")
        if isinstance(value, (list, tuple)):
            return "".join(self.text(v) for v in value)
        raise TypeError(f"not a substitution: {value!r}")

    def truth(self, expression: Any) -> bool:
        text = self.text(expression).strip().lower()
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
        raise ValueError(f"condition expression {text!r} is none of true, false, 1, 0")

    def parameter_value(self, name: str, value: Any) -> Any:
        """One dict entry as launch_ros evaluates it before writing the parameters file."""
        if isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, ParameterValue):
            return self._typed(name, self.text(value.value), value.value_type)
        return self._typed(name, self.text(value), None)

    @staticmethod
    def _typed(name: str, text: str, value_type: type | None) -> Any:
        if value_type is str:
            return text
        if value_type in (int, float):
            return value_type(text)
        if value_type is bool:
            text = {"1": "true", "0": "false"}.get(text, text)
        elif value_type is not None:
            raise ValueError(f"{name}: value_type {value_type} is not one launch_ros allows")
        loaded = yaml.safe_load(text) if text else ""
        allowed = (bool,) if value_type is bool else (bool, int, float, str)
        if not isinstance(loaded, allowed):
            raise TypeError(f"parameter {name}: {text!r} reads as {type(loaded).__name__}")
        return loaded


def _flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """launch_ros joins nested dict keys with dots."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


class LaunchMirror:
    """Evaluates launch files found under ``<install prefix>/share/se_robot/launch``."""

    def __init__(self, install_prefix: Path):
        self.prefix = Path(install_prefix)

    def executable(self, package: str, executable: str) -> str:
        path = self.prefix / "lib" / package / executable
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise FileNotFoundError(f"executable '{executable}' not found in package '{package}' ({path})")
        return str(path)

    def nodes(self, launch_file: str, arguments: dict[str, str] | None = None) -> list[NodeProcess]:
        """Every Node action that ``ros2 launch se_robot <launch_file> k:=v ...`` would start."""
        context = LaunchContext(dict(arguments or {}))
        path = self.prefix / "share" / PACKAGE / "launch" / launch_file
        out: list[NodeProcess] = []
        self._run_file(path, context, out, given=set(context.configurations))
        return out

    def _run_file(self, path: Path, context: LaunchContext, out: list[NodeProcess], given: set[str]) -> None:
        with _launch_api(), _ament_prefix(self.prefix):
            description = runpy.run_path(str(path))["generate_launch_description"]()
        declared = {e.name for e in description.entities if isinstance(e, DeclareLaunchArgument)}
        unknown = given - declared
        if unknown:
            raise ValueError(f"{path.name} declares no launch arguments {sorted(unknown)}")
        for entity in description.entities:
            self._run(entity, context, out)

    def _run(self, entity: Any, context: LaunchContext, out: list[NodeProcess]) -> None:
        condition = getattr(entity, "condition", None) or getattr(entity, "options", {}).get("condition")
        if condition is not None and not condition.evaluate(context):
            return
        if isinstance(entity, DeclareLaunchArgument):
            if entity.name not in context.configurations:
                if entity.default_value is None:
                    raise ValueError(f"launch argument '{entity.name}' has no default and was not given")
                context.configurations[entity.name] = context.text(entity.default_value)
        elif isinstance(entity, IncludeLaunchDescription):
            values = {context.text(k): context.text(v) for k, v in entity.arguments}
            context.configurations.update(values)
            self._run_file(Path(context.text(entity.source.path)), context, out, given=set(values))
        elif isinstance(entity, Node):
            out.append(self._node(entity, context))
        else:
            raise TypeError(f"the launch mirror does not know {type(entity).__name__}")

    def _node(self, node: Node, context: LaunchContext) -> NodeProcess:
        package = context.text(node.package)
        prefix = shlex.split(context.text(node.options["prefix"])) if "prefix" in node.options else []
        cmd = [*prefix, self.executable(package, context.text(node.executable))]
        cmd += [context.text(a) for a in node.options.get("arguments", [])]
        if node.options.get("ros_arguments"):
            cmd += ["--ros-args", *(context.text(a) for a in node.options["ros_arguments"])]
        cmd.append("--ros-args")
        name = None if node.name is None else context.text(node.name)
        if name is not None:
            cmd += ["-r", f"__node:={name}"]
        namespace = None
        if node.namespace is not None:
            namespace = "/" + context.text(node.namespace).strip("/")
            cmd += ["-r", f"__ns:={namespace}"]
        files: list[dict[str, Any]] = []
        for entry in node.parameters:
            if isinstance(entry, dict):
                values = {k: context.parameter_value(k, v) for k, v in _flatten(entry).items()}
                key = f"{namespace.rstrip('/')}/{name}" if namespace and name else "/**"
                content = {key: {"ros__parameters": values}}
                handle, file_path = tempfile.mkstemp(prefix="launch_params_", dir=context.param_dir)
                with os.fdopen(handle, "w") as f:
                    yaml.dump(content, f, default_flow_style=False)
            else:
                file_path = context.text(entry)
                with open(file_path) as f:
                    content = yaml.safe_load(f)
            files.append(content)
            cmd += ["--params-file", file_path]
        for source, target in node.remappings:
            cmd += ["-r", f"{context.text(source)}:={context.text(target)}"]
        return NodeProcess(context.text(node.executable), name, cmd, files, dict(node.options))


@contextmanager
def _ament_prefix(prefix: Path) -> Iterator[None]:
    """``get_package_share_directory`` finds the install prefix first while a file is evaluated."""
    before = os.environ.get("AMENT_PREFIX_PATH")
    os.environ["AMENT_PREFIX_PATH"] = os.pathsep.join([str(prefix)] + ([before] if before else []))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("AMENT_PREFIX_PATH", None)
        else:
            os.environ["AMENT_PREFIX_PATH"] = before


# --------------------------------------------------------------------------------- the install
def console_scripts(root: Path) -> dict[str, str]:
    """setup.py's ROS_NODES: console script name -> ``module:function``."""
    tree = ast.parse((root / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "ROS_NODES" for t in node.targets):
            return dict(ast.literal_eval(node.value))
    raise AssertionError("setup.py has no ROS_NODES mapping")


def install_prefix(root: Path, prefix: Path) -> Path:
    """The layout ``colcon build`` gives this package (setup.cfg puts scripts in lib/se_robot;
    setup.py's data_files put launch/, config/, sim/, package.xml and the ament marker under
    share/), with the share folders linked to the checkout and console-script wrappers that run
    this interpreter. Children get the checkout on PYTHONPATH (see :func:`process_env`)."""
    share = prefix / "share" / PACKAGE
    share.mkdir(parents=True, exist_ok=True)
    marker = prefix / "share" / "ament_index" / "resource_index" / "packages"
    marker.mkdir(parents=True, exist_ok=True)
    (marker / PACKAGE).write_text((root / "resource" / PACKAGE).read_text())
    for item in ("launch", "config", "sim", "package.xml"):
        if not (share / item).exists():
            (share / item).symlink_to(root / item)
    lib = prefix / "lib" / PACKAGE
    lib.mkdir(parents=True, exist_ok=True)
    for script, target in console_scripts(root).items():
        module, function = target.split(":")
        path = lib / script
        path.write_text(f"#!{sys.executable}\nimport sys\nfrom {module} import {function}\n"
                        f"sys.exit({function}())\n")
        path.chmod(0o755)
    return prefix


def process_env(base: dict[str, str], root: Path, prefix: Path) -> dict[str, str]:
    """The environment of a launched node: this checkout's code, the install prefix first."""
    env = dict(base)
    env["PYTHONPATH"] = os.pathsep.join([str(root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(
        [str(prefix)] + ([env["AMENT_PREFIX_PATH"]] if env.get("AMENT_PREFIX_PATH") else []))
    return env
