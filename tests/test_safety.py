import logging

import numpy as np
import pytest

from uio_robot.agent import safety as S
from uio_robot.agent.config import SafetyConfig
from uio_robot.agent.protocols import ArraySpec, Observation

SPEC = ArraySpec(("a", "b", "c"), [-1, -1, -1], [1, 1, 1])


def obs(t=10.0, state=(0.0, 0.0, 0.0)):
    return Observation({}, np.asarray(state, np.float32), "", t)


def test_clamp_flags_only_real_changes():
    out, hit = S.clamp(np.array([0.5, 2.0, -3.0], np.float32), SPEC.low, SPEC.high)
    assert hit and out.tolist() == [0.5, 1.0, -1.0]
    out, hit = S.clamp(np.array([0.5, 1.0, -1.0], np.float32), SPEC.low, SPEC.high)
    assert not hit and out.tolist() == [0.5, 1.0, -1.0]


def test_rate_limit_limits_change_per_dimension():
    prev = np.array([0.0, 0.0, 0.5], np.float32)
    out, hit = S.rate_limit(np.array([1.0, -0.05, 0.5], np.float32), prev, np.array([0.1, 0.1, 0.1], np.float32))
    assert hit and np.allclose(out, [0.1, -0.05, 0.5])


@pytest.mark.parametrize("gain", [None, 0.5])
def test_workspace_keeps_the_predicted_position_inside(gain):
    pos = np.array([0.9, 0.0], np.float32)
    low, high = np.array([-1.0, -1.0], np.float32), np.array([1.0, 1.0], np.float32)
    action = np.array([1.5, 0.4, 0.7], np.float32)  # position part = dims 0 and 1
    out, hit = S.workspace_limit(action, pos, low, high, np.array([0, 1]), gain)
    assert hit
    predicted = out[:2] if gain is None else pos + gain * out[:2]
    assert np.all(predicted <= high + 1e-6) and np.all(predicted >= low - 1e-6)
    assert out[2] == 0.7  # the non-position dimension is untouched
    if gain is not None:
        assert out[1] == pytest.approx(0.4)  # the axis that stays inside keeps its command


def test_staleness_watchdog():
    assert not S.is_stale(9.8, 10.0, 0.5)
    assert S.is_stale(9.0, 10.0, 0.5)
    assert S.is_stale(10.5, 10.0, 0.5)  # from the future: a clock bug, not fresh data


def test_estop_latch_needs_explicit_reset():
    latch = S.EStopLatch()
    latch.trigger("button")
    latch.trigger("second")
    assert latch.engaged and latch.reason == "button"
    latch.reset()
    assert not latch.engaged


def make_filter(**cfg):
    return S.SafetyFilter(SPEC, SafetyConfig(**cfg), period_s=0.1)


def test_filter_rejects_nonfinite_and_wrong_shape_with_the_safe_action():
    f = make_filter()
    r = f.filter(np.array([np.nan, 0, 0]), obs(), 10.0)
    assert r.reasons == [S.NONFINITE_ACTION] and np.all(r.action == 0)
    r = f.filter(np.array([np.inf, 0, 0]), obs(), 10.0)
    assert r.reasons == [S.NONFINITE_ACTION]
    r = f.filter(np.array([0.1, 0.2]), obs(), 10.0)
    assert r.reasons == [S.WRONG_SHAPE] and np.all(r.action == 0)
    assert f.counts == {S.NONFINITE_ACTION: 2, S.WRONG_SHAPE: 1}


def test_filter_stale_observation_gives_safe_action():
    f = make_filter(max_obs_age_s=0.2)
    r = f.filter(np.array([0.5, 0.5, 0.5]), obs(t=9.0), 10.0)
    assert r.reasons == [S.STALE_OBSERVATION] and np.all(r.action == 0)
    r = f.filter(np.array([0.5, 0.5, 0.5]), obs(t=9.9), 10.0)
    assert not r.intervened and np.allclose(r.action, 0.5)


def test_filter_estop_overrides_everything_until_reset():
    f = make_filter(max_rate=[0.5, 0.5, 0.5])
    f.filter(np.array([0.05, 0.05, 0.05]), obs(), 10.0)
    f.estop.trigger("test")
    for _ in range(3):
        r = f.filter(np.array([0.05, 0.05, 0.05]), obs(), 10.0)
        assert r.reasons == [S.ESTOP] and np.all(r.action == 0)
    f.estop.reset()
    assert not f.filter(np.array([0.05, 0.05, 0.05]), obs(), 10.0).intervened


def test_filter_composes_rate_limit_then_clamp_and_counts_each():
    f = make_filter(max_rate=[1.0, 100.0, 1.0])  # 0.1 per command at 10 Hz for dims 0 and 2
    r = f.filter(np.array([0.5, 5.0, 0.05]), obs(), 10.0)
    assert r.reasons == [S.RATE_LIMIT, S.CLAMP]
    assert np.allclose(r.action, [0.1, 1.0, 0.05])
    r = f.filter(np.array([0.5, 0.0, 0.05]), obs(), 10.0)  # rate limit is relative to the previous command
    assert np.allclose(r.action, [0.2, 0.0, 0.05])
    assert f.counts[S.RATE_LIMIT] == 2 and f.counts[S.CLAMP] == 1


def test_filter_workspace_uses_configured_indices():
    f = make_filter(workspace_low=[-0.5], workspace_high=[0.5], position_state_indices=[1],
                    position_action_indices=[0], position_mode="velocity")
    r = f.filter(np.array([1.0, 0.0, 0.0]), obs(state=(0.0, 0.48, 0.0)), 10.0)
    assert S.WORKSPACE in r.reasons
    assert 0.48 + 0.1 * r.action[0] <= 0.5 + 1e-6


def test_filter_logs_when_an_intervention_starts(caplog):
    f = make_filter()
    with caplog.at_level(logging.WARNING, logger="uio_robot.agent.safety"):
        for _ in range(5):
            f.filter(np.array([2.0, 0, 0]), obs(), 10.0)
    assert f.counts[S.CLAMP] == 5
    assert sum("clamp" in m for m in caplog.messages) == 1


def test_filter_bad_configuration_is_a_clear_error():
    with pytest.raises(ValueError, match="safe_action"):
        S.SafetyFilter(SPEC, SafetyConfig(safe_action=[2.0, 0, 0]), 0.1)
    with pytest.raises(ValueError, match="max_rate"):
        make_filter(max_rate=[1.0, 1.0])
    with pytest.raises(ValueError, match="workspace"):
        make_filter(workspace_low=[0.0], workspace_high=[1.0], position_state_indices=[0])


def test_disabled_filter_still_rejects_nan_and_honours_estop():
    f = make_filter(enabled=False)
    assert not f.filter(np.array([5.0, 0, 0]), obs(t=0.0), 10.0).intervened  # no clamp, no staleness
    assert f.filter(np.array([np.nan, 0, 0]), obs(), 10.0).reasons == [S.NONFINITE_ACTION]
    f.estop.trigger()
    assert f.filter(np.array([0.1, 0, 0]), obs(), 10.0).reasons == [S.ESTOP]
