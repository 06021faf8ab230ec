"""Drive the arm (or the twin) by hand.

    ros2 launch se_robot teleop.launch.py use_sim:=true                  # keyboard, in an xterm of its own
    ros2 launch se_robot teleop.launch.py terminal:="gnome-terminal --wait --"
    ros2 launch se_robot teleop.launch.py device:=gamepad device_path:=/dev/input/event5

The keyboard teleop reads keys from a terminal, and a process started by ``ros2 launch`` has none
(its standard input is a pipe), so with ``device:=keyboard`` teleop_node runs behind the
``terminal`` prefix (default ``xterm -e``). Without a display (over SSH) launch the robot alone
and run ``ros2 run se_robot teleop_node`` in a second shell; teleop_node refuses to start, saying
so, when it is given a keyboard and no terminal.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.conditions import LaunchConfigurationEquals, LaunchConfigurationNotEquals
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

SHARE = get_package_share_directory("se_robot")
CONFIG = os.path.join(SHARE, "config", "ros")


def text(name: str) -> ParameterValue:
    """The launch argument ``name`` as a string parameter, whatever it looks like."""
    return ParameterValue(LaunchConfiguration(name), value_type=str)


def generate_launch_description():
    parameters = [os.path.join(CONFIG, "teleop.yaml"),
                  {"device": text("device"), "device_path": text("device_path"), "arm": text("arm")}]
    return LaunchDescription([
        DeclareLaunchArgument("arm", default_value="so101", description="config/arms/<arm>.yaml"),
        DeclareLaunchArgument("use_sim", default_value="false", description="the MuJoCo twin instead of hardware"),
        DeclareLaunchArgument("autostart", default_value="true", description="activate the arm (or twin) at start"),
        DeclareLaunchArgument("device", default_value="keyboard", description="keyboard | gamepad | spacemouse | leader"),
        DeclareLaunchArgument("device_path", default_value="", description="evdev node, serial port or tty"),
        DeclareLaunchArgument("terminal", default_value="xterm -e",
                              description="keyboard: the terminal teleop_node runs in (a command prefix)"),
        DeclareLaunchArgument("port", default_value="/dev/ttyUSB0", description="servo bus serial port"),
        DeclareLaunchArgument("camera_source", default_value="0", description="OpenCV camera source"),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(os.path.join(SHARE, "launch", "robot.launch.py")),
            launch_arguments={"arm": LaunchConfiguration("arm"), "use_sim": LaunchConfiguration("use_sim"),
                              "autostart": LaunchConfiguration("autostart"), "port": LaunchConfiguration("port"),
                              "camera_source": LaunchConfiguration("camera_source")}.items(),
        ),
        Node(
            package="se_robot", executable="teleop_node", name="teleop_node", output="screen",
            condition=LaunchConfigurationEquals("device", "keyboard"),
            prefix=LaunchConfiguration("terminal"), parameters=parameters,
        ),
        Node(
            package="se_robot", executable="teleop_node", name="teleop_node", output="screen",
            condition=LaunchConfigurationNotEquals("device", "keyboard"), parameters=parameters,
        ),
    ])
