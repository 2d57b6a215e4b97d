"""Do both microphones of a joint hear the same sound? Short-window coherence of their raw samples.

A joint sound (click, tendon snap, crepitus burst) reaches both sensors of the joint within tens of
microseconds, as the same waveform a few dB apart; the background is each sensor's own (noise floor, muscle
rumble under each sensor, cloth rubbing on each). So at a candidate instant the band-passed samples of the two
microphones are correlated for a joint sound and not for a noise peak, whatever their levels. The gateway's
clock maps put both streams on one wall clock to within a sample (62.5 us at 16 kHz); lags of +-``max_lag``
samples are tried.

:class:`MicHistory` keeps the last ``keep_s`` of each microphone's samples with their wall-clock times;
:func:`coherence` is the normalised cross-correlation of two such windows in a band, the largest over the lags
(1: the same waveform, ~0: independent noise; it spreads by ~1/sqrt(2 B T) around 0 for noise).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CoherenceSettings:
    window_s: float = 0.004  # analysis window around the candidate, s (a click's energy: 0.3-3.5 ms)
    band_hz: tuple[float, float] = (1800.0, 6500.0)  # clicks and bursts' upper band (hum and rumble out)
    # Lags tried, samples each way: the two sensors' clock maps agree to a sample on recordings, but live, early in
    # a session, they can differ by 1-2 ms (arrival jitter), and then a click reads incoherent and is lost.
    max_lag: int = 40
    keep_s: float = 0.8  # samples kept per microphone, s (decisions come <= ~0.3 s after the sound)


class MicHistory:
    """The last ``keep_s`` of one microphone: blocks of samples with the wall time (ns) of their first sample."""

    def __init__(self, rate_hz: float, keep_s: float) -> None:
        self.rate_hz = float(rate_hz)
        self._keep_ns = round(keep_s * 1e9)
        self._blocks: deque[tuple[int, np.ndarray]] = deque()

    def add(self, t0_ns: int, x: np.ndarray) -> None:
        if x.size:
            self._blocks.append((int(t0_ns), np.asarray(x, float)))
        while len(self._blocks) > 1 and self._end_ns(self._blocks[1]) < self._end_ns(self._blocks[-1]) - self._keep_ns:
            self._blocks.popleft()

    def _end_ns(self, block: tuple[int, np.ndarray]) -> int:
        return block[0] + round(block[1].size * 1e9 / self.rate_hz)

    def window(self, t_ns: int, n: int) -> np.ndarray | None:
        """``n`` consecutive samples from the one nearest ``t_ns`` on; None when they are not all kept (not yet
        arrived, dropped, or across a gap)."""
        step = 1e9 / self.rate_hz
        blocks = list(self._blocks)
        for k, (t0, x) in enumerate(blocks):
            i = round((t_ns - t0) / step)
            if not 0 <= i < x.size:
                continue
            parts, got, nxt = [x[i:i + n]], min(n, x.size - i), t0 + x.size * step
            for t1, y in blocks[k + 1:]:
                if got >= n:
                    break
                if abs(t1 - nxt) > 1.5 * step:  # a gap: the samples are not consecutive
                    return None
                parts.append(y[:n - got])
                got += min(n - got, y.size)
                nxt = t1 + y.size * step
            return np.concatenate(parts) if got >= n else None
        return None


def coherence(a: np.ndarray, b: np.ndarray, rate_hz: float, band_hz: tuple[float, float], max_lag: int) -> float:
    """Largest normalised cross-correlation of ``a`` and ``b`` (same length, Hann-windowed, band-passed by
    zeroing DFT bins) over lags ``-max_lag .. max_lag`` samples; 0 for silent input."""
    n = a.size
    w = np.hanning(n + 2)[1:-1]
    fa, fb = np.fft.rfft(a * w), np.fft.rfft(b * w)
    f = np.fft.rfftfreq(n, 1.0 / rate_hz)
    m = (f >= band_hz[0]) & (f <= band_hz[1])
    fa, fb = fa[m], fb[m]
    pa, pb = float(np.sum(np.abs(fa) ** 2)), float(np.sum(np.abs(fb) ** 2))
    if pa <= 0.0 or pb <= 0.0:
        return 0.0
    lags = np.arange(-max_lag, max_lag + 1)
    cross = fa * np.conj(fb)
    r = np.real(np.exp(2j * np.pi * np.outer(lags, f[m]) / rate_hz) @ cross)
    return float(r.max() / np.sqrt(pa * pb))
