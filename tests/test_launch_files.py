"""Launch files checked statically: launch/launch_ros have no PyPI wheels, so we parse them.

Every ``Node(...)`` must name a console script of this package (setup.py's entry points), every
parameters file it loads must exist under config/ros/, and every key there (and in inline
parameter dicts) must be a parameter that node declares (se_robot.ros_params.NODE_PARAMS).
"""

import ast
from pathlib import Path

import pytest
import yaml

from se_robot import ros_params

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))


def console_scripts() -> set[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "ROS_NODES" for t in node.targets):
            return set(ast.literal_eval(node.value))
    raise AssertionError("setup.py has no ROS_NODES mapping")


def node_calls(path: Path) -> list[ast.Call]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Node"]


def kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def yaml_files_in(expr: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(expr) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and n.value.endswith(".yaml")]


def test_the_four_launch_files_exist():
    names = {p.name for p in LAUNCH_FILES}
    assert {"robot.launch.py", "sim.launch.py", "train.launch.py", "teleop.launch.py"} <= names


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_nodes_scripts_and_parameters(path):
    scripts = console_scripts()
    calls = node_calls(path)
    assert calls, f"{path.name} starts no Node"
    for call in calls:
        exe = kw(call, "executable")
        assert isinstance(exe, ast.Constant), f"{path.name}: executable must be a literal"
        assert exe.value in scripts, f"{path.name}: {exe.value} is not a console script ({sorted(scripts)})"
        assert ast.literal_eval(kw(call, "package")) == "se_robot"
        name = ast.literal_eval(kw(call, "name"))
        classes = ros_params.NODE_PARAMS[exe.value]
        params = kw(call, "parameters")
        assert params is not None, f"{path.name}: {exe.value} has no parameters"
        files = yaml_files_in(params)
        assert files, f"{path.name}: {exe.value} loads no config/ros/*.yaml"
        for f in files:
            yaml_path = ROOT / "config" / "ros" / f
            assert yaml_path.is_file(), f"{path.name}: parameters file {yaml_path} does not exist"
            data = yaml.safe_load(yaml_path.read_text())
            assert name in data, f"{yaml_path.name} has no block for node {name}"
        for d in (n for n in ast.walk(params) if isinstance(n, ast.Dict)):
            for key in d.keys:
                assert ros_params.owner_of(classes, key.value), \
                    f"{path.name}: {exe.value} does not declare parameter {key.value!r}"


@pytest.mark.parametrize("path", sorted((ROOT / "config" / "ros").glob("*.yaml")), ids=lambda p: p.name)
def test_parameter_files_match_declarations(path):
    data = yaml.safe_load(path.read_text())
    assert ros_params.check_parameters_file(data, ros_params.NODE_PARAMS, path.name) == []


def test_use_sim_swaps_hardware_for_the_twin():
    calls = node_calls(ROOT / "launch" / "robot.launch.py")
    conditions = {ast.literal_eval(kw(c, "executable")): ast.unparse(kw(c, "condition")) for c in calls}
    assert "IfCondition(use_sim)" == conditions["sim_node"]
    assert conditions["arm_node"] == conditions["camera_node"] == "UnlessCondition(use_sim)"
