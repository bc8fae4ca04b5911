"""ros2 launch uio_robot sim.launch.py [task:=uio_robot/Reach-v0] [image_size:=128] [seed:=0]
   [checkpoint:=DIR] [config:="hydra overrides"] [rate:=20] [episodes:=1]

The MuJoCo tabletop robot (`uio-robot ros-sim`) and the agent (`uio-robot ros-agent`, see agent.launch.py)
on the default topics, so the agent drives the simulated arm exactly as it would drive a real one.
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration

HERE = os.path.dirname(os.path.abspath(__file__))
SIM_ARGUMENTS = {
    "task": ("uio_robot/Reach-v0", "gymnasium id of the tabletop task"),
    "image_size": ("128", "camera image size in pixels"),
    "seed": ("0", "first episode seed"),
    "episodes": ("1", "episodes the agent runs (0 = until stopped)"),
}


def _load_agent_launch():
    import importlib.util

    spec = importlib.util.spec_from_file_location("uio_robot_agent_launch", os.path.join(HERE, "agent.launch.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


AGENT = _load_agent_launch()


def _start(context):
    arg = {name: LaunchConfiguration(name).perform(context) for name in SIM_ARGUMENTS}
    common = [f"env.task={arg['task']}", f"env.image_size={arg['image_size']}", f"env.seed={arg['seed']}",
              f"ros.sim_rate_hz={LaunchConfiguration('rate').perform(context)}",
              f"ros.command_type={LaunchConfiguration('command_type').perform(context)}"]
    config = LaunchConfiguration("config").perform(context).split()  # the agent gets them via agent_command
    sim = ExecuteProcess(cmd=["uio-robot", "ros-sim", *common, *config], output="screen", name="uio_robot_sim")
    agent = ExecuteProcess(cmd=AGENT.agent_command(context, extra=[*common, f"ros.episodes={arg['episodes']}"]),
                           output="screen", name="uio_robot_agent")
    return [sim, agent]


def generate_launch_description():
    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, (default, text) in {**AGENT.ARGUMENTS, **SIM_ARGUMENTS}.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=_start)])
