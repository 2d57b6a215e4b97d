"""Rep segmentation from the flexion angle with hysteresis; streaming, state carried."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class RepSettings:
    start_deg: float = 40.0  # a rep starts when flexion rises above this ...
    end_deg: float = 20.0  # ... and ends when it falls back below this
    min_duration_s: float = 0.4  # shorter excursions are not reps (a stumble, noise)


@dataclass(frozen=True, slots=True)
class Rep:
    index: int  # 1-based rep number in the session
    t_start_ns: int
    t_end_ns: int
    t_peak_ns: int
    peak_flexion_deg: float
    min_flexion_deg: float  # lowest flexion between the previous rep and the end of this one (extension)


@dataclass
class RepCounter:
    settings: RepSettings = field(default_factory=RepSettings)

    def __post_init__(self) -> None:
        self._down = False
        self._start = 0
        self._peak = -np.inf
        self._peak_t = 0
        self._min = np.inf
        self.count = 0

    def update(self, t_ns: np.ndarray, flexion_deg: np.ndarray) -> list[Rep]:
        """Take the next samples; return the reps completed in them. Loops over threshold
        crossings only (a few per rep), never over samples."""
        s = self.settings
        reps: list[Rep] = []
        i, n = 0, flexion_deg.size
        while i < n:
            if not self._down:
                hits = np.flatnonzero(flexion_deg[i:] > s.start_deg)
                j = i + int(hits[0]) if hits.size else n
                if j > i:
                    self._min = min(self._min, float(flexion_deg[i:j].min()))
                if not hits.size:
                    break
                self._down, self._start, self._peak = True, int(t_ns[j]), -np.inf
                i = j
            else:
                hits = np.flatnonzero(flexion_deg[i:] < s.end_deg)
                j = i + int(hits[0]) if hits.size else n
                seg = flexion_deg[i:j]
                if seg.size and seg.max() > self._peak:
                    k = int(seg.argmax())
                    self._peak, self._peak_t = float(seg[k]), int(t_ns[i + k])
                if not hits.size:
                    break
                end = int(t_ns[j])
                self._down = False
                if (end - self._start) / 1e9 >= s.min_duration_s:
                    self.count += 1
                    reps.append(Rep(self.count, self._start, end, self._peak_t, self._peak, self._min))
                self._min = np.inf
                i = j
        return reps
