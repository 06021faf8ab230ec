"""Shared test setup: headless MuJoCo rendering, a ROS domain of our own per test run, and one
torch thread."""

import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The networks in tests are tiny: a second OpenMP thread only adds barrier waits (ruinous on a
    loaded 2-core CI machine). Restored after each test, since some code under test sets it too."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="session")
def private_data_dir(tmp_path_factory):
    """Per-user data (arm calibrations) goes to a fresh directory, so no test reads or writes the
    developer's own ~/.local/share/se_robot: a test that drives the emulator hands its factory
    calibration over explicitly, as a user would."""
    os.environ["SE_ROBOT_DATA_DIR"] = str(tmp_path_factory.mktemp("se_robot_data"))
