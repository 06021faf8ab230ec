"""package.xml against setup.py and the README: every runtime dependency has a rosdep key that
rosdep resolves, and the README's rosdep step installs them.

The keys below are those of rosdistro's ``rosdep/python.yaml`` (checked 2026-11-27 on its master
branch): CI cannot reach rosdistro (PyPI only), so this table is the record, and a requirement
added to setup.py without a key here fails the test until someone looks its key up.
"""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: setup.py requirement -> rosdep key (a "-pip" key where Debian/Ubuntu package none).
ROSDEP_KEYS = {
    "numpy": "python3-numpy",
    "torch": "python3-torch",
    "mujoco": "python3-mujoco-pip",
    "gymnasium": "python3-gymnasium-pip",
    "opencv-python-headless": "python3-opencv",
    "pyserial": "python3-serial",
    "pyyaml": "python3-yaml",
    "imageio": "python3-imageio",
    "matplotlib": "python3-matplotlib",
    "tensorboard": "python3-tensorboard-pip",
    "tqdm": "python3-tqdm",
    "rosbags": "python3-rosbags-pip",
}
#: requirements rosdistro has no key for: the README's install step names them on a pip line.
NO_KEY = {"imageio-ffmpeg"}
#: ROS packages se_robot imports outside the *_msgs/*_srvs/rclpy families.
ROS_MODULES = {"rclpy", "rcl_interfaces", "ament_index_python", "launch", "launch_ros"}


def install_requires() -> set[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            return {re.split(r"[<>=!~\[ ]", r, maxsplit=1)[0].lower() for r in ast.literal_eval(node.value)}
    raise AssertionError("setup.py has no install_requires")


def exec_depends() -> set[str]:
    return {e.text for e in ET.parse(ROOT / "package.xml").getroot() if e.tag == "exec_depend"}


def test_every_runtime_requirement_has_its_rosdep_key_in_package_xml():
    requires = install_requires()
    unmapped = requires - set(ROSDEP_KEYS) - NO_KEY
    assert not unmapped, f"look up the rosdep key of {sorted(unmapped)} and add it to package.xml and ROSDEP_KEYS"
    deps = exec_depends()
    wanted = {ROSDEP_KEYS[r] for r in requires if r in ROSDEP_KEYS}
    assert wanted <= deps, f"package.xml lacks {sorted(wanted - deps)}"
    python_keys = {d for d in deps if d.startswith("python3-")}
    assert python_keys == wanted, f"package.xml declares keys setup.py does not need: {sorted(python_keys - wanted)}"


def test_ros_packages_the_code_imports_are_declared():
    used: set[str] = set()
    for path in [*(ROOT / "se_robot").rglob("*.py"), *(ROOT / "launch").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module or ""]
            else:
                continue
            for m in modules:
                top = m.split(".")[0]
                if top in ROS_MODULES or top.endswith(("_msgs", "_srvs")):
                    used.add(top)
    assert {"rclpy", "launch_ros", "sensor_msgs"} <= used, "the scan found too few ROS imports"
    assert used <= exec_depends(), f"package.xml lacks {sorted(used - exec_depends())}"


def test_readme_rosdep_step_installs_pip_keys_and_names_the_rest():
    readme = (ROOT / "README.md").read_text()
    steps = [line for line in readme.splitlines() if re.search(r"\brosdep install\s+-", line)]
    assert steps, "the README has no rosdep install step"
    pip_keys = {k for k in exec_depends() if k.endswith("-pip")}
    for line in steps:
        assert "--from-paths" in line and "--ignore-src" in line and " -y" in line, line
        if pip_keys:  # rosdep installs pip keys with pip, which Ubuntu 24.04 refuses without this
            assert "PIP_BREAK_SYSTEM_PACKAGES=1" in line, line
    pip_lines = [line for line in readme.splitlines() if line.strip().startswith("pip install")]
    for requirement in NO_KEY:
        assert any(requirement in line for line in pip_lines), f"the README's install step lacks {requirement}"
