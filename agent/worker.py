"""The inference worker: one thread that owns the policy, so model compute overlaps actuation.

Two kinds of request share the one model:
- control requests (`submit_control`): at most one waits at a time; a newer observation replaces a
  waiting one (only the newest observation is worth computing a chunk for). They go first, except that
  a query which has waited `query_priority_after_s` goes before them: when control inference is slower
  than the replan interval a control request is always waiting, and queries would otherwise never run.
  Control then waits for the query's prefill and first decode step, not for its answer (the hook below).
- queries (`submit_query`, VQA/captions): first-in first-out, each answered through a Future. At most
  `max_pending_queries` wait (not counting the one being decoded); one more is rejected at once: its
  Future fails with `QueryQueueFull`, so a query stream faster than the model gets told, instead of
  answers that grow later without limit.

A query runs `policy.query(..., between_steps=hook)`. The hook, called by the policy between decode
steps, runs a waiting control request right there on the worker thread, so a control request waits
for at most one decode step, never for a whole answer. (Consequence for policy authors: `act` may be
called while a `query` is suspended in the hook; keep per-request state such as KV caches apart.)

Health: `alive` is False once the thread has died; `stalled_for(now)` is how long the current policy
call has gone without progress (a call starting, a decode step yielding, a call finishing). The
control loop turns a long stall into a "worker hung" fault; Python cannot kill the thread, but a hung
worker must not stop the loop from ticking.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from .protocols import ActionChunk, Observation, Policy

log = logging.getLogger(__name__)


class WorkerDied(RuntimeError):
    """The worker thread has ended; the request will never be answered."""


class QueryQueueFull(RuntimeError):
    """A query arrived while `max_pending_queries` were already waiting; it was not queued."""


def take_result(worker, timeout: float) -> ControlResult | None:
    """The newest finished control result not taken yet, waiting up to `timeout` s for one. Both workers
    keep it in `_result` under `_cond` and notify when they set it."""
    with worker._cond:
        if timeout > 0:
            worker._cond.wait_for(lambda: worker._result is not None, timeout)
        result, worker._result = worker._result, None
        return result


def refused_query(worker, running: bool, waiting: int) -> Future | None:
    """The admission rule both workers apply (under their lock): a Future already failed with
    `WorkerDied` when the worker is not running, or with `QueryQueueFull` (counted in the worker's
    `queries_rejected`) when `max_pending_queries` already wait; None when the query may be queued."""
    future: Future = Future()
    if not running:
        future.set_exception(WorkerDied(worker.death or "worker is not running"))
    elif waiting >= worker.max_pending_queries:
        worker.queries_rejected += 1
        limit = worker.max_pending_queries
        future.set_exception(QueryQueueFull(f"query queue is full: {waiting} queries are waiting for the model "
                                            f"(loop.max_pending_queries={limit}); ask again later"))
    else:
        return None
    return future


@dataclass
class ControlResult:
    """The outcome of one control request: a chunk, or the error the policy raised."""

    seq: int
    chunk: ActionChunk | None
    error: str | None
    submitted_at: float
    started_at: float
    finished_at: float

    @property
    def latency_s(self) -> float:
        """From submission to result, including time spent waiting for the worker."""
        return self.finished_at - self.submitted_at


@dataclass
class QueryAnswer:
    text: str
    latency_s: float  # from submission to answer
    steps: int  # decode steps the policy yielded at
    control_served: int  # control requests served inside this query's decode


@dataclass
class _Query:
    images: dict[str, np.ndarray]
    text: str
    future: Future
    submitted_at: float


@dataclass
class _Control:
    seq: int
    obs: Observation
    submitted_at: float


def act_once(policy: Policy, obs: Observation, reset: bool) -> tuple[ActionChunk | None, str | None]:
    """One control request as both workers serve it: the episode reset asked for (if any), then `act`;
    a failure becomes an error string, not an exception, so the worker lives on."""
    try:
        if reset:
            policy.reset()
        chunk = policy.act(obs)
        if not isinstance(chunk, ActionChunk):
            raise TypeError(f"policy.act returned {type(chunk).__name__}, not ActionChunk")
        return chunk, None
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


class InferenceWorker:
    def __init__(self, policy: Policy, name: str = "uio-robot-inference", max_pending_queries: int = 8,
                 query_priority_after_s: float = 1.0):
        if max_pending_queries < 1:
            raise ValueError(f"max_pending_queries must be >= 1, got {max_pending_queries}")
        if query_priority_after_s < 0:
            raise ValueError(f"query_priority_after_s must be >= 0, got {query_priority_after_s}")
        self.policy = policy
        self.max_pending_queries = max_pending_queries
        self.query_priority_after_s = query_priority_after_s  # 0 = control always first (queries may starve)
        self.queries_rejected = 0  # queries refused because the queue was full
        self._cond = threading.Condition()
        self._control: _Control | None = None
        self._reset_due = False  # reset the policy before serving the next control request
        self._queries: deque[_Query] = deque()
        self._result: ControlResult | None = None
        self._stopping = False
        self._seq = 0
        self._busy_since: float | None = None
        self._progress_at = 0.0
        self._inline_served = 0
        self.superseded = 0  # control requests replaced by a newer one before they started
        self.step_estimate_s = 0.0  # running estimate of one query decode step (for the pause below)
        # Called on the worker thread between decode steps; the control loop installs one that pauses
        # query decoding around each tick, so the tick never competes with it for the GIL.
        self.pause_hook: Callable[[], None] | None = None
        self.death: str | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # ---- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> InferenceWorker:
        self.ensure_started()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the thread to finish its current call and end; unanswered queries fail with WorkerDied."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        self._fail_waiting_queries("worker stopped")

    def ensure_started(self) -> None:
        with self._cond:
            if self._thread.ident is None:
                self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    @property
    def busy(self) -> bool:
        """A policy call (control or query) is running."""
        return self._busy_since is not None

    def stalled_for(self, now: float) -> float:
        busy = self._busy_since
        return 0.0 if busy is None else max(0.0, now - self._progress_at)

    # ---- requests --------------------------------------------------------------------------------------
    def submit_control(self, obs: Observation) -> int:
        """Queue a chunk request for `obs` ahead of all queries; returns its sequence number."""
        with self._cond:
            self._seq += 1
            if self._control is not None:
                self.superseded += 1
            self._control = _Control(self._seq, obs, time.monotonic())
            self._cond.notify_all()
            return self._seq

    def reset_policy(self) -> None:
        """Reset the policy (a new episode) in the worker thread, just before it serves the next control
        request, so a reset never runs beside the policy's own `act`."""
        with self._cond:
            self._reset_due = True

    def take_control_result(self, timeout: float = 0.0) -> ControlResult | None:
        """The newest finished control result not taken yet, waiting up to `timeout` s for one."""
        return take_result(self, timeout)

    @property
    def control_waiting(self) -> bool:
        return self._control is not None

    def submit_query(self, images: dict[str, np.ndarray], text: str) -> Future:
        """Ask the policy a question; the Future resolves to a `QueryAnswer` (or the policy's exception).
        When `max_pending_queries` already wait, the Future fails at once with `QueryQueueFull`."""
        with self._cond:
            running = not (self._stopping or not self._thread.is_alive() and self._thread.ident is not None)
            refused = refused_query(self, running, len(self._queries))
            if refused is not None:
                return refused
            future: Future = Future()
            self._queries.append(_Query(dict(images), str(text), future, time.monotonic()))
            self._cond.notify_all()
        return future

    @property
    def queries_waiting(self) -> int:
        return len(self._queries)

    # ---- the thread ------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._stopping and self._control is None and not self._queries:
                        self._cond.wait()
                    if self._stopping:
                        return
                    if self._queries and (self._control is None or self._query_overdue()):
                        control, query = None, self._queries.popleft()
                    else:
                        control, query, self._control = self._control, None, None
                if control is not None:
                    self._serve_control(control)
                else:
                    self._serve_query(query)
        except BaseException as exc:  # noqa: B036 - record why the thread died, then let it die
            self.death = f"{type(exc).__name__}: {exc}"
            log.error("inference worker died: %s", self.death)
            raise
        finally:
            self._busy_since = None
            self._fail_waiting_queries(self.death or "worker stopped")

    def _query_overdue(self) -> bool:
        wait = self.query_priority_after_s
        return wait > 0 and time.monotonic() - self._queries[0].submitted_at >= wait

    def _mark_progress(self) -> None:
        now = time.monotonic()
        self._progress_at = now
        if self._busy_since is None:
            self._busy_since = now

    def _serve_control(self, req: _Control) -> None:
        outer_busy = self._busy_since
        self._mark_progress()
        started = time.monotonic()
        reset, self._reset_due = self._reset_due, False
        chunk, error = act_once(self.policy, req.obs, reset)
        if error:
            log.warning("policy.act failed: %s", error)
        result = ControlResult(req.seq, chunk, error, req.submitted_at, started, time.monotonic())
        with self._cond:
            self._result = result
            self._cond.notify_all()
        self._progress_at = time.monotonic()
        self._busy_since = outer_busy

    def _serve_query(self, req: _Query) -> None:
        if not req.future.set_running_or_notify_cancel():
            return
        if self.pause_hook is not None:
            self.pause_hook()  # the first decode step must not run into a tick either
        self._mark_progress()
        steps = 0
        served_before = self._inline_served

        last = time.monotonic()

        def between_steps() -> None:
            nonlocal steps, last
            if threading.current_thread() is not self._thread:
                raise RuntimeError("between_steps must be called on the worker thread, from inside query")
            steps += 1
            now = time.monotonic()
            self.step_estimate_s = max(now - last, 0.8 * self.step_estimate_s)  # quick up, slow down
            self._progress_at = now
            if self.pause_hook is not None:
                self.pause_hook()
                self._progress_at = time.monotonic()
            with self._cond:
                control, self._control = self._control, None
            if control is not None:
                self._inline_served += 1
                self._serve_control(control)
            last = time.monotonic()

        try:
            text = self.policy.query(req.images, req.text, between_steps=between_steps)
        except Exception as exc:
            req.future.set_exception(exc)
        else:
            req.future.set_result(QueryAnswer(str(text), time.monotonic() - req.submitted_at, steps,
                                              self._inline_served - served_before))
        finally:
            self._busy_since = None

    def _fail_waiting_queries(self, why: str) -> None:
        with self._cond:
            waiting, self._queries = list(self._queries), deque()
        for q in waiting:
            if q.future.set_running_or_notify_cancel():
                q.future.set_exception(WorkerDied(why))
