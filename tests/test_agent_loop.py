"""Fault injection on the control loop, driving the simulated point robot in real time.

Each test asserts the defined outcome on the tick the fault is detected (or the next), and that the
loop kept ticking. Timing assertions are about counts and order, not tight latencies, so they hold on
a loaded 2-core machine.
"""

import re
import threading
import time

import numpy as np
import pytest

from uio_robot.agent import loop as L
from uio_robot.agent.config import LoopConfig, SafetyConfig
from uio_robot.agent.loop import ControlLoop
from uio_robot.agent.protocols import ActionChunk
from uio_robot.agent.safety import ESTOP, INVALID_OBSERVATION, STALE_OBSERVATION
from uio_robot.agent.sim_robot import PointRobot
from uio_robot.agent.worker import QueryQueueFull
from uio_robot.policies.simple import StandInPolicy

RATE = 20.0
PERIOD = 1 / RATE


class FaultyPolicy(StandInPolicy):
    """The stand-in policy, with a fault switched on from its `fault_from`-th act call."""

    def __init__(self, spec, fault=None, fault_from=3, compute_ms=2.0, **kw):
        super().__init__(spec, horizon=8, period=PERIOD, compute_ms=compute_ms, **kw)
        self.fault, self.fault_from, self.calls = fault, fault_from, 0
        self.gate = threading.Event()

    def act(self, obs):
        self.calls += 1
        chunk = super().act(obs)
        if self.calls < self.fault_from or self.fault is None:
            return chunk
        if self.fault == "raise":
            raise RuntimeError("injected policy failure")
        if self.fault == "nan":
            return ActionChunk(np.full_like(chunk.actions, np.nan), chunk.start_time, chunk.period)
        if self.fault == "slow":
            time.sleep(3 * PERIOD)
            return chunk
        if self.fault == "hang":
            self.gate.wait(10)
            return chunk
        if self.fault == "die":
            raise SystemExit("injected worker death")
        raise AssertionError(self.fault)


def run_loop(policy_fault=None, on_deadline="continue", ticks=40, robot=None, on_tick=None,
             safety=None, **loop_kw):
    robot = robot or PointRobot(dt=PERIOD)
    policy = FaultyPolicy(robot.action_spec, fault=policy_fault)
    cfg = LoopConfig(rate_hz=RATE, replan_every=2, on_deadline=on_deadline, **loop_kw)
    loop = ControlLoop(robot, policy, cfg, safety or SafetyConfig(), on_tick=on_tick)
    try:
        summary = loop.run(max_ticks=ticks, seed=3)
    finally:
        policy.gate.set()
        loop.close()
    records = loop.telemetry.ticks
    commands = [c for _, c in robot.commands]
    assert len(records) == ticks == len(commands), "the loop must keep ticking through the fault"
    return loop, summary, records, commands


def first_tick_with(records, fault):
    return next(i for i, r in enumerate(records) if fault in r.faults)


def test_schedule_is_absolute_and_missed_deadlines_are_skipped_not_burst():
    class SlowOnce(PointRobot):
        def act(self, action):
            super().act(action)
            if self.steps == 5:
                time.sleep(2.5 * PERIOD)  # a stall in the robot driver

    _, summary, records, _ = run_loop(robot=SlowOnce(dt=PERIOD), ticks=20)
    start = records[0].scheduled
    for r in records:
        assert r.scheduled == pytest.approx(start + r.tick * PERIOD, abs=1e-9)  # no drift
        assert r.started >= r.scheduled
    stall = records[4]
    assert stall.overrun and stall.missed >= 2 and summary["overruns"] >= 1
    # The next tick is the first deadline after the stall: no burst of catch-up ticks.
    after = records[5]
    assert after.tick == stall.tick + 1 + stall.missed
    assert after.started - stall.started > 2.5 * PERIOD
    assert all(b.started - a.started > 0.5 * PERIOD for a, b in zip(records[5:], records[6:])
               if not a.overrun)


@pytest.mark.parametrize("mode", ["continue", "hold", "stop"])
def test_policy_slower_than_the_period(mode, caplog):
    caplog.set_level("WARNING", logger=L.__name__)
    loop, summary, records, commands = run_loop("slow", on_deadline=mode, ticks=40)
    late = first_tick_with(records, L.INFERENCE_LATE)
    assert records[late].faults.count(L.INFERENCE_LATE) == 1 and summary["faults"][L.INFERENCE_LATE] >= 2
    # Each late request is counted; the log says it once, then how many more (the run is < log_repeat_s).
    lines = [m for m in caplog.messages if L.INFERENCE_LATE in m]
    assert lines[0].startswith(f"tick {records[late].tick}: inference_late (request ")
    assert lines[1:] == [f"inference_late [{summary['faults'][L.INFERENCE_LATE] - 1} more identical, suppressed]"]
    # Chunks still arrive, late, and are aligned to now: their stale first rows are dropped.
    assert summary["latency_ms"]["n"] >= 3 and summary["dropped_steps"] >= 3 * summary["latency_ms"]["n"] - 3
    r, cmd, prev = records[late], commands[late], commands[late - 1]
    if mode == "continue":
        assert r.source == "chunk" and not np.allclose(cmd, 0)  # the current chunk keeps playing
    elif mode == "hold":
        assert r.source == "hold" and np.array_equal(cmd, prev)
    else:
        assert r.source == "safe" and np.all(cmd == 0)
    assert all(np.all(np.isfinite(c)) for c in commands)


@pytest.mark.parametrize("mode", ["continue", "stop"])
def test_policy_that_raises(mode):
    _, summary, records, commands = run_loop("raise", on_deadline=mode, ticks=30)
    i = first_tick_with(records, L.POLICY_ERROR)
    assert summary["faults"][L.POLICY_ERROR] >= 3  # it keeps asking, and keeps reporting
    if mode == "stop":
        assert all(np.all(c == 0) for c in commands[i:])  # safe action from the tick of the failure
    else:
        assert records[i].source == "chunk"  # the chunk already received keeps playing ...
        assert all(r.source == "safe" for r in records[i + 8:])  # ... until it runs out (horizon 8)
        assert L.CHUNK_EXHAUSTED in summary["faults"]


def test_policy_that_returns_nan():
    _, summary, records, commands = run_loop("nan", on_deadline="hold", ticks=30)
    i = first_tick_with(records, L.INVALID_CHUNK)
    assert all(np.all(np.isfinite(c)) for c in commands), "NaN must never reach the robot"
    assert records[i].source == "hold" and np.array_equal(commands[i], commands[i - 1])
    assert summary["faults"][L.INVALID_CHUNK] >= 3


def test_stale_observation_gives_the_safe_action_and_no_inference():
    class FrozenCamera(PointRobot):
        """From step 15 the driver keeps returning one old frame (a stuck camera)."""

        def observe(self):
            if self.steps == 15:
                self.frozen = super().observe()
            return self.frozen if self.steps >= 15 else super().observe()

    robot = FrozenCamera(dt=PERIOD)
    loop, summary, records, commands = run_loop(robot=robot, ticks=40, safety=SafetyConfig(max_obs_age_s=0.2))
    i = next(k for k, r in enumerate(records) if STALE_OBSERVATION in r.interventions)
    assert records[i].obs_age_s > 0.2 and records[i - 1].obs_age_s <= 0.2
    assert all(np.all(c == 0) for c in commands[i:])
    assert all(STALE_OBSERVATION in r.interventions for r in records[i:])
    requested_after = [r for r in records[i + 1:] if np.isfinite(r.inference_latency_s)]
    assert len(requested_after) == 0, "stale observations must not be sent for inference"


def test_estop_during_motion_latches_until_reset():
    holder = {}

    def on_tick(rec):  # robust to skipped ticks on a loaded machine: act on the first tick at/after
        if rec.tick >= 10 and "stop" not in holder:
            holder["stop"] = rec.tick
            holder["loop"].estop("operator button")
        if rec.tick >= 25 and "reset" not in holder:
            holder["reset"] = rec.tick
            holder["loop"].reset_estop()

    robot = PointRobot(dt=PERIOD)
    policy = FaultyPolicy(robot.action_spec)
    loop = ControlLoop(robot, policy, LoopConfig(rate_hz=RATE, replan_every=2), on_tick=on_tick)
    holder["loop"] = loop
    try:
        loop.run(max_ticks=40, seed=3)
    finally:
        loop.close()
    records, commands = loop.telemetry.ticks, [c for _, c in robot.commands]
    ticks = [r.tick for r in records]
    stop_at, reset_at = ticks.index(holder["stop"]), ticks.index(holder["reset"])
    assert np.linalg.norm(commands[stop_at]) > 0.01  # it was moving
    assert all(np.all(c == 0) and ESTOP in r.interventions
               for c, r in zip(commands[stop_at + 1:reset_at + 1], records[stop_at + 1:reset_at + 1]))
    assert np.linalg.norm(commands[reset_at + 2]) > 0.01  # motion resumes only after the explicit reset
    assert loop.safety.counts[ESTOP] == reset_at - stop_at


def test_query_storm_during_control():
    robot = PointRobot(dt=PERIOD)
    policy = StandInPolicy(robot.action_spec, horizon=8, period=PERIOD, compute_ms=3, step_ms=4, query_steps=15)
    futures = []

    def on_tick(rec):
        if rec.tick == 3:
            futures.extend(loop.query(robot.observe().images, f"question {i}") for i in range(30))

    cfg = LoopConfig(rate_hz=RATE, replan_every=2, max_pending_queries=30)  # room for the whole storm
    loop = ControlLoop(robot, policy, cfg, on_tick=on_tick)
    try:
        summary = loop.run(max_ticks=50, seed=3)
        answers = [f.result(timeout=30) for f in futures]
    finally:
        loop.close()
    # 30 answers x 15 steps x 4 ms = 1.8 s of decoding; without yielding, control would wait behind it.
    assert [a.text.split("'")[1] for a in answers] == [f"question {i}" for i in range(30)]
    assert sum(a.control_served for a in answers) >= 5
    assert L.INFERENCE_LATE not in summary["faults"], summary
    assert summary["latency_ms"]["n"] >= 20
    assert summary["sources"].get("chunk", 0) >= 45


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("fault", ["die", "hang"])
def test_worker_death_or_hang(fault):
    expected = L.WORKER_DEAD if fault == "die" else L.WORKER_HUNG
    _, summary, records, commands = run_loop(fault, on_deadline="stop", ticks=30, worker_timeout_s=0.2)
    i = first_tick_with(records, expected)
    assert summary["faults"][expected] == 1  # reported when it starts, not every tick
    assert all(np.all(c == 0) for c in commands[i:])
    assert all(r.source == "safe" for r in records[i:])


def test_repeated_invalid_observations_are_counted_exactly_but_logged_rarely(caplog):
    class BrokenSensor(PointRobot):
        """From step 5 on, the state has a NaN on every tick (a failed encoder)."""

        def observe(self):
            obs = super().observe()
            if self.steps >= 5:
                obs.state = np.array(obs.state, np.float32)
                obs.state[1] = np.nan
            return obs

    caplog.set_level("WARNING", logger=L.__name__)
    _, summary, records, commands = run_loop(robot=BrokenSensor(dt=PERIOD), ticks=40, log_repeat_s=0.6)
    invalid = [r for r in records if INVALID_OBSERVATION in r.interventions]
    assert summary["interventions"][INVALID_OBSERVATION] == len(invalid) >= 30  # telemetry counts every tick
    assert all(np.all(c == 0) for c, r in zip(commands, records) if INVALID_OBSERVATION in r.interventions)
    lines = [m.getMessage() for m in caplog.records if "invalid observation" in m.getMessage()]
    span_s = invalid[-1].started - invalid[0].started
    # First at once, then at most one line per 0.6 s, then one closing count at the end of the run.
    assert lines[0].startswith(f"tick {invalid[0].tick}: invalid observation: state: non-finite values")
    assert 2 <= len(lines) <= span_s / 0.6 + 2, lines
    suppressed = sum(int(re.search(r"\[(\d+) (?:identical suppressed|more identical)", m).group(1))
                     for m in lines[1:])
    logged = [m for m in lines if m.startswith("tick ")]  # the closing count line is not an occurrence
    assert lines[len(logged):] == [m for m in lines if "more identical, suppressed" in m]  # at most one, last
    assert len(logged) >= len(lines) - 1
    assert len(logged) + suppressed == len(invalid)  # the log lines account for every occurrence


def test_full_query_queue_is_rejected_and_counted():
    robot = PointRobot(dt=PERIOD)
    policy = StandInPolicy(robot.action_spec, horizon=8, period=PERIOD, compute_ms=2, step_ms=5, query_steps=20)
    futures = []

    def on_tick(rec):
        if rec.tick == 3:
            futures.extend(loop.query(robot.observe().images, f"question {i}") for i in range(7))

    loop = ControlLoop(robot, policy, LoopConfig(rate_hz=RATE, replan_every=2, max_pending_queries=3),
                       on_tick=on_tick)
    try:
        loop.run(max_ticks=30, seed=3)
        outcomes = [f.exception(timeout=30) for f in futures]
        summary = loop.telemetry.summary()  # after every answer is in (some may come after the last tick)
    finally:
        loop.close()
    rejected = [e for e in outcomes if isinstance(e, QueryQueueFull)]
    # One starts decoding at once or shortly after; three wait; the rest are refused with an error.
    assert 3 <= len(rejected) <= 3 + 1 and all("query queue is full" in str(e) for e in rejected)
    assert summary["queries_rejected"] == len(rejected)
    assert summary["queries"] + len(rejected) == 7  # none silently dropped


def test_chunk_shorter_than_latency_plus_replan_warns_once(caplog):
    caplog.set_level("WARNING", logger=L.__name__)

    def run(compute_ms, horizon):
        robot = PointRobot(dt=PERIOD)
        policy = StandInPolicy(robot.action_spec, horizon=horizon, period=PERIOD, compute_ms=compute_ms)
        with ControlLoop(robot, policy, LoopConfig(rate_hz=RATE, replan_every=2)) as loop:
            loop.run(max_ticks=30, seed=0)
            return loop.run(max_ticks=10, reset_robot=False)

    caplog.clear()
    fine = run(compute_ms=1, horizon=8)  # ~1 ms + 100 ms replan << 400 ms of chunk
    assert fine["warnings"] == [] and not [m for m in caplog.messages if "run dry" in m]
    slow = run(compute_ms=150, horizon=4)  # >= 150 ms + 100 ms replan > 200 ms of chunk
    lines = [m for m in caplog.messages if "run dry" in m]
    assert len(lines) == 1, lines  # once per loop, not per request or per run
    assert slow["warnings"] == lines  # and it stays in each run's summary
    assert "chunk 4 steps x 50 ms = 200 ms" in lines[0] and "longer chunk" in lines[0]
    assert "loop.rate_hz" in lines[0] and "faster device" in lines[0]
