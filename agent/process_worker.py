"""`ProcessWorker`: the inference worker with the policy in a child process (`loop.worker=process`).

Why: a CPU-bound model thread inside the loop's process delays the control tick even with a short GIL
switch interval (benchmarks/RESULTS.md, "Control-loop runtime": the same load in a separate process
cost the tick far less). Here the model runs in a child started with the "spawn" context, which builds
the policy itself from a `PolicyRecipe`, so no torch state is ever pickled.

Same interface and rules as `InferenceWorker` (worker.py): `submit_control` (newest observation wins,
result via `take_control_result`), `submit_query` (a Future of `QueryAnswer`; `QueryQueueFull` beyond
`max_pending_queries` waiting), control first unless a query has waited `query_priority_after_s`,
`alive` / `death` / `busy` / `stalled_for` for the loop's dead and hung checks, `stop()`.

How the parts talk:
- parent -> child: one pipe of requests. A sender thread writes it, so the control thread never blocks
  on a full pipe while the child is busy; an unsent control request is replaced by a newer one.
- child: serves control first, queries FIFO; between a query's decode steps it polls the request pipe
  without blocking and serves a waiting control request there, so control waits at most one step.
- child -> parent: one pipe of results, read by a receiver thread that resolves the Futures and keeps
  the newest control result. Latencies are measured in the parent, so they include the transfers.
- progress: the child writes (busy since, last progress) as two doubles in shared memory, on
  `time.monotonic()`, which is one system-wide clock on Linux, so the parent can compare it with its own.
- death: a child that crashes, is killed or exits closes its pipe ends; the receiver then records why
  (the child's own report, else its exit code) and fails every pending query with `WorkerDied`.
  `stop()` asks the child to end, terminates (then kills) it after a timeout, and reaps it.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import pickle
import signal
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection

import numpy as np

from .policy_recipe import PolicyRecipe
from .protocols import Observation, Policy
from .worker import ControlResult, QueryAnswer, WorkerDied, act_once, refused_query, take_result

log = logging.getLogger(__name__)

BUSY, PROGRESS = 0, 1  # slots of the shared progress clock; BUSY is NaN while the child is idle


class _Stopping(BaseException):
    """Raised in a query's hook when a stop request arrived: ends the query without an answer."""


def _portable(exc: BaseException) -> BaseException:
    """`exc` if it survives pickling, else a RuntimeError that keeps its type name and message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


@dataclass
class _PendingQuery:
    future: Future
    submitted_at: float


class ProcessWorker:
    def __init__(self, recipe: PolicyRecipe, name: str = "uio-robot-inference", max_pending_queries: int = 8,
                 query_priority_after_s: float = 1.0, start_timeout_s: float = 300.0):
        if not isinstance(recipe, PolicyRecipe):
            raise TypeError(f"loop.worker=process builds the policy in a child process and needs a PolicyRecipe "
                            f"(agent/policy_recipe.py), not a built {type(recipe).__name__}")
        if max_pending_queries < 1:
            raise ValueError(f"max_pending_queries must be >= 1, got {max_pending_queries}")
        if query_priority_after_s < 0:
            raise ValueError(f"query_priority_after_s must be >= 0, got {query_priority_after_s}")
        recipe.check_picklable()
        self.recipe, self.name, self.start_timeout_s = recipe, name, start_timeout_s
        self.max_pending_queries = max_pending_queries
        self.query_priority_after_s = query_priority_after_s
        self.queries_rejected = 0
        self.superseded = 0  # control requests replaced before the child started them (parent + child)
        self.death: str | None = None
        ctx = mp.get_context("spawn")
        self._clock = ctx.RawArray("d", [math.nan, 0.0])
        self._child_requests, self._requests = ctx.Pipe(duplex=False)
        self._results, self._child_results = ctx.Pipe(duplex=False)
        self._process = ctx.Process(
            target=_child_main, name=name, daemon=True,
            args=(recipe, self._child_requests, self._child_results, self._clock, query_priority_after_s))
        self._cond = threading.Condition()
        self._seq = self._qid = 0
        self._control: tuple | None = None  # the newest control request not sent yet
        self._outbox: deque[tuple] = deque()  # query messages not sent yet
        self._reset_due = False  # a policy reset to send before the next control request
        self._waiting: dict[int, _PendingQuery] = {}  # submitted, not started by the child
        self._running: dict[int, _PendingQuery] = {}
        self._result: ControlResult | None = None
        self._stopping = False
        self._sender = threading.Thread(target=self._send_loop, name=f"{name}-send", daemon=True)
        self._receiver = threading.Thread(target=self._receive_loop, name=f"{name}-receive", daemon=True)

    # ---- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> ProcessWorker:
        """Start the child and wait until it has built the policy; its build error is raised here."""
        self._process.start()
        self._child_requests.close()  # the child holds these ends now; closing ours lets EOF mean "child gone"
        self._child_results.close()
        try:
            self._await_ready()
        except BaseException:
            self.stop()
            raise
        self._sender.start()
        self._receiver.start()
        return self

    def _await_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while not self._results.poll(0.1):
            if not self._process.is_alive():
                raise WorkerDied(f"inference process exited during start-up (exit code {self._process.exitcode})")
            if time.monotonic() > deadline:
                raise WorkerDied(f"inference process did not build its policy within {self.start_timeout_s:g} s")
        try:
            message = self._results.recv()
        except EOFError:
            raise WorkerDied("inference process exited during start-up") from None
        if message[0] == "failed":
            raise message[1]

    def stop(self, timeout: float = 2.0) -> None:
        """End the child (it abandons a query at its next decode step), terminating it after `timeout`;
        pending queries fail with WorkerDied. Safe to call more than once."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._process.pid is not None:
            if self._sender.ident is None:  # never got going: nobody will send the stop message
                self._process.terminate()
            self._process.join(timeout)
            if self._process.is_alive():
                log.warning("inference process did not stop within %.1f s; terminating it", timeout)
                self._process.terminate()
                self._process.join(1.0)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
        for thread in (self._sender, self._receiver):
            if thread.ident is not None and thread is not threading.current_thread():
                thread.join(timeout)
        self._fail_pending(self.death or "worker stopped")

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def alive(self) -> bool:
        return self.death is None and not self._stopping and self._process.is_alive()

    @property
    def busy(self) -> bool:
        """A policy call (control or query) is running in the child."""
        return not math.isnan(self._clock[BUSY])

    def stalled_for(self, now: float) -> float:
        if math.isnan(self._clock[BUSY]):
            return 0.0
        return max(0.0, now - self._clock[PROGRESS])

    # ---- requests --------------------------------------------------------------------------------------
    def submit_control(self, obs: Observation) -> int:
        """Queue a chunk request for `obs` ahead of all queries; returns its sequence number."""
        with self._cond:
            self._seq += 1
            if self._control is not None:
                self.superseded += 1
            self._control = ("control", self._seq, obs, time.monotonic())
            self._cond.notify_all()
            return self._seq

    def reset_policy(self) -> None:
        """Reset the policy (a new episode) in the child before it serves the next control request; the
        reset message goes out ahead of any control request submitted after this call."""
        with self._cond:
            self._reset_due = True
            self._cond.notify_all()

    def take_control_result(self, timeout: float = 0.0) -> ControlResult | None:
        """The newest finished control result not taken yet, waiting up to `timeout` s for one."""
        return take_result(self, timeout)

    def submit_query(self, images: dict[str, np.ndarray], text: str) -> Future:
        """Ask the policy a question; the Future resolves to a `QueryAnswer` (or the policy's exception).
        When `max_pending_queries` already wait, the Future fails at once with `QueryQueueFull`."""
        with self._cond:
            refused = refused_query(self, not self._stopping and self.death is None, len(self._waiting))
            if refused is not None:
                return refused
            future: Future = Future()
            self._qid += 1
            now = time.monotonic()
            self._waiting[self._qid] = _PendingQuery(future, now)
            self._outbox.append(("query", self._qid, dict(images), str(text), now))
            self._cond.notify_all()
        return future

    @property
    def queries_waiting(self) -> int:
        return len(self._waiting)

    # ---- parent threads --------------------------------------------------------------------------------
    def _send_loop(self) -> None:
        while True:
            with self._cond:
                while self._control is None and not self._outbox and not self._stopping and not self._reset_due:
                    self._cond.wait()
                if self._stopping:
                    message = ("stop",)
                elif self._reset_due:
                    message, self._reset_due = ("reset",), False
                elif self._control is not None:
                    message, self._control = self._control, None
                else:
                    message = self._outbox.popleft()
            try:
                self._requests.send(message)
            except (OSError, ValueError):
                return  # the child is gone; the receiver reports why
            if message[0] == "stop":
                return

    def _receive_loop(self) -> None:
        try:
            while True:
                self._handle(self._results.recv())
        except (EOFError, OSError):
            pass  # the child closed its end: it ended
        if not self._stopping and self.death is None:
            self._process.join(0.5)
            code = self._process.exitcode
            self.death = (f"inference process ended (exit code {code})" if code is None or code >= 0
                          else f"inference process killed by signal {-code}")
        if self.death is not None and not self._stopping:
            log.error("inference worker died: %s", self.death)
        self._fail_pending(self.death or "worker stopped")

    def _handle(self, message: tuple) -> None:
        kind, now = message[0], time.monotonic()
        if kind == "result":
            result, child_superseded = message[1], message[2]
            with self._cond:
                self._result = replace(result, finished_at=now)
                self.superseded += child_superseded
                self._cond.notify_all()
        elif kind == "started":
            with self._cond:
                pending = self._waiting.pop(message[1], None)
                if pending is not None:
                    self._running[message[1]] = pending
            if pending is not None:
                pending.future.set_running_or_notify_cancel()
        elif kind in ("answer", "error"):
            with self._cond:
                pending = self._running.pop(message[1], None)
            if pending is None or pending.future.done():
                return  # cancelled before it started
            if kind == "error":
                pending.future.set_exception(message[2])
            else:
                pending.future.set_result(replace(message[2], latency_s=now - pending.submitted_at))
        elif kind == "died":
            self.death = message[1]

    def _fail_pending(self, why: str) -> None:
        with self._cond:
            pending = list(self._waiting.values()) + list(self._running.values())
            self._waiting, self._running = {}, {}
            self._outbox.clear()
        for query in pending:
            if not query.future.done():
                query.future.set_exception(WorkerDied(why))


# ---- the child process ---------------------------------------------------------------------------------
def _child_main(recipe: PolicyRecipe, requests: Connection, results: Connection, clock,
                query_priority_after_s: float) -> None:
    """Entry point of the spawned child: build the policy, report ready (or why not), serve requests."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the parent's to handle; it stops us
    try:
        policy = recipe.build()
    except BaseException as exc:  # noqa: B036 - any build failure is reported to the parent, then we end
        results.send(("failed", _portable(exc)))
        return
    results.send(("ready",))
    _ChildServer(policy, requests, results, clock, query_priority_after_s).serve()


@dataclass
class _ChildControl:
    seq: int
    obs: Observation
    submitted_at: float


@dataclass
class _ChildQuery:
    qid: int
    images: dict[str, np.ndarray]
    text: str
    submitted_at: float


class _ChildServer:
    """The request loop inside the child; the same scheduling rules as `InferenceWorker._run`."""

    def __init__(self, policy: Policy, requests: Connection, results: Connection, clock,
                 query_priority_after_s: float):
        self.policy, self.requests, self.results, self.clock = policy, requests, results, clock
        self.query_priority_after_s = query_priority_after_s
        self.control: _ChildControl | None = None
        self.queries: deque[_ChildQuery] = deque()
        self.stopping = False
        self.reset_due = False  # reset the policy before serving the next control request
        self.superseded = 0  # since the last result message

    def serve(self) -> None:
        try:
            while True:
                self._drain(block=self.control is None and not self.queries)
                if self.stopping:
                    return
                if self.queries and (self.control is None or self._query_overdue()):
                    self._serve_query(self.queries.popleft())
                elif self.control is not None:
                    control, self.control = self.control, None
                    self._serve_control(control)
        except _Stopping:
            return
        except BaseException as exc:  # noqa: B036 - tell the parent why, then die with the error
            try:
                self.results.send(("died", f"{type(exc).__name__}: {exc}"))
            except OSError:
                pass
            raise

    def _drain(self, block: bool) -> None:
        """Take every request already in the pipe (waiting for one first when `block`)."""
        try:
            if block:
                self._take(self.requests.recv())
            while not self.stopping and self.requests.poll(0):
                self._take(self.requests.recv())
        except EOFError:
            self.stopping = True  # the parent is gone: nobody wants the answers

    def _take(self, message: tuple) -> None:
        kind = message[0]
        if kind == "control":
            if self.control is not None:
                self.superseded += 1
            self.control = _ChildControl(*message[1:])
        elif kind == "query":
            self.queries.append(_ChildQuery(*message[1:]))
        elif kind == "stop":
            self.stopping = True
        elif kind == "reset":
            self.reset_due = True

    def _query_overdue(self) -> bool:
        wait = self.query_priority_after_s
        return wait > 0 and time.monotonic() - self.queries[0].submitted_at >= wait

    def _mark_progress(self) -> None:
        self.clock[PROGRESS] = time.monotonic()  # before BUSY, so the parent never pairs BUSY with an old time
        if math.isnan(self.clock[BUSY]):
            self.clock[BUSY] = self.clock[PROGRESS]

    def _serve_control(self, req: _ChildControl) -> None:
        outer_busy = self.clock[BUSY]
        self._mark_progress()
        started = time.monotonic()
        reset, self.reset_due = self.reset_due, False
        chunk, error = act_once(self.policy, req.obs, reset)
        result = ControlResult(req.seq, chunk, error, req.submitted_at, started, time.monotonic())
        self.results.send(("result", result, self.superseded))
        self.superseded = 0
        self.clock[PROGRESS] = time.monotonic()
        self.clock[BUSY] = outer_busy

    def _serve_query(self, req: _ChildQuery) -> None:
        self.results.send(("started", req.qid))
        self._mark_progress()
        steps = served = 0

        def between_steps() -> None:
            nonlocal steps, served
            steps += 1
            self.clock[PROGRESS] = time.monotonic()
            self._drain(block=False)
            if self.stopping:
                raise _Stopping
            if self.control is not None:
                control, self.control = self.control, None
                served += 1
                self._serve_control(control)

        try:
            text = self.policy.query(req.images, req.text, between_steps=between_steps)
        except Exception as exc:
            self.results.send(("error", req.qid, _portable(exc)))
        else:
            # latency_s is set again in the parent on arrival, so it includes the transfers
            answer = QueryAnswer(str(text), time.monotonic() - req.submitted_at, steps, served)
            self.results.send(("answer", req.qid, answer))
        finally:
            self.clock[BUSY] = math.nan
