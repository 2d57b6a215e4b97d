"""Rate-limited logging: a flood of identical failures is logged once per interval, with a count."""

from __future__ import annotations

import logging
import time

from jointmon.const import WARN_INTERVAL_S


class RateLimitedLog:
    """Logs a message per key at most once every ``interval_s``, reporting how many were suppressed."""

    def __init__(self, logger: logging.Logger, interval_s: float = WARN_INTERVAL_S) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e18) >= self._interval_s:
            n = self._suppressed.pop(key, 0)
            suffix = f" ({n} more like this suppressed)" if n else ""
            self._logger.warning(msg + suffix, *args)
            self._last[key] = now
        else:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
