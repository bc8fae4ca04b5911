"""Rate-limited logging for conditions that repeat every tick.

A fault such as an invalid observation can recur on every tick; at 20 Hz one line per tick floods the
log and hides everything else. `LogThrottle` logs the first occurrence of a message at once, then at
most one line per `every_s` for the same message, saying how many identical ones it left out. Only the
log is thinned: the loop's telemetry still counts every occurrence.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

_MAX_KEYS = 256  # distinct messages remembered; beyond this, quiet ones are forgotten


class LogThrottle:
    def __init__(self, logger: logging.Logger, every_s: float, clock: Callable[[], float] = time.monotonic):
        if every_s < 0:
            raise ValueError(f"every_s must be >= 0, got {every_s}")
        self.logger, self.every_s, self.clock = logger, every_s, clock
        self._last: dict[str, tuple[float, int]] = {}  # message -> (time last logged, suppressed since)

    def warning(self, message: str, prefix: str = "", key: str | None = None) -> bool:
        """Log `prefix + message` unless the same `key` (default: the message) was logged less than
        `every_s` ago (then count it). Returns whether a line was written."""
        now = self.clock()
        key = message if key is None else key
        last = self._last.get(key)
        if last is not None and now - last[0] < self.every_s:
            self._last[key] = (last[0], last[1] + 1)
            return False
        suppressed = last[1] if last is not None else 0
        note = f" [{suppressed} identical suppressed in the last {now - last[0]:.1f} s]" if suppressed else ""
        self.logger.warning("%s%s%s", prefix, message, note)
        if len(self._last) >= _MAX_KEYS and key not in self._last:
            self._forget_quiet(now)
        self._last[key] = (now, 0)
        return True

    def flush(self) -> None:
        """Report the occurrences still held back (e.g. at the end of a run) and forget all messages."""
        for key, (_, suppressed) in self._last.items():
            if suppressed:
                self.logger.warning("%s [%d more identical, suppressed]", key, suppressed)
        self._last.clear()

    def _forget_quiet(self, now: float) -> None:
        for key, (at, suppressed) in list(self._last.items()):
            if now - at >= self.every_s and not suppressed:
                del self._last[key]
        if len(self._last) >= _MAX_KEYS:  # all recent: drop the oldest rather than grow
            del self._last[min(self._last, key=lambda m: self._last[m][0])]
