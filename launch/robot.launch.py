"""The arm and its camera, or the MuJoCo twin in their place (use_sim:=true).

    ros2 launch se_robot robot.launch.py port:=/dev/ttyACM0 camera_source:=0
    ros2 launch se_robot robot.launch.py port:=/dev/ttyACM0 arm_id:=my_so101   # its stored calibration
    ros2 launch se_robot robot.launch.py use_sim:=true task:=push
    ros2 launch se_robot robot.launch.py autostart:=false   # then: ros2 lifecycle set /arm_node configure|activate

Both branches serve the same topics (joint_states, arm/joint_commands, arm/joint_trajectory,
camera/image_raw, ...), services (arm/estop, arm/reset, arm/home) and parameter names, so
everything above this file is the same for the real arm and the twin.

String parameters are wrapped in ``ParameterValue(..., value_type=str)``: launch_ros otherwise
reads a substituted value as YAML, so ``camera_source:=0`` would reach camera_node as an integer
and kill it. arm_node and sim_node configure and activate themselves when ``autostart`` is true
(their own parameter, so ``ros2 run`` behaves the same and no launch_ros version matters).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

CONFIG = os.path.join(get_package_share_directory("se_robot"), "config", "ros")


def text(name: str) -> ParameterValue:
    """The launch argument ``name`` as a string parameter, whatever it looks like."""
    return ParameterValue(LaunchConfiguration(name), value_type=str)


def generate_launch_description():
    use_sim = LaunchConfiguration("use_sim")
    autostart = ParameterValue(LaunchConfiguration("autostart"), value_type=bool)
    return LaunchDescription([
        DeclareLaunchArgument("arm", default_value="so101", description="config/arms/<arm>.yaml"),
        DeclareLaunchArgument("use_sim", default_value="false", description="the MuJoCo twin instead of hardware"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="configure and activate arm_node / sim_node at start (torque on)"),
        DeclareLaunchArgument("port", default_value="/dev/ttyUSB0", description="servo bus serial port"),
        DeclareLaunchArgument("arm_id", default_value="",
                              description="whose stored calibration to use (se-robot calibrate --arm-id); "
                                          "empty: the arm's name"),
        DeclareLaunchArgument("camera_source", default_value="0",
                              description="OpenCV camera: device index, /dev/videoN, file or URL"),
        DeclareLaunchArgument("task", default_value="reach", description="task scene of the twin"),
        Node(
            package="se_robot", executable="arm_node", name="arm_node", output="screen",
            condition=UnlessCondition(use_sim),
            parameters=[os.path.join(CONFIG, "robot.yaml"),
                        {"arm": text("arm"), "port": text("port"), "arm_id": text("arm_id"),
                         "autostart": autostart}],
        ),
        Node(
            package="se_robot", executable="camera_node", name="camera_node", output="screen",
            condition=UnlessCondition(use_sim),
            parameters=[os.path.join(CONFIG, "robot.yaml"), {"camera_source": text("camera_source")}],
        ),
        Node(
            package="se_robot", executable="sim_node", name="sim_node", output="screen",
            condition=IfCondition(use_sim),
            parameters=[os.path.join(CONFIG, "sim.yaml"),
                        {"arm": text("arm"), "task": text("task"), "autostart": autostart}],
        ),
    ])
