import numpy as np
import pytest

from uio_robot.policies.codec import Codec, CodecMismatch, VectorStats, bin_to_value, value_to_bin

ACTION_NAMES = ["dx", "dy", "dz", "dyaw", "gripper"]
STATE_NAMES = ["x", "y", "z"]


def _codec(rng):
    actions = rng.normal(0.0, [0.01, 0.02, 0.005, 0.1, 1.0], size=(500, 5))
    actions[:, 4] = np.sign(actions[:, 4])  # binary gripper, passed through
    state = rng.uniform([-0.3, -0.3, 0.0], [0.3, 0.3, 0.4], size=(500, 3))
    return Codec(VectorStats.from_data(actions, ACTION_NAMES, normalize=[True] * 4 + [False]),
                 VectorStats.from_data(state, STATE_NAMES), chunk=4), actions


def test_bins_cover_unit_interval():
    v = np.linspace(0, 1, 10001)
    b = value_to_bin(v)
    assert b.min() == 0 and b.max() == 999
    assert np.abs(bin_to_value(b) - v).max() <= 0.5 / 999 + 1e-12


def test_round_trip_within_half_bin_every_dimension():
    rng = np.random.default_rng(0)
    codec, actions = _codec(rng)
    lo, hi = np.array(codec.action.q01), np.array(codec.action.q99)
    inside = np.where(codec.action.normalize, np.clip(actions, lo, hi), actions)
    decoded = codec.decode_actions(codec.encode_actions(inside))
    err = np.abs(decoded - inside).max(axis=0)
    assert np.all(err <= codec.action.half_bin() + 1e-6), (err, codec.action.half_bin())


def test_out_of_range_values_are_clamped():
    codec, _ = _codec(np.random.default_rng(1))
    huge = np.array([[10.0, -10.0, 10.0, -10.0, 5.0]])
    decoded = codec.decode_actions(codec.encode_actions(huge))[0]
    assert decoded[0] == pytest.approx(codec.action.q99[0], abs=1e-3)
    assert decoded[1] == pytest.approx(codec.action.q01[1], abs=1e-3)
    assert decoded[4] == pytest.approx(1.0)


def test_layout_mismatch_is_rejected_with_names():
    codec, _ = _codec(np.random.default_rng(2))
    codec.check_layout(ACTION_NAMES, STATE_NAMES)
    with pytest.raises(CodecMismatch, match="action: checkpoint has 5 dims"):
        codec.check_layout(ACTION_NAMES[:4], STATE_NAMES)
    with pytest.raises(CodecMismatch, match="state"):
        codec.check_layout(ACTION_NAMES, ["x", "y", "yaw"])


def test_serialization_round_trip_and_tamper_detection():
    codec, actions = _codec(np.random.default_rng(3))
    d = codec.to_dict()
    again = Codec.from_dict(d)
    assert again.hash() == codec.hash()
    np.testing.assert_array_equal(again.encode_actions(actions[:4]), codec.encode_actions(actions[:4]))
    d["action"]["q99"][0] += 1.0
    with pytest.raises(CodecMismatch, match="hash"):
        Codec.from_dict(d)


def test_bad_shapes_and_data():
    codec, _ = _codec(np.random.default_rng(4))
    with pytest.raises(CodecMismatch, match="expected"):
        codec.encode_actions(np.zeros((2, 3)))
    with pytest.raises(CodecMismatch, match="multiple"):
        codec.decode_actions(np.zeros(7, dtype=int))
    with pytest.raises(CodecMismatch, match="NaN"):
        VectorStats.from_data(np.array([[np.nan, 0.0, 0.0]]), STATE_NAMES)
