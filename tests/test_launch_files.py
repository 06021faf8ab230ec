"""Launch files and parameter files checked statically. What each launch file's nodes receive, as
launch_ros would evaluate it, and the nodes themselves started are tests/test_ros_launch.py's.

Every key of config/ros/*.yaml must be a parameter that node declares (se_robot.ros_params.NODE_PARAMS).
"""

import ast
from pathlib import Path

import pytest
import yaml

from se_robot import ros_params

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))


def node_calls(path: Path) -> list[ast.Call]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Node"]


def kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def test_the_four_launch_files_exist():
    names = {p.name for p in LAUNCH_FILES}
    assert {"robot.launch.py", "sim.launch.py", "train.launch.py", "teleop.launch.py"} <= names


@pytest.mark.parametrize("path", sorted((ROOT / "config" / "ros").glob("*.yaml")), ids=lambda p: p.name)
def test_parameter_files_match_declarations(path):
    data = yaml.safe_load(path.read_text())
    assert ros_params.check_parameters_file(data, ros_params.NODE_PARAMS, path.name) == []


def test_use_sim_swaps_hardware_for_the_twin():
    calls = node_calls(ROOT / "launch" / "robot.launch.py")
    conditions = {ast.literal_eval(kw(c, "executable")): ast.unparse(kw(c, "condition")) for c in calls}
    assert "IfCondition(use_sim)" == conditions["sim_node"]
    assert conditions["arm_node"] == conditions["camera_node"] == "UnlessCondition(use_sim)"
