"""Runs a script with the Python that has the lerobot package (its own venv; see se_robot.data.lerobot_io).

Without one (no ``.venv-lerobot``, no ``$SE_ROBOT_LEROBOT_PYTHON``) the calling test is skipped;
CI builds the venv and sets the variable, so there the tests run or fail.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from se_robot.data.lerobot_io import LeRobotMissing, lerobot_python


def _python() -> str:
    if importlib.util.find_spec("lerobot") is not None:
        return sys.executable
    try:
        return lerobot_python()
    except LeRobotMissing as e:
        pytest.skip(str(e))


def run_lerobot(script: str, *args: str) -> dict:
    """Run ``script`` with the lerobot interpreter; it prints one JSON object as its last line."""
    done = subprocess.run([_python(), "-c", script, *args], capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
