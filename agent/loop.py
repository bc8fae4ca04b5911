"""The fixed-rate control loop: newest observation in, one safe command out, every period.

Scheduling. Tick k is due at `start + k * period` on `time.monotonic()` (absolute deadlines, so errors
never accumulate into drift). The loop sleeps until ~`spin_s` before the deadline, then busy-waits the
rest. A tick whose work runs past the next deadline is an overrun; the deadlines it swallowed are
skipped, never caught up with a burst of ticks, and counted as missed.

Each tick: check the worker's health, take a finished chunk if one arrived, read the newest observation,
send it for inference when a replan is due (every `replan_every` ticks, or when nothing covers now),
pick the command due at the tick's scheduled time, pass it through the safety filter, send it, record.

Same-tick inference (`loop.act_wait_s`, 0 = off). A tick that sends a request waits up to that long for
its chunk, so the tick's command is row 0 of a chunk computed from the observation the tick just read,
as in lock step. A request that misses the wait is taken when it arrives, like any late chunk. The wait
must leave the tick room for its own work (checked: < 0.95 x the period); the thread worker's query
decoding does not pause for a tick that is waiting for control.

Chunk tracking (`loop.track_chunks`, opt-in). For the action dims a robot declares as per-tick
increments of its state (`robot.increments`; the tabletop's dx, dy, dz, dyaw), an arriving chunk becomes
a path of absolute targets anchored at the state its request saw, and each tick commands the step from
the measured state to the target due now (agent/tracking.py). A chunk that arrives late then still leads
where the policy meant, instead of replaying increments from wherever the arm is.

Deadline policy (`LoopConfig.on_deadline`). A *fault* is any of: inference late (a request not answered
by the tick the next one is due), inference failed (the policy raised, or returned a chunk of the wrong
shape or with NaN/inf), the worker dead, or the worker hung (no progress for `worker_timeout_s`).
Faults are logged and recorded on the tick they are detected; a fault lasts until a valid chunk arrives
(dead/hung: while the condition holds). Separately, the chunk may *run out* (no chunk covers now).
- `continue`: on a fault keep executing the current chunk at its schedule; when no chunk covers now
  (ran out, or none yet), send the safe action. Best when chunks are long and the model is occasionally slow.
- `hold`: from the tick a fault is detected, or the chunk runs out, repeat the last command that was sent
  (after filtering) until a valid chunk arrives; the safe action when nothing was sent yet. For
  position-controlled robots, where repeating a target means staying put.
- `stop`: from the tick a fault is detected, or the chunk runs out, send the safe action until a valid
  chunk arrives. The most conservative choice.
In all three the loop keeps ticking; only `request_stop()`, `max_ticks`, or the robot reporting the end
of the episode end a run. The safety filter (e-stop, staleness, NaN) applies after this choice.

Logging: every fault is counted on its tick; the log line of a repeated identical one is rate-limited
(`loop.log_repeat_s`). After the first few answered requests the loop warns once if a chunk cannot last
until the next one arrives (latency p50 + replan interval > horizon x period).
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from .chunking import ChunkExecutor
from .config import ConfigError, LoopConfig, SafetyConfig
from .log_throttle import LogThrottle
from .policy_recipe import PolicyRecipe
from .protocols import ActionChunk, InvalidObservation, Observation, Policy, Robot
from .recording import EpisodeRecorder
from .safety import INVALID_OBSERVATION, SafetyFilter, is_stale
from .telemetry import Telemetry, TickRecord
from .tracking import ChunkTracker
from .worker import ControlResult, InferenceWorker, QueryQueueFull

log = logging.getLogger(__name__)

INFERENCE_LATE = "inference_late"
POLICY_ERROR = "policy_error"
INVALID_CHUNK = "invalid_chunk"
CHUNK_EXHAUSTED = "chunk_exhausted"
WORKER_DEAD = "worker_dead"
WORKER_HUNG = "worker_hung"
ROBOT_ERROR = "robot_error"
LATENCY_CHECK_AFTER = 5  # successful control requests before their latency is compared with the chunk length


def wait_until(deadline: float, spin_s: float, interrupt: threading.Event) -> None:
    """Sleep (interruptibly) until `spin_s` before `deadline`, then spin until it."""
    remaining = deadline - time.monotonic()
    if remaining > spin_s and interrupt.wait(remaining - spin_s):
        return
    while time.monotonic() < deadline and not interrupt.is_set():
        pass


def make_worker(policy: Policy | PolicyRecipe, cfg: LoopConfig):
    """The started inference worker that `cfg.worker` names: a thread in this process (a recipe is built
    here), or a child process that builds the policy from its recipe (process_worker.py)."""
    limits = dict(max_pending_queries=cfg.max_pending_queries, query_priority_after_s=cfg.query_priority_after_s)
    if cfg.worker == "process":
        from .process_worker import ProcessWorker

        return ProcessWorker(policy, **limits).start()
    if cfg.worker != "thread":
        raise ConfigError(f"config loop.worker={cfg.worker!r}: must be thread|process")
    return InferenceWorker(policy.build() if isinstance(policy, PolicyRecipe) else policy, **limits).start()


class ControlLoop:
    """Drives `robot` with `policy` at `loop_cfg.rate_hz`; see the module docstring for the guarantees.

    The policy is owned by the worker `loop_cfg.worker` picks (`make_worker`): an `InferenceWorker` thread,
    or a `ProcessWorker` child process, which needs `policy` as a `PolicyRecipe`. `query()` asks it
    questions while control runs. Call `close()` (or use `with`) to stop the worker.
    """

    def __init__(
        self,
        robot: Robot,
        policy: Policy | PolicyRecipe,
        loop_cfg: LoopConfig | None = None,
        safety_cfg: SafetyConfig | None = None,
        recorder: EpisodeRecorder | None = None,
        on_tick: Callable[[TickRecord], None] | None = None,
    ):
        self.robot, self.cfg = robot, loop_cfg or LoopConfig()
        self.period = 1.0 / self.cfg.rate_hz
        self.safety = SafetyFilter(robot.action_spec, safety_cfg or SafetyConfig(), self.period,
                                   safe_action=getattr(robot, "safe_action", None))
        self.worker = make_worker(policy, self.cfg)
        self._log = LogThrottle(log, self.cfg.log_repeat_s)
        self._latencies: list[float] | None = []  # control latencies until the chunk-length check ran (once)
        self.warnings: list[str] = []  # standing problems with the setup, repeated in every run's summary
        self.chunks = ChunkExecutor(self.cfg.temporal_ensemble, self.cfg.ensemble_decay)
        increments = getattr(robot, "increments", None)  # robots that declare none are played as given
        self.tracker = ChunkTracker(increments) if self.cfg.track_chunks and increments else None
        self.telemetry = Telemetry(self.cfg.rate_hz)
        self.recorder, self.on_tick = recorder, on_tick
        self._stop = threading.Event()
        self._schedule = threading.Condition()
        self._next_tick = (0, float("inf"))  # (index, scheduled time) of the tick being waited for
        self._ticks_done = -1
        if self.cfg.pause_queries_near_tick and isinstance(self.worker, InferenceWorker):  # a GIL matter only
            self.worker.pause_hook = self._pause_near_tick

    # ---- public API ------------------------------------------------------------------------------------
    def query(self, images: dict[str, np.ndarray], text: str) -> Future:
        """Ask the model a question beside control; resolves to a `worker.QueryAnswer`."""
        future = self.worker.submit_query(images, text)
        future.add_done_callback(self._record_query)
        return future

    def request_stop(self) -> None:
        """End the current run after the tick in progress (thread-safe)."""
        self._stop.set()

    def estop(self, reason: str = "operator") -> None:
        """Engage the e-stop latch: every following command is the safe action until `reset_estop()`."""
        self.safety.estop.trigger(reason)

    def reset_estop(self) -> None:
        self.safety.estop.reset()

    def reset_policy(self) -> None:
        """A new episode for the policy (frame history, replay position): done by the worker, thread or
        process, before the next control request."""
        self.worker.reset_policy()

    def close(self) -> None:
        self.worker.stop()

    def __enter__(self) -> ControlLoop:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- the run ---------------------------------------------------------------------------------------
    def run(self, max_ticks: int | None = None, reset_robot: bool = True, seed: int | None = None) -> dict:
        """Tick until told to stop, `max_ticks` ticks ran (0/None: `cfg.max_ticks`, 0 = no limit), or the
        episode ends. Returns the telemetry summary."""
        limit = max_ticks if max_ticks else self.cfg.max_ticks
        self._stop.clear()
        if reset_robot:
            self.robot.reset(seed=seed)
        self.safety.reset()
        if reset_robot:
            self.chunks.reset()
        self.telemetry = Telemetry(self.cfg.rate_hz)
        self.telemetry.warnings = self.warnings
        self._inflight: tuple[int, int, np.ndarray] | None = None  # (seq, tick submitted, state it saw)
        self._last_request_tick = -(10**9)
        self._fault: str | None = None  # lasts until a valid chunk arrives
        self._worker_problem: str | None = None
        self._had_chunk = self._exhausted = False
        self._last_sent: np.ndarray | None = None
        episode = self.recorder.start_episode(self._episode_meta()) if self.recorder else None
        old_switch = sys.getswitchinterval()
        if self.cfg.gil_switch_interval_s > 0:
            # Python hands the GIL between threads only every switch interval (5 ms by default): a model
            # thread running Python code would otherwise delay the tick by up to that much.
            sys.setswitchinterval(self.cfg.gil_switch_interval_s)
        try:
            self._run_schedule(limit, episode)
        except BaseException:
            if episode is not None:
                episode.abort()
            raise
        finally:
            sys.setswitchinterval(old_switch)
            self._log.flush()
        summary = self.telemetry.summary()
        if episode is not None:
            episode.finish(summary, success=bool(self.robot.is_success()))
        return summary

    def _run_schedule(self, limit: int, episode) -> None:
        period, start, k, done = self.period, time.monotonic(), 0, 0
        while not self._stop.is_set() and (not limit or done < limit):
            scheduled = start + k * period
            self._next_tick = (k, scheduled)
            wait_until(scheduled, self.cfg.spin_s, self._stop)
            if self._stop.is_set():
                break
            started = time.monotonic()
            rec = TickRecord(k, scheduled, started)
            obs, command, planned = self._tick(rec)
            if episode is not None:
                episode.add(rec, obs, planned, command)
            end = time.monotonic()
            rec.work_s = end - started
            k += 1
            if end > start + k * period:
                rec.overrun = True
                first_future = math.floor((end - start) / period) + 1
                rec.missed, k = first_future - k, first_future
            with self._schedule:
                self._ticks_done = rec.tick
                self._schedule.notify_all()
            self.telemetry.add_tick(rec)
            done += 1
            if self.on_tick is not None:
                self.on_tick(rec)
            if self.robot.is_done():
                break

    def _tick(self, rec: TickRecord) -> tuple[Observation | None, np.ndarray, np.ndarray | None]:
        self._check_worker(rec)
        result = self.worker.take_control_result()
        if result is not None:
            self._accept(result, rec)
        obs, obs_problem = self._observe(rec)
        if self._maybe_request(rec, obs, obs_problem) and self.cfg.act_wait_s > 0:
            # same-tick inference: this tick's command comes from the observation just sent, if in time
            result = self.worker.take_control_result(
                timeout=max(0.0, rec.started + self.cfg.act_wait_s - time.monotonic()))
            if result is not None:
                self._accept(result, rec)
        planned = self.chunks.action_at(rec.scheduled)
        if planned is None and self._had_chunk and not self._exhausted:
            self._exhausted = True
            self._note(rec, CHUNK_EXHAUSTED)
        if planned is not None and self.tracker is not None:  # a target on the path: step to it from here
            planned = None if obs is None else self.tracker.step(planned, obs.state)
        action, rec.source = self._choose(planned)
        filtered = self.safety.filter(action, obs, rec.started, obs_problem=obs_problem)
        rec.interventions = filtered.reasons
        if filtered.reasons and rec.source != "safe" and np.array_equal(filtered.action, self.safety.safe_action):
            rec.source = "safe"
        try:
            self.robot.act(filtered.action)
        except Exception as exc:
            self._note(rec, ROBOT_ERROR, f"{type(exc).__name__}: {exc}")
        self._last_sent = filtered.action
        return obs, filtered.action, planned

    # ---- tick steps ------------------------------------------------------------------------------------
    def _note(self, rec: TickRecord, fault: str, detail: str = "", key: str | None = None) -> None:
        """Record a fault on this tick and log it; repeats of the same line (or `key`) are rate-limited."""
        rec.faults.append(fault)  # counted on every tick; only the log line is rate-limited
        self._log.warning(fault + (f" ({detail})" if detail else ""), prefix=f"tick {rec.tick}: ", key=key)

    def _check_worker(self, rec: TickRecord) -> None:
        if not self.worker.alive:
            problem = WORKER_DEAD
        elif self.worker.stalled_for(rec.started) > self.cfg.worker_timeout_s:
            problem = WORKER_HUNG
        else:
            problem = None
        if problem is not None and problem != self._worker_problem:
            self._note(rec, problem, self.worker.death or "")
        self._worker_problem = problem

    def _accept(self, result: ControlResult, rec: TickRecord) -> None:
        seen = self._inflight[2] if self._inflight is not None else None
        self._inflight = None
        rec.inference_latency_s = result.latency_s
        if result.error is not None:
            self._fault = POLICY_ERROR
            self._note(rec, POLICY_ERROR, result.error)
            return
        problem = self._chunk_problem(result.chunk)
        if problem is not None:
            self._fault = INVALID_CHUNK
            self._note(rec, INVALID_CHUNK, problem)
            return
        chunk = result.chunk
        if self.tracker is not None:
            if seen is None:  # answers a request of an earlier run: nothing to anchor it to
                return
            chunk = self.tracker.anchor(chunk, seen)
        self.telemetry.dropped_steps += self.chunks.add(chunk, rec.scheduled)
        self._fault, self._had_chunk, self._exhausted = None, True, False
        self._check_chunk_length(result)

    def _check_chunk_length(self, result: ControlResult) -> None:
        """Once per loop, after a few requests: warn when a chunk runs out before the next one can arrive.
        The next request goes out `replan_every` ticks after this one and takes about the median latency,
        so the chunk must cover at least that: horizon x period >= latency p50 + replan interval."""
        if self._latencies is None:
            return
        self._latencies.append(result.latency_s)
        if len(self._latencies) < LATENCY_CHECK_AFTER:
            return
        p50 = float(np.median(self._latencies))
        self._latencies = None  # checked: no more samples, no second warning
        replan_s, horizon = self.cfg.replan_every * self.period, result.chunk.horizon
        covers_s = horizon * result.chunk.period
        if p50 + replan_s <= covers_s:
            return
        message = (
            f"action chunks run dry: control inference latency p50 {p50 * 1e3:.0f} ms + replan interval "
            f"{replan_s * 1e3:.0f} ms (loop.replan_every={self.cfg.replan_every} at {self.cfg.rate_hz:g} Hz) > "
            f"chunk {horizon} steps x {result.chunk.period * 1e3:.0f} ms = {covers_s * 1e3:.0f} ms, so the robot "
            f"gets the fallback command between chunks. Fix one of: a policy with a longer chunk "
            f"(> {math.ceil((p50 + replan_s) / result.chunk.period)} steps), a lower loop.rate_hz, a smaller "
            f"loop.replan_every, or a faster device for the model.")
        self.warnings.append(message)
        log.warning("%s", message)

    def _chunk_problem(self, chunk: ActionChunk) -> str | None:
        dim = self.robot.action_spec.dim
        if chunk.actions.shape[1] != dim:
            return f"chunk has {chunk.actions.shape[1]} action dims, robot has {dim}"
        if not np.all(np.isfinite(chunk.actions)):
            return "chunk contains NaN or inf"
        if not math.isfinite(chunk.start_time):
            return f"chunk start_time is {chunk.start_time}"
        return None

    def _observe(self, rec: TickRecord) -> tuple[Observation | None, str | None]:
        try:
            obs = self.robot.observe().validate(self.robot.state_spec.dim)
        except InvalidObservation as exc:  # counted as a safety intervention on every tick
            self._log.warning(f"invalid observation: {exc}", prefix=f"tick {rec.tick}: ")
            return None, INVALID_OBSERVATION
        except Exception as exc:
            self._note(rec, ROBOT_ERROR, f"observe: {type(exc).__name__}: {exc}")
            return None, INVALID_OBSERVATION
        rec.obs_age_s = rec.started - obs.timestamp
        return obs, None

    def _maybe_request(self, rec: TickRecord, obs: Observation | None, obs_problem: str | None) -> bool:
        """Send `obs` for inference when a replan is due; True when a request went out on this tick."""
        if self._inflight is not None:
            seq, tick, _ = self._inflight
            if rec.tick - tick >= self.cfg.replan_every and self._fault != INFERENCE_LATE:
                self._fault = INFERENCE_LATE
                # the detail differs per request; a model slower than the replan interval repeats it each time
                self._note(rec, INFERENCE_LATE, f"request {seq} from tick {tick}", key=INFERENCE_LATE)
            return False
        due = rec.tick - self._last_request_tick >= self.cfg.replan_every or self.chunks.remaining_at(
            rec.scheduled) == 0
        usable = (obs is not None and obs_problem is None
                  and not is_stale(obs.timestamp, rec.started, self.safety.cfg.max_obs_age_s))
        if due and usable and self._worker_problem is None:
            self._inflight = (self.worker.submit_control(obs), rec.tick, obs.state.copy())
            self._last_request_tick = rec.tick
            return True
        return False

    def _choose(self, planned: np.ndarray | None) -> tuple[np.ndarray | None, str]:
        """Apply the deadline policy: the command to filter (None = safe action) and where it came from."""
        mode = self.cfg.on_deadline
        trouble = self._fault is not None or self._worker_problem is not None
        if planned is not None and (not trouble or mode == "continue"):
            return planned, "chunk"
        if mode == "hold" and self._last_sent is not None:
            return self._last_sent, "hold"
        return None, "safe"

    # ---- helpers ---------------------------------------------------------------------------------------
    def _pause_near_tick(self) -> None:
        """On the worker thread, between query decode steps: if the next step could run into the coming
        tick, wait until that tick is done. Python lets only one thread run at a time, so a decode step
        overlapping the tick would stretch it; pausing costs the query at most one tick's work."""
        if self.worker.control_waiting:  # a tick may be waiting for it (loop.act_wait_s): serve it first
            return
        k, scheduled = self._next_tick
        margin = self.worker.step_estimate_s + self.cfg.spin_s + 0.0005
        if time.monotonic() + margin < scheduled:
            return
        with self._schedule:
            self._schedule.wait_for(lambda: self._ticks_done >= k or self._stop.is_set(), timeout=2 * self.period)

    def _record_query(self, future: Future) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is None:
            self.telemetry.add_query(future.result().latency_s)
        elif isinstance(error, QueryQueueFull):
            self.telemetry.queries_rejected += 1

    def _episode_meta(self) -> dict:
        spec = self.robot.action_spec
        return {"rate_hz": self.cfg.rate_hz, "replan_every": self.cfg.replan_every,
                "on_deadline": self.cfg.on_deadline, "track_chunks": self.tracker is not None,
                "action_names": list(spec.names),
                "state_names": list(self.robot.state_spec.names)}
