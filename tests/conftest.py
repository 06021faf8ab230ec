"""Shared test setup: headless MuJoCo rendering and a ROS domain of our own per test run."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
