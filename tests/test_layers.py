"""Keeps the layers: rclpy only in se_robot/nodes/, agents free of envs, hardware and ROS."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "se_robot"


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules(sub: str = "") -> list[Path]:
    return sorted((PKG / sub).rglob("*.py"))


def test_the_scan_sees_the_package():
    assert len(modules()) > 20
    assert "numpy" in imports_of(PKG / "safety.py")


def test_rclpy_only_in_nodes():
    offenders = []
    for path in modules():
        if "nodes" in path.relative_to(PKG).parts:
            continue
        bad = {n for n in imports_of(path) if n.split(".")[0] in ("rclpy", "launch", "launch_ros")
               or n.endswith("_msgs") or ".msg" in n or n.split(".")[0].endswith("_msgs")}
        if bad:
            offenders.append(f"{path.relative_to(PKG)}: {sorted(bad)}")
    assert not offenders, offenders


def test_agents_do_not_import_envs_hardware_or_ros():
    offenders = []
    for path in modules("agents"):
        bad = {n for n in imports_of(path)
               if n.startswith(("se_robot.envs", "se_robot.hardware", "se_robot.nodes", "se_robot.teleop",
                                "rclpy", "gymnasium.envs", "serial"))}
        if bad:
            offenders.append(f"{path.relative_to(PKG)}: {sorted(bad)}")
    assert not offenders, offenders


def test_safety_is_pure():
    allowed_roots = {"numpy", "se_robot", "__future__", "dataclasses", "enum", "threading", "time",
                     "typing", "collections", "math", "collections.abc"}
    roots = {n.split(".")[0] for n in imports_of(PKG / "safety.py")}
    assert roots <= allowed_roots, roots - allowed_roots
