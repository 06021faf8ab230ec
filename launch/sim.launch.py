"""The MuJoCo twin alone, as the robot (ros2 launch se_robot sim.launch.py task:=lift).

sim_node configures and activates itself when ``autostart`` is true; with ``autostart:=false``
run ``ros2 lifecycle set /sim_node configure`` then ``activate``. String parameters are wrapped in
``ParameterValue(..., value_type=str)`` (see robot.launch.py).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

CONFIG = os.path.join(get_package_share_directory("se_robot"), "config", "ros")


def generate_launch_description():
    image_size = ParameterValue(LaunchConfiguration("image_size"), value_type=int)
    return LaunchDescription([
        DeclareLaunchArgument("arm", default_value="so101", description="config/arms/<arm>.yaml"),
        DeclareLaunchArgument("task", default_value="reach", description="reach | push | lift"),
        DeclareLaunchArgument("image_size", default_value="84", description="rendered image side (px)"),
        DeclareLaunchArgument("autostart", default_value="true", description="configure and activate at start"),
        Node(
            package="se_robot", executable="sim_node", name="sim_node", output="screen",
            parameters=[os.path.join(CONFIG, "sim.yaml"),
                        {"arm": ParameterValue(LaunchConfiguration("arm"), value_type=str),
                         "task": ParameterValue(LaunchConfiguration("task"), value_type=str),
                         "image_width": image_size, "image_height": image_size,
                         "autostart": ParameterValue(LaunchConfiguration("autostart"), value_type=bool)}],
        ),
    ])
