"""Installs se_robot with pip or colcon (ament_python): code, console scripts and share/ data."""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "se_robot"
ROOT = Path(__file__).parent


def share_files(folder: str) -> list[tuple[str, list[str]]]:
    """Every file below ``folder``, installed under share/se_robot/ with its relative path kept."""
    out: dict[str, list[str]] = {}
    for path in sorted((ROOT / folder).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            rel = path.relative_to(ROOT)
            out.setdefault(f"share/{PACKAGE}/{rel.parent}", []).append(str(rel))
    return sorted(out.items())


ROS_NODES = {
    "camera_node": "se_robot.nodes.camera_node:main",
    "arm_node": "se_robot.nodes.arm_node:main",
    "sim_node": "se_robot.nodes.sim_node:main",
    "learner_node": "se_robot.nodes.learner_node:main",
    "actor_node": "se_robot.nodes.actor_node:main",
    "teleop_node": "se_robot.nodes.teleop_node:main",
}

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["tests", "tests.*", "benchmarks", "benchmarks.*"]),  # run from a checkout
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *share_files("launch"),
        *share_files("config"),
        *share_files("sim"),
    ],
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.24",
        "torch>=2.1",
        "mujoco>=3.1",
        "gymnasium>=1.0",
        "opencv-python-headless>=4.8",
        "pyserial>=3.5",
        "pyyaml>=6.0",
        "imageio>=2.31",
        "imageio-ffmpeg>=0.4",
        "matplotlib>=3.7",
        "tensorboard>=2.14",
        "tqdm>=4.65",
        "rosbags>=0.10",
    ],
    extras_require={
        "ros": [
            "ros-kilted-rclpy[fastrtps]",
            "ros-kilted-std-msgs",
            "ros-kilted-sensor-msgs",
            "ros-kilted-geometry-msgs",
            "ros-kilted-std-srvs",
            "ros-kilted-trajectory-msgs",
            "ros-kilted-diagnostic-msgs",
            "ros-kilted-lifecycle-msgs",
        ],
        "test": [
            "pytest>=7",
            "pytest-timeout>=2.1",
            "hypothesis>=6.80",
            "feetech-servo-sdk>=1.0",
            "dynamixel-sdk>=3.7",
            "mcap>=1.1",
            "mcap-ros2-support>=0.5",
        ],
        "bench": ["stable-baselines3>=2.2"],
        # --display: the live view (pinned: the .rrd format and the viewer's protocol change between releases)
        "display": ["rerun-sdk==0.41.0"],
        # LeRobotDataset export/import with the lerobot package itself. lerobot 0.4.4 (the newest on
        # Python 3.11) pins torch<2.11, so it cannot share a venv with torch 2.13: scripts/install.sh
        # builds it a venv of its own (LEROBOT_VENV=.venv-lerobot); in a fresh venv this extra
        # resolves torch 2.10.
        "lerobot": ["lerobot==0.4.4"],
    },
    zip_safe=True,
    maintainer="se_robot developers",
    maintainer_email="se_robot@example.com",
    description="Sample-efficient reinforcement learning for real robot arms, with a MuJoCo twin",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "se-robot = se_robot.cli:main",
            *[f"{name} = {target}" for name, target in ROS_NODES.items()],
        ],
        # Robots make_env can run on by name, besides the built-in sim and hardware backends.
        "se_robot.robots": ["ros = se_robot.nodes.ros_robot:make_ros_robot"],
    },
)
