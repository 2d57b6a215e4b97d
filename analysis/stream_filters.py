"""Small streaming building blocks shared by the kinematic detectors (valgus, instability, ROM).

Every block carries its state explicitly (the ``scipy.signal.lfilter(..., zi=...)`` pattern), so a signal cut
into frames gives exactly the output of the whole signal.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter, savgol_coeffs


class SavgolStream:
    """Causal Savitzky-Golay smoothing or differentiation of a uniformly sampled stream.

    ``window`` samples (odd), polynomial ``order``, derivative ``deriv`` (0 = smoothed value). Output sample k is
    the estimate at input sample ``k - delay`` (``delay = window // 2``); the first ``delay`` outputs are warm-up
    values (the filter starts from the first sample held constant). Units: input unit per second^deriv.
    """

    def __init__(self, window: int, order: int, deriv: int = 0, rate_hz: float = 200.0) -> None:
        if window % 2 == 0 or window < order + 1:
            raise ValueError(f"window must be odd and > order, got {window}")
        # savgol_coeffs with use="conv" gives coefficients for np.convolve; lfilter is a convolution too.
        self.b = savgol_coeffs(window, order, deriv=deriv, delta=1.0 / rate_hz, use="conv")
        self.delay = window // 2
        self._zi: np.ndarray | None = None

    def process(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if x.size == 0:
            return x.copy()
        if self._zi is None:
            # Steady state for a constant input equal to the first sample: no start-up transient.
            self._zi = np.zeros(self.b.size - 1)
            self._zi = lfilter(self.b, [1.0], np.full(self.b.size - 1, x[0]), zi=self._zi)[1]
        y, self._zi = lfilter(self.b, [1.0], x, zi=self._zi)
        return y


class DelayLine:
    """Delays a stream by ``n`` samples (timestamps, raw values to align with :class:`SavgolStream` output).

    The first ``n`` outputs repeat the first input sample.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self._buf: np.ndarray | None = None

    def process(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.size == 0:
            return x.copy()
        if self._buf is None:
            self._buf = np.full(self.n, x[0], dtype=x.dtype)
        both = np.concatenate((self._buf, x))
        self._buf = both[both.size - self.n:] if self.n else both[:0]
        return both[: x.size]


class History:
    """The last ``keep`` samples of several aligned 1-D arrays (a sliding look-back/look-ahead buffer).

    ``start`` is the absolute sample index of ``data[name][0]``.
    """

    def __init__(self, names: tuple[str, ...], keep: int) -> None:
        self.keep = keep
        self.start = 0
        self.data: dict[str, np.ndarray] = {n: np.empty(0) for n in names}

    @property
    def end(self) -> int:
        """Absolute index one past the newest sample."""
        return self.start + next(iter(self.data.values())).size

    def append(self, **arrays: np.ndarray) -> None:
        """Append aligned samples; nothing is dropped until :meth:`trim`."""
        for n, a in arrays.items():
            self.data[n] = np.concatenate((self.data[n], a))

    def trim(self, needed_from: int | None = None) -> None:
        """Drop samples older than the last ``keep`` ones, but none from absolute index ``needed_from`` on."""
        cut = self.end - self.keep
        if needed_from is not None:
            cut = min(cut, needed_from)
        drop = max(0, cut - self.start)
        if drop:
            self.data = {n: a[drop:] for n, a in self.data.items()}
            self.start += drop

    def window(self, name: str, a: int, b: int) -> np.ndarray:
        """Samples with absolute indices in [a, b) that are still held."""
        lo, hi = max(a - self.start, 0), max(min(b - self.start, self.data[name].size), 0)
        return self.data[name][lo:hi]


def rising_edges(above: np.ndarray, prev: bool) -> np.ndarray:
    """Indices where the boolean ``above`` becomes True (``prev``: its value just before ``above[0]``)."""
    a = np.concatenate(([prev], above)).astype(np.int8)
    return np.flatnonzero(np.diff(a) == 1)
