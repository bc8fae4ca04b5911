"""The inference worker in a child process (`loop.worker=process`): real spawned processes, real policies.

Each test starts its own child (about 0.3-1 s on a loaded 2-core machine). Timing assertions are about
counts and order, not latencies.
"""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from uio_robot.agent.config import ConfigError, LoopConfig, load_config
from uio_robot.agent.loop import WORKER_DEAD, WORKER_HUNG, ControlLoop, make_worker
from uio_robot.agent.policy_recipe import PolicyRecipe
from uio_robot.agent.process_worker import ProcessWorker
from uio_robot.agent.sim_robot import PointRobot
from uio_robot.agent.worker import QueryQueueFull, WorkerDied
from uio_robot.policies.simple import StandInPolicy, ZeroPolicy
from uio_robot.policies.types import ActionChunk, Observation

RATE = 20.0
PERIOD = 1 / RATE


class SleepyPolicy(StandInPolicy):
    """The stand-in, whose act sleeps (without burning CPU) for `hang_s` from its third call: a hung model."""

    def __init__(self, action_spec, hang_s: float):
        super().__init__(action_spec, horizon=8, period=PERIOD, compute_ms=2.0)
        self.hang_s, self.calls = hang_s, 0

    def act(self, obs: Observation) -> ActionChunk:
        self.calls += 1
        if self.calls >= 3:
            time.sleep(self.hang_s)
        return super().act(obs)


def standin(robot, **kw) -> PolicyRecipe:
    args = dict(action_spec=robot.action_spec, horizon=8, period=PERIOD, compute_ms=5.0, step_ms=5.0,
                query_steps=16)
    return PolicyRecipe(StandInPolicy, {**args, **kw})


def process_loop(robot, recipe, **loop_kw) -> ControlLoop:
    cfg = LoopConfig(rate_hz=RATE, replan_every=2, worker="process", **loop_kw)
    return ControlLoop(robot, recipe, cfg)


def reaped(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def ended(pid: int) -> bool:
    """Gone, or a zombie waiting for whoever adopted it to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_loop_worker_value_is_checked_with_the_key_named():
    with pytest.raises(ConfigError, match="loop.worker"):
        load_config(["loop.worker=fork"])
    assert load_config(["loop.worker=process"]).loop.worker == "process"
    robot = PointRobot(dt=PERIOD)
    with pytest.raises(ConfigError, match="loop.worker='fork'"):
        make_worker(standin(robot), LoopConfig(worker="fork"))
    with pytest.raises(TypeError, match="PolicyRecipe"):  # a built policy cannot go to a child process
        ProcessWorker(StandInPolicy(robot.action_spec))
    with pytest.raises(TypeError, match="cannot be sent"):
        ProcessWorker(PolicyRecipe(lambda: None))


def test_control_and_query_round_trip_through_the_loop():
    robot = PointRobot(dt=PERIOD)
    loop = process_loop(robot, standin(robot, step_ms=10.0, query_steps=20))  # a 0.2 s answer
    futures = []

    def ask(rec):
        if rec.tick == 5:
            futures.append(loop.query(robot.observe().images, "where am I?"))

    loop.on_tick = ask
    pid = loop.worker.pid
    try:
        assert pid != os.getpid() and loop.worker.alive
        loop.run(max_ticks=40, seed=3)
        answer = futures[0].result(timeout=10)
    finally:
        loop.close()
    records = loop.telemetry.ticks
    assert len(records) == 40 and not any(r.faults for r in records)
    assert sum(r.source == "chunk" for r in records) >= 30  # only the first ticks wait for the first chunk
    start = PointRobot(dt=PERIOD).reset(seed=3).state[:2]
    assert np.linalg.norm(robot.observe().state[:2]) < 0.5 * np.linalg.norm(start)  # the chunks drove it home
    assert answer.text.startswith("stand-in answer to 'where am I?'") and answer.steps == 20
    assert answer.control_served >= 1  # control ran between the query's decode steps, in the child
    assert loop.telemetry.summary()["queries"] == 1
    assert not loop.worker.alive and loop.worker._process.exitcode == 0 and reaped(pid)
    assert pid not in [p.pid for p in multiprocessing.active_children()]


def test_policy_errors_cross_the_process_boundary():
    robot = PointRobot(dt=PERIOD)
    with pytest.raises(ValueError, match="compute_ms >= 0"):  # the child's build error, raised at start
        ProcessWorker(standin(robot, compute_ms=-1.0)).start()
    worker = ProcessWorker(PolicyRecipe(ZeroPolicy, dict(action_spec=robot.action_spec))).start()
    try:
        with pytest.raises(NotImplementedError, match="cannot answer queries"):
            worker.submit_query({}, "hello?").result(timeout=10)
        assert worker.alive
    finally:
        worker.stop()


def test_full_query_queue_is_refused_and_close_fails_pending_queries():
    robot = PointRobot(dt=PERIOD)
    worker = ProcessWorker(standin(robot, step_ms=0.0, query_steps=10**6), max_pending_queries=1).start()
    pid = worker.pid
    try:
        first = worker.submit_query({}, "first")
        end = time.monotonic() + 10
        while not first.running():
            assert time.monotonic() < end, "the child never started the query"
            time.sleep(0.01)
        second = worker.submit_query({}, "second")  # waits
        with pytest.raises(QueryQueueFull, match="max_pending_queries=1"):
            worker.submit_query({}, "third").result(timeout=1)
        assert worker.queries_rejected == 1
    finally:
        worker.stop()
    for future in (first, second):
        with pytest.raises(WorkerDied):
            future.result(timeout=1)
    assert reaped(pid) and worker._process.exitcode == 0  # it stopped at a decode step, not by a signal
    with pytest.raises(WorkerDied):
        worker.submit_query({}, "after close").result(timeout=1)


@pytest.mark.parametrize("on_deadline", ["stop", "hold"])
def test_killed_child_gives_worker_dead_and_the_deadline_policy(on_deadline):
    robot = PointRobot(dt=PERIOD)
    loop = process_loop(robot, standin(robot, step_ms=20.0, query_steps=200), on_deadline=on_deadline)
    pid, futures = loop.worker.pid, []

    def inject(rec):
        if rec.tick == 10:
            futures.append(loop.query({}, "a long question"))
        if rec.tick == 20:
            os.kill(pid, signal.SIGKILL)

    loop.on_tick = inject
    try:
        loop.run(max_ticks=50, seed=1)
    finally:
        loop.close()
    records = loop.telemetry.ticks
    commands = [c for _, c in robot.commands]
    assert len(records) == 50 == len(commands), "the loop keeps ticking after the worker died"
    dead = [i for i, r in enumerate(records) if WORKER_DEAD in r.faults]
    assert len(dead) == 1 and 20 < dead[0] <= 25  # noted once, within a few ticks of the kill
    expected = "safe" if on_deadline == "stop" else "hold"
    assert all(r.source == expected for r in records[dead[0]:])
    after = np.array(commands[dead[0]:])
    if on_deadline == "stop":
        assert np.all(after == 0.0)  # the point robot's safe action
    else:
        assert np.all(after == commands[dead[0] - 1])  # the last command sent, repeated
    assert "signal 9" in loop.worker.death
    with pytest.raises(WorkerDied, match="signal 9"):
        futures[0].result(timeout=5)
    assert reaped(pid)


def test_hung_child_is_reported_and_close_terminates_it():
    robot = PointRobot(dt=PERIOD)
    recipe = PolicyRecipe(SleepyPolicy, dict(action_spec=robot.action_spec, hang_s=60.0))
    loop = process_loop(robot, recipe, worker_timeout_s=0.3, on_deadline="stop")
    pid = loop.worker.pid
    try:
        loop.run(max_ticks=30, seed=0)
        assert loop.worker.busy and loop.worker.stalled_for(time.monotonic()) > 0.3
    finally:
        started = time.monotonic()
        loop.close()
        took = time.monotonic() - started
    records = loop.telemetry.ticks
    hung = [i for i, r in enumerate(records) if WORKER_HUNG in r.faults]
    assert len(records) == 30 and len(hung) == 1
    assert all(r.source == "safe" for r in records[hung[0]:])
    assert took < 6 and reaped(pid) and loop.worker._process.exitcode == -signal.SIGTERM


PARENT = """
import time
from uio_robot.agent.policy_recipe import PolicyRecipe
from uio_robot.agent.process_worker import ProcessWorker
from uio_robot.agent.sim_robot import PointRobot
from uio_robot.policies.simple import StandInPolicy
if __name__ == "__main__":
    worker = ProcessWorker(PolicyRecipe(StandInPolicy, dict(action_spec=PointRobot().action_spec))).start()
    print(worker.pid, flush=True)
    time.sleep(60)
"""


def test_child_ends_when_its_parent_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert not ended(child)
    finally:
        parent.kill()
        parent.wait()
    end = time.monotonic() + 10
    while not ended(child):
        assert time.monotonic() < end, "the child outlived its killed parent"
        time.sleep(0.05)


def test_tiny_uio2_policy_in_the_child_matches_the_same_policy_here(tmp_path):
    from tiny_policy import ACTION_LOW, ACTION_NAMES, STATE_NAMES, make_tiny_checkpoint

    from uio_robot.policies.factory import build_policy
    from uio_robot.policies.types import ArraySpec

    checkpoint = str(make_tiny_checkpoint(tmp_path / "tiny", chunk=3, history=1))
    specs = dict(action_spec=ArraySpec(ACTION_NAMES, ACTION_LOW, -ACTION_LOW),
                 state_spec=ArraySpec(STATE_NAMES, np.full(12, -5.0), np.full(12, 5.0)))
    args = dict(kind="uio2", checkpoint=checkpoint, device="cpu", dtype="float32", threads=1, **specs)
    rng = np.random.default_rng(0)
    obs = Observation({"image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)},
                      rng.normal(0, 0.3, 12).astype(np.float32), "pick up the red cube", time.monotonic())
    worker = ProcessWorker(PolicyRecipe(build_policy, args)).start()
    try:
        seq = worker.submit_control(obs)
        end, result = time.monotonic() + 30, None
        while result is None:
            assert time.monotonic() < end, "no control result from the child"
            time.sleep(0.01)
            result = worker.take_control_result()
        answer = worker.submit_query(obs.images, "what colour is the cube?").result(timeout=30)
    finally:
        worker.stop()
    assert result.seq == seq and result.error is None and result.latency_s > 0
    here = build_policy(**args).act(obs)
    np.testing.assert_array_equal(result.chunk.actions, here.actions)  # same weights, same greedy decode
    assert result.chunk.actions.shape == (3, 5) and result.chunk.start_time == obs.timestamp
    assert isinstance(answer.text, str) and answer.steps >= 1


def test_bench_loop_runs_the_policy_in_a_child_process(tmp_path, capsys):
    from uio_robot.agent import cli

    out = tmp_path / "bench.json"
    assert cli.main(["bench-loop", "--worker", "process", "--ticks", "30", "--warmup", "2", "--compute-ms", "5",
                     "--query-every", "0.3", "--json", str(out)]) == 0
    s = json.loads(out.read_text())
    assert s["config"]["worker"] == "process" and s["ticks"] == 30
    assert s["latency_ms"]["n"] >= 5 and s["queries"] >= 1
    assert "tick jitter ms" in capsys.readouterr().out
