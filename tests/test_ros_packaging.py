"""ROS packaging: pip installs package.xml, the ament index marker and the launch files under <prefix>/share,
where `ros2 launch uio_robot ...` finds them through the ament index (AMENT_PREFIX_PATH)."""

import ast
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILES = ("agent.launch.py", "sim.launch.py")


def test_pip_install_puts_the_ros_package_under_share(tmp_path):
    wheels, prefix, source = tmp_path / "wheels", tmp_path / "prefix", tmp_path / "source"
    # build from a copy, so the build leaves nothing in the working tree (model weights are not needed here)
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__",
                                                                "outputs", "default", "*.safetensors", ".*_cache"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)], check=True,
                   cwd=tmp_path, timeout=300)
    wheel = next(wheels.glob("uio_robot-*.whl"))
    # --ignore-installed: never uninstall the uio-robot of the running environment
    subprocess.run([*pip, "install", "--no-deps", "--no-compile", "--ignore-installed", "--prefix", str(prefix),
                    str(wheel)], check=True, timeout=300)
    still = subprocess.run([sys.executable, "-c", "import uio_robot.agent as a; print(a.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    assert still.returncode == 0, "the environment's own uio-robot install was disturbed"
    share = prefix / "share"
    assert (share / "ament_index/resource_index/packages/uio_robot").is_file()
    for name in LAUNCH_FILES:
        assert (share / "uio_robot/launch" / name).read_text() == (REPO / "launch" / name).read_text()
    xml = ET.parse(share / "uio_robot/package.xml").getroot()
    assert xml.get("format") == "3" and xml.findtext("name") == "uio_robot"
    assert {e.text for e in xml.iter("exec_depend")} >= {"rclpy", "sensor_msgs", "std_srvs", "diagnostic_msgs"}
    found = subprocess.run(
        [sys.executable, "-c", "from ament_index_python.packages import get_package_share_directory as g; "
                               "print(g('uio_robot'))"],
        env={**os.environ, "AMENT_PREFIX_PATH": str(prefix)}, capture_output=True, text=True, check=True, timeout=60)
    assert Path(found.stdout.strip()) == share / "uio_robot"


def test_launch_files_declare_their_arguments():
    """`launch` is not installable from PyPI here; check the files parse and declare what the README promises."""
    agent = ast.parse((REPO / "launch/agent.launch.py").read_text())
    sim = ast.parse((REPO / "launch/sim.launch.py").read_text())
    for tree in (agent, sim):
        assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    declared = next(n.value for n in agent.body if isinstance(n, ast.Assign) and n.targets[0].id == "ARGUMENTS")
    keys = {k.value for k in declared.keys}
    assert keys >= {"checkpoint", "config", "rate", "camera_topic", "joint_states_topic", "command_topic",
                    "command_type", "params_file"}
    source = (REPO / "launch/agent.launch.py").read_text() + (REPO / "launch/sim.launch.py").read_text()
    assert '"uio-robot", "ros-agent"' in source and '"uio-robot", "ros-sim"' in source
