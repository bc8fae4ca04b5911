"""The start-up both ROS console-script nodes share (bridges/ros/node_main.py): --help, bad config, args."""

import pytest

from uio_robot.bridges.ros import agent_node, sim_node
from uio_robot.bridges.ros.node_main import read_command_line, split_args


@pytest.mark.parametrize("node", [agent_node, sim_node])
def test_help_prints_the_docstring_and_a_bad_config_is_one_line_and_exit_2(node, capsys):
    assert node.main(["--help"]) == 0
    assert node.__doc__.strip().splitlines()[0] in capsys.readouterr().out
    assert node.main(["loop.rate_hz=-5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "loop.rate_hz" in err[0] and err[0].startswith("uio-robot ros-")


def test_overrides_and_ros_arguments_are_split_and_defaults_come_first():
    assert split_args(["a=1", "--ros-args", "-p", "x:=2"]) == (["a=1"], ["--ros-args", "-p", "x:=2"])
    cfg, ros_args = read_command_line("ros-sim", "doc", ["ros.node_name=mine", "--ros-args", "-r", "a:=b"],
                                      defaults=("ros.node_name=uio_robot_sim", "loop.rate_hz=10"))
    assert cfg.ros.node_name == "mine" and cfg.loop.rate_hz == 10 and ros_args == ["--ros-args", "-r", "a:=b"]
