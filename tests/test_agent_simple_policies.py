import numpy as np
import pytest

from uio_robot.agent.protocols import ArraySpec, Observation, Policy
from uio_robot.policies.simple import RandomPolicy, ReplayPolicy, StandInPolicy, ZeroPolicy

SPEC = ArraySpec(("a", "b"), [-1, -2], [1, 2])


def obs(t=5.0, state=(0.5, -0.5)):
    return Observation({"image": np.full((8, 8, 3), 100, np.uint8)}, np.asarray(state, np.float32), "", t)


@pytest.mark.parametrize("policy", [ZeroPolicy(SPEC, 3), RandomPolicy(SPEC, 3), StandInPolicy(SPEC, 3, compute_ms=0),
                                    ReplayPolicy(np.zeros((4, 2)), 3)])
def test_chunks_start_at_the_observation(policy):
    assert isinstance(policy, Policy)
    chunk = policy.act(obs(t=7.0))
    assert chunk.actions.shape == (3, 2) and chunk.start_time == 7.0


def test_random_is_bounded_and_reproducible_after_reset():
    p = RandomPolicy(SPEC, horizon=50, seed=1)
    a = p.act(obs()).actions
    assert np.all(a >= SPEC.low) and np.all(a <= SPEC.high) and a.std() > 0.1
    p.reset()
    np.testing.assert_array_equal(p.act(obs()).actions, a)


def test_replay_follows_the_clock_and_fills_past_the_end():
    rows = np.arange(10, dtype=np.float32).reshape(5, 2)
    p = ReplayPolicy(rows, horizon=3, period=0.1)
    np.testing.assert_array_equal(p.act(obs(t=1.0)).actions, rows[:3])
    np.testing.assert_array_equal(p.act(obs(t=1.2)).actions, rows[2:5])  # two periods later
    np.testing.assert_array_equal(p.act(obs(t=1.4)).actions, [rows[4], [0, 0], [0, 0]])
    with pytest.raises(ValueError, match="NaN"):
        ReplayPolicy(np.full((2, 2), np.nan))


def test_standin_controller_and_query_yields_each_step():
    p = StandInPolicy(SPEC, horizon=4, period=0.05, compute_ms=0, step_ms=0, query_steps=7)
    a = p.act(obs(state=(0.5, -0.5))).actions
    assert a[0, 0] < 0 < a[0, 1] and np.all(np.abs(a[1:]) <= np.abs(a[:-1]))  # towards zero, decaying
    calls = []
    answer = p.query({"image": np.full((4, 4, 3), 50, np.uint8)}, "what colour?", lambda: calls.append(1))
    assert len(calls) == 7 and "what colour?" in answer and "50.0" in answer


def test_policies_without_a_language_model_refuse_queries():
    with pytest.raises(NotImplementedError, match="ZeroPolicy"):
        ZeroPolicy(SPEC).query({}, "hi")


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="horizon"):
        ZeroPolicy(SPEC, horizon=0)
    with pytest.raises(ValueError, match="period"):
        StandInPolicy(SPEC, period=0)
    with pytest.raises(ValueError, match="shape"):
        ReplayPolicy(np.zeros(3))
