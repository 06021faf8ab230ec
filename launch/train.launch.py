"""Training over ROS 2: the robot (or twin) plus the learner, and the actor in split mode.

    ros2 launch se_robot train.launch.py use_sim:=true algo:=sac task:=reach
    ros2 launch se_robot train.launch.py mode:=split    # actor here, learner_node on another machine

In split mode, start only the learner elsewhere (``ros2 run se_robot learner_node --ros-args
-p mode:=split``) with the same ROS_DOMAIN_ID; transitions and weights travel on
learner/transitions and learner/policy_weights (se_robot/nodes/learning.py). More actors: start
more actor_nodes (each its own node name); the learner assembles each actor's episodes apart.
Both nodes respawn: a node whose worker thread died exits 1 and is started again. String
parameters are wrapped in ``ParameterValue(..., value_type=str)`` (see robot.launch.py).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.conditions import IfCondition, LaunchConfigurationEquals
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
    task = text("task")
    algo = text("algo")
    return LaunchDescription([
        DeclareLaunchArgument("arm", default_value="so101", description="config/arms/<arm>.yaml"),
        DeclareLaunchArgument("use_sim", default_value="true", description="train on the twin"),
        DeclareLaunchArgument("autostart", default_value="true", description="activate the arm (or twin) at start"),
        DeclareLaunchArgument("task", default_value="reach", description="reach | push | lift"),
        DeclareLaunchArgument("algo", default_value="sac", description="drqv2 | sac | mbpo"),
        DeclareLaunchArgument("mode", default_value="local", description="local | split"),
        DeclareLaunchArgument("learner_here", default_value="true", description="split: run learner_node here too"),
        DeclareLaunchArgument("port", default_value="/dev/ttyUSB0", description="servo bus serial port"),
        DeclareLaunchArgument("camera_source", default_value="0", description="OpenCV camera source"),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(os.path.join(SHARE, "launch", "robot.launch.py")),
            launch_arguments={"arm": LaunchConfiguration("arm"), "use_sim": LaunchConfiguration("use_sim"),
                              "autostart": LaunchConfiguration("autostart"),
                              "task": LaunchConfiguration("task"), "port": LaunchConfiguration("port"),
                              "camera_source": LaunchConfiguration("camera_source")}.items(),
        ),
        Node(
            package="se_robot", executable="learner_node", name="learner_node", output="screen",
            condition=IfCondition(LaunchConfiguration("learner_here")),
            respawn=True, respawn_delay=2.0,   # a learner whose thread died exits 1: start it again
            parameters=[os.path.join(CONFIG, "train.yaml"),
                        {"mode": text("mode"), "algo": algo, "task": task}],
        ),
        Node(
            package="se_robot", executable="actor_node", name="actor_node", output="screen",
            condition=LaunchConfigurationEquals("mode", "split"),
            respawn=True, respawn_delay=2.0,
            parameters=[os.path.join(CONFIG, "train.yaml"), {"algo": algo, "task": task}],
        ),
    ])
