import threading
import time

import numpy as np
import pytest

from uio_robot.agent.protocols import ActionChunk, ArraySpec, Observation
from uio_robot.agent.worker import InferenceWorker, QueryQueueFull, WorkerDied

SPEC = ArraySpec(("a",), [-1], [1])


def obs(value=0.0):
    return Observation({}, np.array([value], np.float32), "", time.monotonic())


class ScriptedPolicy:
    """A policy whose behaviour each test sets: act echoes the state, query yields `steps` times."""

    def __init__(self, steps=20, step_s=0.01, act_error=None, block=None, act_s=0.0):
        self.steps, self.step_s, self.act_error, self.block, self.act_s = steps, step_s, act_error, block, act_s
        self.events: list[tuple[str, float]] = []

    def reset(self):
        pass

    def act(self, o):
        self.events.append(("act", time.monotonic()))
        if self.block is not None:
            self.block.wait()
        time.sleep(self.act_s)
        if self.act_error is not None:
            raise self.act_error
        return ActionChunk(np.array([[o.state[0]]]), o.timestamp, 0.05)

    def query(self, images, text, between_steps=None):
        if text == "fail":
            raise ValueError("cannot answer that")
        for _ in range(self.steps):
            time.sleep(self.step_s)
            between_steps()
        self.events.append(("query_done", time.monotonic()))
        return text.upper()


def wait_for(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.002)


def test_control_result_and_query_answer():
    w = InferenceWorker(ScriptedPolicy(steps=3)).start()
    try:
        seq = w.submit_control(obs(0.5))
        results = []
        wait_for(lambda: results.append(w.take_control_result()) or results[-1] is not None)
        result = results[-1]
        assert result.seq == seq and result.error is None and result.chunk.actions[0, 0] == 0.5
        assert result.latency_s >= 0 and w.take_control_result() is None  # taken once
        answer = w.submit_query({}, "what is here").result(timeout=5)
        assert answer.text == "WHAT IS HERE" and answer.steps == 3 and answer.latency_s > 0
    finally:
        w.stop()


def test_control_request_runs_between_decode_steps_of_a_query():
    policy = ScriptedPolicy(steps=40, step_s=0.01)  # a 0.4 s answer
    w = InferenceWorker(policy).start()
    try:
        future = w.submit_query({}, "long question")
        wait_for(lambda: w.busy)
        time.sleep(0.05)
        w.submit_control(obs(1.0))
        results = []
        wait_for(lambda: results.append(w.take_control_result()) or results[-1] is not None)
        answer = future.result(timeout=5)
        act_time = next(t for kind, t in policy.events if kind == "act")
        done_time = next(t for kind, t in policy.events if kind == "query_done")
        assert act_time < done_time - 0.1  # served well before the answer finished
        assert results[-1].latency_s < 0.2  # waited for one decode step, not the 0.4 s answer
        assert answer.control_served == 1 and answer.text == "LONG QUESTION"
    finally:
        w.stop()


def test_control_goes_before_waiting_queries():
    gate = threading.Event()
    policy = ScriptedPolicy(steps=1, step_s=0.0, block=gate)
    w = InferenceWorker(policy).start()
    try:
        w.submit_control(obs(0.0))  # blocks the worker inside act until the gate opens
        wait_for(lambda: w.busy)
        futures = [w.submit_query({}, f"q{i}") for i in range(3)]
        w.submit_control(obs(1.0))
        w.submit_control(obs(2.0))  # replaces the waiting one: only the newest observation matters
        assert w.superseded == 1
        gate.set()
        wait_for(lambda: all(f.done() for f in futures))
        kinds = [k for k, _ in policy.events]
        assert kinds[:2] == ["act", "act"]  # the second control ran before any of the queries
        assert [f.result().text for f in futures] == ["Q0", "Q1", "Q2"]
    finally:
        w.stop()


def test_policy_errors_are_reported_not_fatal():
    w = InferenceWorker(ScriptedPolicy(act_error=RuntimeError("model exploded"))).start()
    try:
        w.submit_control(obs())
        results = []
        wait_for(lambda: results.append(w.take_control_result()) or results[-1] is not None)
        result = results[-1]
        assert result.chunk is None and "model exploded" in result.error
        with pytest.raises(ValueError, match="cannot answer"):
            w.submit_query({}, "fail").result(timeout=5)
        assert w.alive
    finally:
        w.stop()


class Fatal(BaseException):
    pass


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_worker_death_is_detected_and_fails_waiting_queries():
    gate = threading.Event()
    policy = ScriptedPolicy(act_error=Fatal("segfault stand-in"), block=gate)
    w = InferenceWorker(policy).start()
    w.submit_control(obs())
    wait_for(lambda: w.busy)
    waiting = w.submit_query({}, "never answered")
    gate.set()
    wait_for(lambda: not w.alive)
    assert "segfault stand-in" in w.death
    with pytest.raises(WorkerDied):
        waiting.result(timeout=5)
    with pytest.raises(WorkerDied):
        w.submit_query({}, "after death").result(timeout=1)


def test_hung_policy_shows_as_stalled():
    gate = threading.Event()
    w = InferenceWorker(ScriptedPolicy(block=gate)).start()
    try:
        w.submit_control(obs())
        wait_for(lambda: w.busy)
        time.sleep(0.2)
        assert w.stalled_for(time.monotonic()) >= 0.2
        gate.set()
        wait_for(lambda: not w.busy)
        assert w.stalled_for(time.monotonic()) == 0.0
    finally:
        gate.set()
        w.stop()


def test_full_query_queue_rejects_at_once_with_a_clear_error():
    gate = threading.Event()
    policy = ScriptedPolicy(steps=1, step_s=0.0, block=gate)
    w = InferenceWorker(policy, max_pending_queries=2).start()
    try:
        w.submit_control(obs())  # holds the worker inside act, so queries wait
        wait_for(lambda: w.busy)
        waiting = [w.submit_query({}, f"q{i}") for i in range(2)]
        rejected = w.submit_query({}, "one too many")
        assert rejected.done() and not any(f.done() for f in waiting)  # refused now, not after a wait
        with pytest.raises(QueryQueueFull, match=r"query queue is full.*max_pending_queries=2"):
            rejected.result(timeout=0)
        assert w.queries_rejected == 1 and w.queries_waiting == 2
        gate.set()
        assert [f.result(timeout=5).text for f in waiting] == ["Q0", "Q1"]  # the queued ones are answered
        assert w.submit_query({}, "room again").result(timeout=5).text == "ROOM AGAIN"
    finally:
        gate.set()
        w.stop()


def test_query_queue_bound_must_be_positive():
    with pytest.raises(ValueError, match="max_pending_queries"):
        InferenceWorker(ScriptedPolicy(), max_pending_queries=0)


@pytest.mark.parametrize("priority_after_s", [0.3, 0.0])
def test_a_query_is_not_starved_by_control_that_always_waits(priority_after_s):
    """Control inference slower than the replan interval: a control request is always waiting. A query that
    has waited `query_priority_after_s` still runs (0 = control always first: it starves)."""
    policy = ScriptedPolicy(steps=5, step_s=0.01, act_s=0.05)
    w = InferenceWorker(policy, query_priority_after_s=priority_after_s).start()
    stop = threading.Event()

    def feed():
        while not stop.is_set():
            w.submit_control(obs())
            time.sleep(0.01)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        wait_for(lambda: w.busy)
        future = w.submit_query({}, "still there?")
        time.sleep(1.2)
        if priority_after_s:
            assert future.done() and future.result().text == "STILL THERE?"
            assert 0.3 <= future.result().latency_s < 1.2
            assert future.result().control_served >= 3  # control kept running between its decode steps
        else:
            assert not future.done()
    finally:
        stop.set()
        feeder.join()
        w.stop()
