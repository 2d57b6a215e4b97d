"""The latest joint angles of one pipeline: a fixed-length ring buffer of named series, for detectors
and displays that look back a few seconds (valgus per rep, instability, locking)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


class AngleHistory:
    """The last ``capacity`` samples of each named angle series (deg) with their times (Unix ns).

    ``append(t_ns, {name: array})`` adds a block; ``window(seconds)`` returns ``(t_ns, {name: array})`` of
    the samples in the last ``seconds`` (oldest first); ``latest()`` the newest value of each series.
    """

    def __init__(self, names: tuple[str, ...], capacity: int) -> None:
        self.names = names
        self.capacity = capacity
        self._t = np.zeros(capacity, np.int64)
        self._v = np.full((len(names), capacity), np.nan)
        self._n = 0  # samples appended in total

    def append(self, t_ns: np.ndarray, angles: Mapping[str, np.ndarray]) -> None:
        t_ns = np.asarray(t_ns, np.int64)[-self.capacity:]
        k = t_ns.size
        if k == 0:
            return
        idx = (self._n + np.arange(k)) % self.capacity
        self._t[idx] = t_ns
        for i, name in enumerate(self.names):
            self._v[i, idx] = np.asarray(angles[name], float)[-k:] if name in angles else np.nan
        self._n += k

    def window(self, seconds: float | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        n = min(self._n, self.capacity)
        idx = (self._n - n + np.arange(n)) % self.capacity
        t = self._t[idx]
        if seconds is not None and n:
            keep = t >= t[-1] - round(seconds * 1e9)
            idx, t = idx[keep], t[keep]
        return t.copy(), {name: self._v[i, idx].copy() for i, name in enumerate(self.names)}

    def latest(self) -> dict[str, float]:
        if self._n == 0:
            return dict.fromkeys(self.names, float("nan"))
        j = (self._n - 1) % self.capacity
        return {name: float(self._v[i, j]) for i, name in enumerate(self.names)}
