"""Per-tick timing records and the end-of-run summary (a table for people, the same numbers as JSON).

Definitions (all on the monotonic clock):
- jitter: actual tick start - scheduled start (>= 0; the schedule is start + k * period).
- work: time from tick start to the command being sent and recorded.
- observation age: tick start - the observation's timestamp.
- inference latency: control request submitted -> chunk available, recorded on the tick it arrives.
- overrun: a tick whose work ran past the next deadline; the deadlines it swallowed are "missed"
  (skipped, never caught up with a burst).
- query latency: query submitted -> answer.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from uio_robot.common.atomic import atomic_write_json


@dataclass
class TickRecord:
    tick: int  # index on the schedule (skipped deadlines leave gaps)
    scheduled: float
    started: float
    work_s: float = 0.0
    obs_age_s: float = float("nan")
    inference_latency_s: float = float("nan")  # a chunk arrived on this tick
    overrun: bool = False
    missed: int = 0  # deadlines skipped after this tick
    source: str = "safe"  # where the command came from: chunk | hold | safe
    faults: list[str] = field(default_factory=list)  # runtime faults seen on this tick
    interventions: list[str] = field(default_factory=list)  # safety filter reasons

    @property
    def jitter_s(self) -> float:
        return self.started - self.scheduled


def _percentiles(values_s: list[float], qs: tuple[int, ...]) -> dict[str, float | None]:
    v = np.asarray([x for x in values_s if np.isfinite(x)], np.float64) * 1e3
    out: dict[str, float | None] = {f"p{q}": (round(float(np.percentile(v, q)), 3) if v.size else None)
                                    for q in qs}
    out["max"] = round(float(v.max()), 3) if v.size else None
    out["n"] = int(v.size)
    return out


class Telemetry:
    def __init__(self, rate_hz: float):
        self.rate_hz = rate_hz
        self.ticks: list[TickRecord] = []
        self.query_latencies_s: list[float] = []
        self.queries_rejected = 0  # refused at once because the query queue was full
        self.dropped_steps = 0
        self.warnings: list[str] = []  # problems with the setup found while running (logged once)

    def add_tick(self, record: TickRecord) -> None:
        self.ticks.append(record)

    def add_query(self, latency_s: float) -> None:
        self.query_latencies_s.append(latency_s)

    def summary(self) -> dict:
        """All numbers of the run as a JSON-ready dict (times in milliseconds)."""
        t = self.ticks
        span = t[-1].started - t[0].started if len(t) > 1 else 0.0
        return {
            "target_rate_hz": self.rate_hz,
            "rate_hz": round((len(t) - 1) / span, 3) if span > 0 else None,
            "ticks": len(t),
            "overruns": sum(r.overrun for r in t),
            "missed_deadlines": sum(r.missed for r in t),
            "latency_ms": _percentiles([r.inference_latency_s for r in t], (50, 90, 99)),
            "jitter_ms": _percentiles([r.jitter_s for r in t], (50, 99)),
            "tick_work_ms": _percentiles([r.work_s for r in t], (50, 99)),
            "obs_age_ms": _percentiles([r.obs_age_s for r in t], (50, 99)),
            "query_latency_ms": _percentiles(self.query_latencies_s, (50, 99)),
            "queries": len(self.query_latencies_s),
            "queries_rejected": self.queries_rejected,
            "sources": dict(Counter(r.source for r in t)),
            "faults": dict(Counter(f for r in t for f in r.faults)),
            "interventions": dict(Counter(i for r in t for i in r.interventions)),
            "dropped_steps": self.dropped_steps,
            "warnings": list(self.warnings),
        }


def _fmt(stats: dict, keys: tuple[str, ...]) -> str:
    return "  ".join(f"{k} {'-' if stats.get(k) is None else format(stats[k], '.2f')}" for k in keys)


def format_table(s: dict) -> str:
    """The summary as an aligned text table."""
    rows = [
        ("rate", f"{s['rate_hz'] if s['rate_hz'] is not None else '-'} Hz (target {s['target_rate_hz']:.4g} Hz)"),
        ("ticks", str(s["ticks"])),
        ("overruns", f"{s['overruns']} (missed deadlines {s['missed_deadlines']})"),
        ("inference latency ms", _fmt(s["latency_ms"], ("p50", "p90", "p99", "max")) + f"  n {s['latency_ms']['n']}"),
        ("tick jitter ms", _fmt(s["jitter_ms"], ("p50", "p99", "max"))),
        ("tick work ms", _fmt(s["tick_work_ms"], ("p50", "p99", "max"))),
        ("observation age ms", _fmt(s["obs_age_ms"], ("p50", "p99", "max"))),
        ("query latency ms", _fmt(s["query_latency_ms"], ("p50", "p99", "max")) + f"  n {s['queries']}"
         + f"  rejected {s['queries_rejected']}"),
        ("commands from", ", ".join(f"{k} {v}" for k, v in sorted(s["sources"].items())) or "-"),
        ("faults", ", ".join(f"{k} {v}" for k, v in sorted(s["faults"].items())) or "none"),
        ("interventions", ", ".join(f"{k} {v}" for k, v in sorted(s["interventions"].items())) or "none"),
        ("stale chunk steps dropped", str(s["dropped_steps"])),
    ]
    rows += [("warning", w) for w in s["warnings"]]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def write_json(summary: dict, path: str | os.PathLike) -> None:
    """Write the summary atomically."""
    atomic_write_json(path, summary)
