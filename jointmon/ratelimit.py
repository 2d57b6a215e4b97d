"""Rate-limited logging: a flood of identical failures is logged once per interval, with a count."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter

from jointmon.const import WARN_INTERVAL_S


class RateLimitedLog:
    """At most one warning per key every ``interval_s``; the next one says how many were suppressed.

    Thread-safe: writers and network callbacks warn from their own threads.
    """

    def __init__(self, logger: logging.Logger, interval_s: float = WARN_INTERVAL_S) -> None:
        self._logger = logger
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def warning(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -math.inf) < self.interval_s:
                self._suppressed[key] += 1
                return
            self._last[key] = now
            n = self._suppressed.pop(key, 0)
        if n:
            msg, args = msg + " (%d similar warnings suppressed)", (*args, n)
        self._logger.warning(msg, *args)
