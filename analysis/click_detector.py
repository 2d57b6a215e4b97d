"""Transient (click) detector for the contact-microphone stream; streaming, state carried.

Why this shape: a cavitation click is a broadband transient of a few ms, while movement noise
on a contact microphone (muscle rumble, cloth) sits mostly below ~1 kHz. So: high-pass,
short-time energy (0.5 ms envelope), and a detection when that energy rises ``threshold_db``
above a slowly tracked noise floor. The floor is tracked in the log domain (a geometric
mean), so a click of a few ms barely moves it while slow changes in background are followed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import signal

_EPS = 1e-20


@dataclass(frozen=True)
class ClickDetectorSettings:
    rate_hz: float = 16000.0
    highpass_hz: float = 1000.0
    envelope_tau_s: float = 0.0005
    floor_tau_s: float = 1.0
    threshold_db: float = 12.0
    refractory_s: float = 0.05
    peak_window_s: float = 0.005  # magnitude = max energy above floor in this window after onset
    warmup_s: float = 0.25  # the floor needs this long to settle before detections count


@dataclass(frozen=True, slots=True)
class Detection:
    index: int  # sample index of the onset since the stream started
    magnitude_db: float  # peak short-time energy above the noise floor


@dataclass
class _Pending:
    index: int
    end: int
    peak_db: float


@dataclass
class ClickDetector:
    """``process(x)`` takes the next block of samples (full-scale units) and returns the detections
    whose peak window is complete. Results do not depend on how the signal is cut into blocks."""

    settings: ClickDetectorSettings = field(default_factory=ClickDetectorSettings)

    def __post_init__(self) -> None:
        s = self.settings
        self._sos = signal.butter(4, s.highpass_hz, "highpass", fs=s.rate_hz, output="sos")
        self._zi = np.zeros((self._sos.shape[0], 2))
        self._a_env = 1.0 - np.exp(-1.0 / (s.envelope_tau_s * s.rate_hz))
        self._a_floor = 1.0 - np.exp(-1.0 / (s.floor_tau_s * s.rate_hz))
        self._zi_env = np.zeros(1)
        self._zi_floor = np.zeros(1)
        self._floor_last = 0.0
        self._cum_sum = 0.0  # running sum of level_db during the warm-up (cumulative mean)
        self._floor_n = round(s.floor_tau_s * s.rate_hz)
        self._prev_above = False
        self._last_onset = -(10**18)
        self._seen = 0
        self._pending: list[_Pending] = []
        self._refractory = round(s.refractory_s * s.rate_hz)
        self._peak_len = max(1, round(s.peak_window_s * s.rate_hz))
        self._warmup = round(s.warmup_s * s.rate_hz)

    @property
    def samples_seen(self) -> int:
        return self._seen

    def _track_floor(self, level_db: np.ndarray) -> np.ndarray:
        """Noise floor (dB): a cumulative mean for the first ``floor_tau_s``, then an exponential
        average with that time constant, so the floor is settled soon after the stream starts."""
        floor = np.empty_like(level_db)
        n_warm = min(max(self._floor_n - self._seen, 0), level_db.size)
        if n_warm:
            csum = self._cum_sum + np.cumsum(level_db[:n_warm])
            floor[:n_warm] = csum / (self._seen + 1 + np.arange(n_warm))
            self._cum_sum = float(csum[-1])
            if self._seen == 0:
                self._floor_last = float(level_db[0])
            self._zi_floor = np.array([(1.0 - self._a_floor) * floor[n_warm - 1]])
        if n_warm < level_db.size:
            b = self._a_floor
            floor[n_warm:], self._zi_floor = signal.lfilter([b], [1.0, b - 1.0], level_db[n_warm:], zi=self._zi_floor)
        return floor

    def process(self, x: np.ndarray) -> list[Detection]:
        x = np.asarray(x, dtype=float).ravel()
        if x.size == 0:
            return []
        y, self._zi = signal.sosfilt(self._sos, x, zi=self._zi)
        a = self._a_env
        env, self._zi_env = signal.lfilter([a], [1.0, a - 1.0], y * y, zi=self._zi_env)
        level_db = 10.0 * np.log10(env + _EPS)
        floor_db = self._track_floor(level_db)
        prev_floor = np.concatenate(([self._floor_last], floor_db[:-1]))
        above_db = level_db - prev_floor
        self._floor_last = float(floor_db[-1])
        above = above_db > self.settings.threshold_db
        onsets = np.flatnonzero(above & ~np.concatenate(([self._prev_above], above[:-1])))
        self._prev_above = bool(above[-1])

        base = self._seen
        # Update pending peak windows, then open new ones: a few per block at most, so a loop is fine.
        for p in self._pending:
            lo, hi = max(p.index, base) - base, min(p.end, base + x.size) - base
            if hi > lo:
                p.peak_db = max(p.peak_db, float(above_db[lo:hi].max()))
        for i in onsets:
            idx = base + int(i)
            if idx < self._warmup or idx - self._last_onset < self._refractory:
                continue
            self._last_onset = idx
            end = idx + self._peak_len
            p = _Pending(idx, end, float(above_db[i:min(end - base, x.size)].max()))
            self._pending.append(p)
        self._seen += x.size
        done = [p for p in self._pending if p.end <= self._seen]
        self._pending = [p for p in self._pending if p.end > self._seen]
        return [Detection(p.index, p.peak_db) for p in done]

    def flush(self) -> list[Detection]:
        """End of stream: return the detections whose peak window was cut short."""
        done, self._pending = self._pending, []
        return [Detection(p.index, p.peak_db) for p in done]
