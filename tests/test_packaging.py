"""The package installs with pip as well as colcon: data files under share/se_robot, the ament
marker, package.xml dependencies, and a console script for every ROS node."""

from __future__ import annotations

import ast
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out), str(ROOT)], check=True, cwd=out)
    (path,) = out.glob("se_robot-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_carries_share_files_and_the_ament_marker(wheel):
    names = set(wheel.namelist())
    data = "se_robot-0.1.0.data/data/"
    for rel in ["share/se_robot/package.xml", "share/se_robot/sim/scene.xml", "share/se_robot/sim/so101.xml",
                "share/se_robot/config/arms/so101.yaml", "share/se_robot/config/tasks/push.yaml",
                "share/se_robot/config/recipes/reach_mbpo_quick.yaml",
                "share/se_robot/launch/robot.launch.py", "share/ament_index/resource_index/packages/se_robot"]:
        assert data + rel in names, rel
    # Research benchmarks and test support run from a source checkout; they are not the product.
    assert not [n for n in names if n.startswith(("benchmarks/", "tests/"))]
    assert "se_robot/commands/doctor.py" in names
    entry = wheel.read("se_robot-0.1.0.dist-info/entry_points.txt").decode()
    for script in ["se-robot", "arm_node", "camera_node", "sim_node", "learner_node", "actor_node"]:
        assert f"{script} = " in entry


def test_installed_layout_is_found(tmp_path):
    """share_dir() finds <prefix>/share/se_robot when the package is not a source checkout."""
    from se_robot import config

    prefix = tmp_path / "prefix"
    (prefix / "share" / "se_robot" / "sim").mkdir(parents=True)
    (prefix / "share" / "se_robot" / "config").mkdir()
    code = ("import sys, se_robot.config as c; from pathlib import Path;"
            f"c.__file__ = {str(tmp_path / 'site' / 'se_robot' / 'config.py')!r};"
            f"sys.prefix = {str(prefix)!r}; print(c.share_dir())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(prefix / "share" / "se_robot")
    assert config.share_dir() == ROOT  # this checkout


def test_package_xml_declares_what_the_nodes_import():
    deps = {e.text for e in ET.parse(ROOT / "package.xml").getroot() if e.tag == "exec_depend"}
    used = set()
    for path in (ROOT / "se_robot" / "nodes").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                used.update(m.split(".")[0] for m in mods if m.split(".")[0] == "rclpy" or m.split(".")[0].endswith("_msgs") or m.split(".")[0].endswith("_srvs"))
    assert used, "the scan found no ROS imports"
    assert used <= deps, used - deps
    assert ET.parse(ROOT / "package.xml").getroot().get("format") == "3"
