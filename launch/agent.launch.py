"""ros2 launch uio_robot agent.launch.py [checkpoint:=DIR] [config:="hydra overrides"] [rate:=20]
   [camera_topic:=/camera/image_raw] [joint_states_topic:=/joint_states] [command_topic:=/command]
   [command_type:=float64_array|twist|joint_trajectory] [params_file:=FILE.yaml] [namespace:=NS]

Thin on purpose: it starts the console script `uio-robot ros-agent` (the same node the tests run), passing
the checkpoint and Hydra overrides as config and the topics as ROS remappings.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration

ARGUMENTS = {
    "checkpoint": ("", "policy checkpoint directory; empty = the shipped default model"),
    "config": ("", "extra Hydra overrides, space separated, e.g. 'loop.replan_every=2 safety.max_obs_age_s=0.3'"),
    "rate": ("20.0", "control rate in Hz (loop.rate_hz)"),
    "camera_topic": ("camera/image_raw", "the camera the model sees (ros.cameras.image)"),
    "joint_states_topic": ("joint_states", "sensor_msgs/JointState with the arm joints"),
    "ee_state_topic": ("ee_state", "sensor_msgs/JointState with the end-effector state"),
    "command_topic": ("command", "where commands are published"),
    "command_type": ("float64_array", "float64_array | twist | joint_trajectory"),
    "params_file": ("", "a ROS parameters YAML file (ros.*, loop.*, safety.*, policy.* keys)"),
    "namespace": ("", "ROS namespace of the node"),
}


def agent_command(context, extra=()):
    """The `uio-robot ros-agent ...` command line for the given launch context."""
    arg = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    overrides = [f"loop.rate_hz={arg['rate']}", f"ros.command_type={arg['command_type']}", *extra]
    if arg["checkpoint"]:
        overrides.append(f"policy.checkpoint={arg['checkpoint']}")
    overrides += arg["config"].split()
    ros_args = ["--ros-args", "-r", f"camera/image_raw:={arg['camera_topic']}",
                "-r", f"joint_states:={arg['joint_states_topic']}", "-r", f"ee_state:={arg['ee_state_topic']}",
                "-r", f"command:={arg['command_topic']}"]
    if arg["namespace"]:
        ros_args += ["-r", f"__ns:=/{arg['namespace'].strip('/')}"]
    if arg["params_file"]:
        ros_args += ["--params-file", arg["params_file"]]
    return ["uio-robot", "ros-agent", *overrides, *ros_args]


def _start(context):
    return [ExecuteProcess(cmd=agent_command(context), output="screen", name="uio_robot_agent")]


def generate_launch_description():
    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, (default, text) in ARGUMENTS.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=_start)])
