"""ROS 2 message <-> numpy conversions, the command mapping, parameters from the Hydra config, mcap bags.

No DDS traffic here: pure functions on real message objects (and one rclpy node for the parameters).
"""

import math

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import TwistStamped
from rclpy.context import Context
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory

from uio_robot.agent.config import ConfigError, load_config
from uio_robot.bridges.ros import conversions as cv
from uio_robot.bridges.ros.bag import BagRecorder, read_bag
from uio_robot.bridges.ros.params import declare_config

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_images_round_trip(encoding):
    msg = cv.array_to_image(RGB, encoding=encoding)
    assert msg.encoding == encoding and msg.step == 5 * cv.ENCODINGS[encoding]
    np.testing.assert_array_equal(cv.image_to_array(msg), RGB)


def test_mono_image_becomes_three_equal_channels():
    out = cv.image_to_array(cv.array_to_image(RGB, encoding="mono8"))
    assert out.shape == (6, 5, 3)
    np.testing.assert_array_equal(out[..., 0], RGB.mean(axis=2).astype(np.uint8))
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_row_padding_is_skipped():
    padded = np.zeros((6, 5 * 3 + 7), np.uint8)
    padded[:, :15] = RGB.reshape(6, 15)
    msg = Image(height=6, width=5, encoding="rgb8", step=22)
    msg.data = padded.tobytes()
    np.testing.assert_array_equal(cv.image_to_array(msg), RGB)


def _bad(msg_fn):
    with pytest.raises(cv.BadMessage) as err:
        msg_fn()
    return str(err.value)


def test_bad_images_name_the_problem():
    msg = cv.array_to_image(RGB)
    wrong_encoding = Image(height=6, width=5, encoding="16UC1", step=10, data=bytes(60))
    assert "unsupported encoding '16UC1'" in _bad(lambda: cv.image_to_array(wrong_encoding, what="camera 'x'"))
    truncated = Image(height=6, width=5, encoding="rgb8", step=15, data=bytes(msg.data)[:50])
    assert "50 bytes of data, expected 90" in _bad(lambda: cv.image_to_array(truncated))
    short_step = Image(height=6, width=5, encoding="rgb8", step=10, data=bytes(90))
    assert "step 10 is shorter" in _bad(lambda: cv.image_to_array(short_step))
    assert "image is 6x5, expected 64x64" in _bad(lambda: cv.image_to_array(msg, (64, 64)))
    assert "empty image" in _bad(lambda: cv.image_to_array(Image(encoding="rgb8")))
    assert cv.image_to_array(msg, (6, 0)).shape == (6, 5, 3)  # 0 = any width


def test_compressed_images():
    png = cv.array_to_compressed(RGB, fmt="png")
    np.testing.assert_array_equal(cv.compressed_to_array(png), RGB)
    big = RNG.integers(100, 120, (32, 32, 3), dtype=np.uint8)
    jpeg = cv.compressed_to_array(cv.array_to_compressed(big, fmt="jpeg", quality=95))
    assert jpeg.shape == (32, 32, 3) and np.abs(jpeg.astype(int) - big).mean() < 8
    garbage = CompressedImage(format="jpeg", data=b"not an image")
    assert "could not decode 12 bytes" in _bad(lambda: cv.compressed_to_array(garbage))
    assert "expected 8x8" in _bad(lambda: cv.compressed_to_array(png, (8, 8)))


def test_joint_states_by_name():
    msg = cv.make_joint_state(["b", "a", "c"], [2.0, 1.0, 3.0])
    assert cv.joint_state_values(msg, ["a", "b"]) == {"a": 1.0, "b": 2.0}
    assert "missing joints ['d']" in _bad(lambda: cv.joint_state_values(msg, ["a", "d"]))
    nan = cv.make_joint_state(["a", "b"], [1.0, math.nan])
    assert "non-finite position for ['b']" in _bad(lambda: cv.joint_state_values(nan, ["a", "b"]))
    assert cv.joint_state_values(nan, ["a"]) == {"a": 1.0}  # a NaN in a joint we do not use is harmless
    short = JointState(name=["a", "b"], position=[1.0])
    assert "2 names but 1 positions" in _bad(lambda: cv.joint_state_values(short, ["a"]))


def test_command_mapping_and_its_inverse():
    mapping = cv.CommandMapping.create(["linear.x", "angular.z", "grip"], 5, index=[0, 3, 4], scale=[20, 20, 1])
    action = np.array([0.01, 0.02, 0.03, -0.1, 1.0], np.float32)
    np.testing.assert_allclose(mapping.to_values(action), [0.2, -2.0, 1.0], rtol=1e-6)
    back = mapping.to_action({"linear.x": 0.2, "angular.z": -2.0, "grip": 1.0}, np.zeros(5))
    np.testing.assert_allclose(back, [0.01, 0, 0, -0.1, 1.0], rtol=1e-6)
    with pytest.raises(ValueError, match="outside the 5 action dims"):
        cv.CommandMapping.create(["a"], 5, index=[5])
    with pytest.raises(ValueError, match="non-zero"):
        cv.CommandMapping.create(["a"], 5, index=[0], scale=[0])
    with pytest.raises(ValueError, match="action has 4 dims"):
        mapping.to_values(np.zeros(4))


def test_command_messages_round_trip():
    names = ["linear.x", "linear.y", "angular.z", "gripper"]
    values = np.array([0.1, -0.2, 0.3, 1.0])
    arr = cv.float64_array(values, names)
    assert isinstance(arr, Float64MultiArray) and arr.layout.dim[0].size == 4
    assert cv.values_from_float64_array(arr, names) == dict(zip(names, values))
    assert "3 values, expected 4" in _bad(lambda: cv.values_from_float64_array(cv.float64_array(values[:3], names),
                                                                              names))
    tw = cv.twist(values, names, cv.to_time(12.5), "base")
    assert isinstance(tw, TwistStamped) and tw.twist.linear.y == -0.2 and tw.twist.angular.z == 0.3
    assert tw.header.stamp.sec == 12 and tw.header.stamp.nanosec == 500_000_000
    assert cv.values_from_twist(tw, names) == {"linear.x": 0.1, "linear.y": -0.2, "angular.z": 0.3}
    traj = cv.joint_trajectory(values, names, cv.to_time(1.0), 0.05)
    assert isinstance(traj, JointTrajectory) and traj.joint_names == names
    assert cv.to_seconds(traj.points[0].time_from_start) == pytest.approx(0.05)
    assert cv.values_from_joint_trajectory(traj, names[:2]) == {"linear.x": 0.1, "linear.y": -0.2}
    assert cv.values_from_joint_trajectory(JointTrajectory(joint_names=names), names) is None  # stop request
    bad = cv.float64_array(np.array([math.nan, 0, 0, 0]), names)
    assert "non-finite values for ['linear.x']" in _bad(lambda: cv.values_from_float64_array(bad, names))


def test_ros_config_defaults_match_the_tabletop_suite():
    from uio_robot.envs import ACTION_NAMES, STATE_NAMES
    from uio_robot.envs.tabletop_env import ACTION_HIGH, ACTION_LOW

    ros = load_config().ros
    assert tuple(ros.action_names) == ACTION_NAMES and tuple(ros.state_names) == STATE_NAMES
    np.testing.assert_allclose(ros.action_low, ACTION_LOW)
    np.testing.assert_allclose(ros.action_high, ACTION_HIGH)


def test_bad_ros_config_names_the_key():
    with pytest.raises(ConfigError, match="ros.command_type"):
        load_config(["ros.command_type=pwm"])
    with pytest.raises(ConfigError, match="ros.state_names"):
        load_config(["ros.state_names=[grip_x,elbow]"])
    with pytest.raises(ConfigError, match="ros.compressed"):
        load_config(["ros.compressed=[wrist]"])


@pytest.fixture
def node_with_args(monkeypatch, tmp_path):
    monkeypatch.setenv("ROS_LOG_DIR", str(tmp_path))
    made = []

    def make(args):
        context = Context()
        rclpy.init(args=["test", "--ros-args", *args], context=context)
        node = rclpy.create_node("params_test", context=context)
        made.append((context, node))
        return node
    yield make
    for context, node in made:
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def test_parameters_come_from_hydra_and_ros_overrides_win(node_with_args):
    cfg = load_config(["loop.rate_hz=15", "ros.command_type=twist",
                       "ros.command_names=[linear.x,linear.y,linear.z,angular.z,gripper]"])
    node = node_with_args(["-p", "loop.replan_every:=2", "-p", "ros.command_scale:=[20.0,20.0,20.0,20.0,1.0]",
                           "-p", "ros.cameras.image:=/cam/color"])
    out = declare_config(node, cfg)
    assert out.loop.rate_hz == 15 and out.ros.command_type == "twist"  # Hydra values as defaults
    assert out.loop.replan_every == 2 and out.ros.command_scale == [20.0, 20.0, 20.0, 20.0, 1.0]
    assert out.ros.cameras == {"image": "/cam/color"}
    assert node.get_parameter("loop.rate_hz").value == 15.0
    assert node.get_parameter("ros.state_topics.ee_state").value[0] == "grip_x"


def test_bad_ros_parameter_is_a_config_error(node_with_args):
    with pytest.raises(ConfigError, match="loop.rate_hz"):
        declare_config(node_with_args(["-p", "loop.rate_hz:=-5.0"]), load_config())
    # twist commands with the action names would publish an all-zero Twist: refused, with the fix named
    with pytest.raises(ConfigError, match=r"ros.command_names.*linear.x"):
        load_config(["ros.command_type=twist"])


def test_bag_round_trip(tmp_path):
    bag = BagRecorder(tmp_path / "episode_000000")
    image = cv.array_to_image(RGB)
    bag.write("camera/image_raw", image, 1_000)
    bag.write("command", cv.float64_array(np.array([0.1, 0.2]), ["a", "b"]), 2_000)
    bag.write("instruction", String(data="reach the red ball"), 3_000)
    bag.write("joint_states", cv.make_joint_state(["a", "b"], [1.0, 2.0]), 4_000)
    assert not (tmp_path / "episode_000000").exists()  # only the partial directory while recording
    path = bag.close()
    assert path == tmp_path / "episode_000000" and not (tmp_path / ".episode_000000.partial").exists()
    assert any(p.suffix == ".mcap" for p in path.iterdir())
    messages = read_bag(path)
    assert [(t, k, ts) for t, k, ts, _ in messages] == [
        ("camera/image_raw", "sensor_msgs/msg/Image", 1_000), ("command", "std_msgs/msg/Float64MultiArray", 2_000),
        ("instruction", "std_msgs/msg/String", 3_000), ("joint_states", "sensor_msgs/msg/JointState", 4_000)]
    img = messages[0][3]
    assert (img.height, img.width, img.encoding) == (6, 5, "rgb8")
    np.testing.assert_array_equal(np.asarray(img.data).reshape(6, 5, 3), RGB)
    np.testing.assert_allclose(messages[1][3].data, [0.1, 0.2])
    assert messages[2][3].data == "reach the red ball"
    assert list(messages[3][3].name) == ["a", "b"] and list(messages[3][3].position) == [1.0, 2.0]
    with pytest.raises(FileExistsError):
        BagRecorder(path)
