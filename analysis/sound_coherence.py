"""Do both microphones of a joint hear the same sound? Short-window coherence of their raw samples.

A joint sound (click, tendon snap, crepitus burst) reaches both sensors of the joint within tens of
microseconds, as the same waveform a few dB apart; the background is each sensor's own (noise floor, muscle
rumble under each sensor, cloth rubbing on each). So at a candidate instant the band-passed samples of the two
microphones are correlated for a joint sound and not for a noise peak, whatever their levels. On recordings the
gateway's clock maps put both streams on one wall clock to within a sample (62.5 us at 16 kHz); live, early in a
session or on a loaded host, the two maps can differ by several ms. :func:`lag_scan` finds that offset on a clear
joint sound (up to +-``search_s``), :class:`analysis.mic_offset.MicOffset` tracks it, and the coherence is then
judged at the tracked offset +-``max_lag`` samples (a wide search would find chance correlation in noise).

:class:`MicHistory` keeps the last ``keep_s`` of each microphone's samples with their wall-clock times;
:func:`coherence` is the normalised cross-correlation of two such windows in a band, the largest over the lags
(1: the same waveform, ~0: independent noise; it spreads by ~1/sqrt(2 B T) around 0 for noise).
:func:`pair_stats` adds what the shared part's spectrum looks like: a cavitation click is a decaying 2-6 kHz tone
(most of its energy within +-500 Hz of one frequency), a crepitus burst mostly broadband noise with a weaker
0.4-3 kHz ringing (ss: 86 % of clicks vs 11 % of crepitus bursts have ``tonality`` >= 0.5 at >= 1.8 kHz).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class CoherenceSettings:
    window_s: float = 0.004  # analysis window around the candidate, s (a click's energy: 0.3-3.5 ms)
    band_hz: tuple[float, float] = (1800.0, 6500.0)  # clicks and bursts' upper band (hum and rumble out)
    # Lags tried around the tracked offset, samples each way (the offset moves between clear sounds: the clock
    # maps slew by up to 0.5 ms/s while they converge).
    max_lag: int = 3
    # Offsets scanned for on a clear sound, s each way: live they are 1-2 ms, but a starved gateway host or sensors
    # started apart (the Bumble simulation once put 40 ms between them) give tens; the scan only runs on a sound
    # both microphones had, so the width costs little and chance matches stay below ``confident``.
    search_s: float = 0.050
    confident: float = 0.8  # a scan this correlated is one sound heard by both: its lag is the offset
    keep_s: float = 0.8  # samples kept per microphone, s (decisions come <= ~0.3 s after the sound)
    tone_band_hz: tuple[float, float] = (400.0, 7000.0)  # where a burst's spectrum is judged for a tone
    tone_halfwidth_hz: float = 500.0  # a decaying click tone is this wide each side of its peak (tau >= 0.3 ms)


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


@dataclass(frozen=True)
class PairStats:
    """What two microphones' windows share: ``coherence`` (see :func:`coherence`); ``tonality``, the fraction
    of the shared power in ``tone_band_hz`` that lies within ``tone_halfwidth_hz`` of its strongest frequency
    ``peak_hz`` (1: one tone, ~0.15: white noise). With one microphone, its own power spectrum stands in for the
    shared one and ``coherence`` is NaN."""

    coherence: float
    tonality: float
    peak_hz: float


@lru_cache(maxsize=8)
def _plan(n: int, rate_hz: float, band_hz: tuple[float, float], tone_band_hz: tuple[float, float],
          halfwidth_hz: float, max_lag: int) -> tuple[np.ndarray, ...]:
    """Window, frequencies, band masks, lag phase matrix and tone-smoothing kernel for windows of ``n`` samples."""
    w = np.hanning(n + 2)[1:-1]
    f = np.fft.rfftfreq(n, 1.0 / rate_hz)
    used = (f >= min(band_hz[0], tone_band_hz[0])) & (f <= max(band_hz[1], tone_band_hz[1]))
    fu = f[used]
    coh = (fu >= band_hz[0]) & (fu <= band_hz[1])
    tone = (fu >= tone_band_hz[0]) & (fu <= tone_band_hz[1])
    lags = np.exp(2j * np.pi * np.outer(np.arange(-max_lag, max_lag + 1), fu) / rate_hz)
    k = max(1, round(halfwidth_hz / (rate_hz / n)))
    return w, used, fu, coh, tone, lags, np.ones(2 * k + 1)


def coherence(a: np.ndarray, b: np.ndarray, rate_hz: float, band_hz: tuple[float, float], max_lag: int) -> float:
    """Largest normalised cross-correlation of ``a`` and ``b`` (same length, Hann-windowed, band-passed by
    zeroing DFT bins) over lags ``-max_lag .. max_lag`` samples; 0 for silent input."""
    return pair_stats(a, b, rate_hz, band_hz, max_lag).coherence


def pair_stats(a: np.ndarray, b: np.ndarray | None, rate_hz: float, band_hz: tuple[float, float], max_lag: int,
               tone_band_hz: tuple[float, float] = (400.0, 7000.0), halfwidth_hz: float = 500.0) -> PairStats:
    """:class:`PairStats` of windows ``a`` and ``b`` (same length; ``b`` None: one microphone)."""
    w, used, f, coh_m, tone_m, lags, kernel = _plan(a.size, float(rate_hz), band_hz, tone_band_hz, halfwidth_hz,
                                                    max_lag)
    fa = np.fft.rfft(a * w)[used]
    if b is None:
        shared, coh = np.abs(fa) ** 2, float("nan")
    else:
        fb = np.fft.rfft(b * w)[used]
        pa, pb = float(np.sum(np.abs(fa[coh_m]) ** 2)), float(np.sum(np.abs(fb[coh_m]) ** 2))
        cross = fa * np.conj(fb)
        aligned = np.real(lags * cross)  # (lags, bins): the cross-spectrum with each lag undone
        r = aligned[:, coh_m].sum(axis=1)
        best = int(np.argmax(r))
        coh = float(r[best] / np.sqrt(pa * pb)) if pa > 0.0 and pb > 0.0 else 0.0
        shared = np.maximum(aligned[best], 0.0)
    p = np.where(tone_m, shared, 0.0)
    total = float(p.sum())
    if total <= 0.0:
        return PairStats(coh, 0.0, float("nan"))
    smooth = np.convolve(p, kernel, mode="same")
    k = int(np.argmax(smooth))
    return PairStats(coh, float(smooth[k] / total), float(f[k]))


@lru_cache(maxsize=8)
def _band_mask(n: int, rate_hz: float, band_hz: tuple[float, float]) -> np.ndarray:
    f = np.fft.rfftfreq(n, 1.0 / rate_hz)
    return (f >= band_hz[0]) & (f <= band_hz[1])


def lag_scan(a: np.ndarray, b: np.ndarray, n: int, rate_hz: float, band_hz: tuple[float, float]) -> tuple[int, float]:
    """Where the middle ``n`` samples of ``a`` are found in ``b``: both ``n + 2 L`` samples over the same span,
    band-passed (DFT bins outside ``band_hz`` zeroed), each ``n``-sample window Hann-weighted. Returns
    ``(lag, r)``, ``lag`` in -L..L samples (``b`` late by ``lag``), ``r`` the normalised correlation there
    (1: the same waveform; 0 for silent input)."""
    m = a.size
    if b.size != m or m < n or (m - n) % 2:
        raise ValueError(f"lag_scan: need two spans of n + 2L samples (n {n}, got {a.size} and {b.size})")
    keep = _band_mask(m, float(rate_hz), band_hz)
    af = np.fft.irfft(np.fft.rfft(a) * keep, m)
    bf = np.fft.irfft(np.fft.rfft(b) * keep, m)
    w2 = np.hanning(n + 2)[1:-1] ** 2
    half = (m - n) // 2
    core = af[half:half + n]
    segs = np.lib.stride_tricks.sliding_window_view(bf, n)  # (2L + 1, n): b at every lag
    num = segs @ (w2 * core)
    den = np.sqrt(float(np.dot(w2, core * core)) * (segs * segs) @ w2)
    r = np.divide(num, den, out=np.zeros_like(num), where=den > 0.0)
    j = int(np.argmax(r))
    return j - half, float(r[j])
