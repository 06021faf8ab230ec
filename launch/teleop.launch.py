"""Drive the arm (or the twin) by hand: ros2 launch se_robot teleop.launch.py device:=gamepad device_path:=/dev/input/event5"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

SHARE = get_package_share_directory("se_robot")
CONFIG = os.path.join(SHARE, "config", "ros")


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("arm", default_value="so101", description="config/arms/<arm>.yaml"),
        DeclareLaunchArgument("use_sim", default_value="false", description="the MuJoCo twin instead of hardware"),
        DeclareLaunchArgument("device", default_value="keyboard", description="keyboard | gamepad | spacemouse | leader"),
        DeclareLaunchArgument("device_path", default_value="", description="evdev node, serial port or tty"),
        DeclareLaunchArgument("port", default_value="/dev/ttyUSB0", description="servo bus serial port"),
        DeclareLaunchArgument("camera_source", default_value="0", description="OpenCV camera source"),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(os.path.join(SHARE, "launch", "robot.launch.py")),
            launch_arguments={"arm": LaunchConfiguration("arm"), "use_sim": LaunchConfiguration("use_sim"),
                              "port": LaunchConfiguration("port"),
                              "camera_source": LaunchConfiguration("camera_source")}.items(),
        ),
        Node(
            package="se_robot", executable="teleop_node", name="teleop_node", output="screen",
            parameters=[os.path.join(CONFIG, "teleop.yaml"),
                        {"device": LaunchConfiguration("device"),
                         "device_path": LaunchConfiguration("device_path"), "arm": LaunchConfiguration("arm")}],
        ),
    ])
