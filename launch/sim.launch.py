"""The MuJoCo twin alone, as the robot (ros2 launch se_robot sim.launch.py task:=lift)."""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

CONFIG = os.path.join(get_package_share_directory("se_robot"), "config", "ros")


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("arm", default_value="so101", description="config/arms/<arm>.yaml"),
        DeclareLaunchArgument("task", default_value="reach", description="reach | push | lift"),
        DeclareLaunchArgument("image_size", default_value="84", description="rendered image side (px)"),
        Node(
            package="se_robot", executable="sim_node", name="sim_node", output="screen",
            parameters=[os.path.join(CONFIG, "sim.yaml"),
                        {"arm": LaunchConfiguration("arm"), "task": LaunchConfiguration("task"),
                         "image_width": LaunchConfiguration("image_size"),
                         "image_height": LaunchConfiguration("image_size")}],
        ),
    ])
