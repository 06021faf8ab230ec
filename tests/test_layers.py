"""Keeps the layers: every import, lazy ones included, points down the declared order.

The order is declared once, in ``LAYERS``: a module may import from its own layer and the layers
before it, never from a later one. A new top-level module or subpackage has to be placed here
before its tests pass, so the order stays a decision rather than an accident. Robots above the env
layer (ROS) reach ``make_env`` through the ``se_robot.robots`` entry points, not an import.
"""

import ast
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "se_robot"

#: Bottom to top. Names are top-level modules or subpackages of se_robot.
LAYERS: list[set[str]] = [
    {"__init__", "config", "arm", "tasks", "logger", "checkpoint", "ros_params"},
    {"safety", "estop"},
    {"robot"},
    {"homing"},
    {"sim", "agents", "data"},
    {"hardware"},
    {"teleop"},
    {"envs"},
    {"train_config"},
    {"train_faults", "train_async"},
    {"train", "pretrain"},
    {"nodes"},
    {"commands", "cli"},
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at top level or inside functions (absolute and relative)."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(PKG.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            # ``from se_robot import envs`` imports the subpackage envs
            if module == "se_robot":
                names.update(f"se_robot.{a.name}" for a in node.names)
    return names


def modules(sub: str = "") -> list[Path]:
    return sorted((PKG / sub).rglob("*.py"))


def part_of(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def test_the_scan_sees_the_package_and_lazy_imports():
    assert len(modules()) > 20
    assert "numpy" in imports_of(PKG / "safety.py")
    lazy = {m for path in modules("envs") for m in imports_of(path)}
    assert any(m.startswith("se_robot.sim") for m in lazy)


def test_every_part_of_the_package_has_a_layer():
    parts = {part_of(p) for p in modules()}
    assert parts <= set(LAYER_OF), f"place these in LAYERS: {sorted(parts - set(LAYER_OF))}"


def test_imports_point_down_the_layers():
    offenders = []
    for path in modules():
        mine = LAYER_OF[part_of(path)]
        for name in imports_of(path):
            if not name.startswith("se_robot."):
                continue
            target = name.split(".")[1]
            if target in LAYER_OF and LAYER_OF[target] > mine:
                offenders.append(f"{path.relative_to(PKG)} imports {name} "
                                 f"(layer {LAYER_OF[target]} above its own {mine})")
    assert not offenders, "\n".join(offenders)


def test_rclpy_only_in_nodes():
    offenders = []
    for path in modules():
        if part_of(path) == "nodes":
            continue
        bad = {n for n in imports_of(path) if n.split(".")[0] in ("rclpy", "launch", "launch_ros")
               or n.split(".")[0].endswith("_msgs") or n.split(".")[0].endswith("_srvs") or ".msg" in n}
        if bad:
            offenders.append(f"{path.relative_to(PKG)}: {sorted(bad)}")
    assert not offenders, offenders


def test_agents_need_no_simulator_bus_or_gym_internals():
    offenders = []
    for path in modules("agents"):
        bad = {n for n in imports_of(path) if n.split(".")[0] in ("mujoco", "serial")
               or n.startswith("gymnasium.envs")}
        if bad:
            offenders.append(f"{path.relative_to(PKG)}: {sorted(bad)}")
    assert not offenders, offenders


def test_safety_is_pure():
    allowed_roots = {"numpy", "se_robot", "__future__", "dataclasses", "enum", "threading", "time",
                     "typing", "collections", "math", "collections.abc"}
    for module in ("safety.py", "estop.py"):
        roots = {n.split(".")[0] for n in imports_of(PKG / module)}
        assert roots <= allowed_roots, (module, roots - allowed_roots)


def test_a_violation_is_caught(tmp_path, monkeypatch):
    """The check itself can fail: a lazy upward import inside a function is reported."""
    fake = tmp_path / "se_robot"
    (fake / "sim").mkdir(parents=True)
    (fake / "sim" / "bad.py").write_text("def f():\n    from se_robot.envs import make_env\n")
    monkeypatch.setattr(sys.modules[__name__], "PKG", fake)
    try:
        test_imports_point_down_the_layers()
    except AssertionError as e:
        assert "sim/bad.py imports se_robot.envs" in str(e)
    else:
        raise AssertionError("an upward lazy import was not caught")
