"""Rep segmentation on a driving angle with hysteresis; streaming, state carried.

The driving angle is knee flexion (0 = straight) or shoulder elevation (deg). Reps are excursions away from the
rest posture: knee flexion rises from straight (squats, lunges, step-downs, landings, running strides); shoulder
elevation rises from the front rack in an overhead press and falls from the dead hang in a pull-up. The counter
works on the excursion ``x = direction * (angle - rest_deg)``: a rep starts when x rises above ``start_deg`` and
ends when it falls back below ``end_deg``. For the knee ``rest_deg = 0`` and ``direction = +1``; for a shoulder
both are learned (``rest_deg=None``: the median of the first ``rest_window_s`` of known (finite) angles;
``direction=0``: the sign of the first excursion beyond ``start_deg``). An excursion shorter than
``min_duration_s`` is no rep (a stumble, noise), nor is one peaking below ``sub_rep_ratio`` of the recent reps'
median peak: it is part of a larger cycle, like the stance-phase bump (~45 deg) of a running stride whose swing
phase (~100 deg) is the rep.

Turning points: while a rep is under way, once the rep has lasted ``min_duration_s`` (it is a rep, not a
stumble) and its excursion lies ``turn_drop_deg`` below its running peak, the rep has turned back: the counter
records a :class:`Turn` (rep start, time and excursion of the peak so far) in :attr:`RepCounter.turns`, so that the
rep's range can be judged then rather than when the rep ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class RepSettings:
    start_deg: float = 40.0  # a rep starts when the excursion rises above this (deg) ...
    end_deg: float = 20.0  # ... and ends when it falls back below this (deg)
    min_duration_s: float = 0.2  # shorter excursions are not reps (a stumble, noise), s (a running stride's swing
    # phase stays above start_deg for ~0.25-0.3 s)
    sub_rep_ratio: float = 0.6  # an excursion peaking below this share of the last reps' median peak is part of a
    # larger cycle (the stance-phase bump of a running stride, ~45 deg against the swing's ~90-110), no rep
    sub_rep_history: int = 6  # number of recent reps forming that median
    rest_deg: float | None = 0.0  # rest value of the driving angle (deg); None: learned from the first samples
    direction: int = 1  # +1: reps raise the angle, -1: they lower it, 0: learned from the first excursion
    rest_window_s: float = 0.5  # the rest value is the median of the first this-many seconds (rest_deg=None)
    turn_drop_deg: float = 3.0  # a rep has turned back once its excursion falls this far below its peak, deg
    turn_band_deg: float = 0.5  # ... and it turned when it last was this close to its peak, deg (angle noise ~0.1-0.3
    # deg; a smooth minimum-jerk reversal leaves this band ~0.05-0.08 s after its velocity changed sign)


SHOULDER_REPS = RepSettings(start_deg=40.0, end_deg=20.0, rest_deg=None, direction=0)


@dataclass(frozen=True, slots=True)
class Rep:
    index: int  # 1-based rep number in the session
    t_start_ns: int
    t_end_ns: int
    t_peak_ns: int
    peak_flexion_deg: float  # extreme of the driving angle in the rep (knee: peak flexion; pull-up: top), deg
    min_flexion_deg: float  # angle closest to rest between the previous rep and the end of this one (extension)
    rom_deg: float = math.nan  # range of motion: |peak - min_flexion_deg|, deg


@dataclass(frozen=True, slots=True)
class Turn:
    """A rep in progress that has turned back: its start, the time it left its peak and the peak's excursion (deg
    from rest, positive into the rep), and the sample (time) at which the turn became evident. Times in ns."""

    t_start_ns: int
    t_turn_ns: int  # the end of the dwell at the peak: the last sample within turn_band_deg of it
    peak_excursion_deg: float
    t_seen_ns: int


@dataclass
class RepCounter:
    settings: RepSettings = field(default_factory=RepSettings)

    def __post_init__(self) -> None:
        s = self.settings
        self._down = False
        self._start = 0
        self._peak = -np.inf  # in excursion units
        self._peak_t = 0
        self._min = np.inf  # in excursion units
        self._peaks: list[float] = []  # peak excursions of the last reps (deg)
        self._turned = False  # the rep under way has turned back (a Turn was recorded)
        self._near_t = 0  # last time (ns) the rep under way was within turn_band_deg of its running peak
        self.turns: list[Turn] = []  # turning points found, for the caller to take (``take_turns``)
        self.count = 0
        self.rest_deg: float | None = s.rest_deg
        self.direction = s.direction
        self._pre_t: list[np.ndarray] = []  # samples held until the rest value / direction are known
        self._pre_x: list[np.ndarray] = []

    @property
    def ready(self) -> bool:
        """True once rest value and direction are known (excursions can be formed)."""
        return self.rest_deg is not None and self.direction != 0

    def excursion(self, angle_deg: np.ndarray) -> np.ndarray:
        """Excursion from rest (deg, positive into the rep); requires :attr:`ready`."""
        assert self.rest_deg is not None
        return self.direction * (np.asarray(angle_deg, float) - self.rest_deg)

    def angle(self, excursion_deg: float) -> float:
        assert self.rest_deg is not None
        return float(self.rest_deg + self.direction * excursion_deg)

    def update(self, t_ns: np.ndarray, flexion_deg: np.ndarray) -> list[Rep]:
        """Take the next samples of the driving angle (deg, times in ns); return the reps completed in them."""
        if not self.ready:
            self._pre_t.append(np.asarray(t_ns, np.int64))
            self._pre_x.append(np.asarray(flexion_deg, float))
            t_all, x_all = np.concatenate(self._pre_t), np.concatenate(self._pre_x)
            if not self._learn(t_all, x_all):
                return []
            self._pre_t, self._pre_x = [], []
            return self._update(t_all, self.excursion(x_all))
        return self._update(np.asarray(t_ns, np.int64), self.excursion(flexion_deg))

    def take_turns(self) -> list[Turn]:
        """The turning points found since the last call, in time order (see the module docstring)."""
        out, self.turns = self.turns, []
        return out

    def _learn(self, t: np.ndarray, x: np.ndarray) -> bool:
        s = self.settings
        if self.rest_deg is None:
            known = np.isfinite(x)  # unknown angles (NaN before a calibration) say nothing about the rest
            tk = t[known]
            if tk.size == 0 or (tk[-1] - tk[0]) / 1e9 < s.rest_window_s:
                return False
            self.rest_deg = float(np.median(x[known][tk <= tk[0] + s.rest_window_s * 1e9]))
        if self.direction == 0:
            far = np.flatnonzero(np.abs(x - self.rest_deg) > s.start_deg)
            if not far.size:
                return False
            self.direction = 1 if x[far[0]] > self.rest_deg else -1
        return True

    def _update(self, t_ns: np.ndarray, x: np.ndarray) -> list[Rep]:
        """Loops over threshold crossings only (a few per rep), never over samples."""
        s = self.settings
        reps: list[Rep] = []
        i, n = 0, x.size
        while i < n:
            if not self._down:
                hits = np.flatnonzero(x[i:] > s.start_deg)
                j = i + int(hits[0]) if hits.size else n
                if j > i:
                    self._min = min(self._min, float(x[i:j].min()))
                if not hits.size:
                    break
                self._down, self._start, self._peak, self._turned = True, int(t_ns[j]), -np.inf, False
                self._near_t = self._start
                i = j
            else:
                hits = np.flatnonzero(x[i:] < s.end_deg)
                j = i + int(hits[0]) if hits.size else n
                seg = x[i:j]
                if seg.size and not self._turned:
                    self._find_turn(t_ns[i:j], seg)
                if seg.size and seg.max() > self._peak:
                    k = int(seg.argmax())
                    self._peak, self._peak_t = float(seg[k]), int(t_ns[i + k])
                if not hits.size:
                    break
                end = int(t_ns[j])
                self._down = False
                if (end - self._start) / 1e9 < s.min_duration_s:
                    self._min = np.inf
                elif self._peak >= self._sub_rep_limit():
                    self.count += 1
                    peak, low = self.angle(self._peak), self.angle(self._min)
                    reps.append(Rep(self.count, self._start, end, self._peak_t, peak, low, abs(peak - low)))
                    self._peaks = (self._peaks + [self._peak])[-s.sub_rep_history:]
                    self._min = np.inf
                i = j
        return reps

    def _sub_rep_limit(self) -> float:
        """Excursion (deg) below which a rep's peak makes it part of a larger movement's cycle, not a rep."""
        s = self.settings
        return s.sub_rep_ratio * float(np.median(self._peaks)) if len(self._peaks) >= 2 else -np.inf

    def _find_turn(self, t_ns: np.ndarray, seg: np.ndarray) -> None:
        """Record the rep's turning point at the first sample of ``seg`` (excursion samples of the rep under way,
        times ``t_ns``) that lies ``turn_drop_deg`` below the rep's running peak once the rep has lasted
        ``min_duration_s`` (a shorter excursion is no rep). The turn's time is the end of the dwell at the peak:
        the last sample within ``turn_band_deg`` of it (a hold at the top is not over until the joint leaves it)."""
        s = self.settings
        run_peak = np.maximum.accumulate(np.concatenate(([self._peak], seg)))[1:]
        turned = ((seg < run_peak - s.turn_drop_deg) & (t_ns >= self._start + s.min_duration_s * 1e9)
                  & (run_peak >= self._sub_rep_limit()))
        near = np.flatnonzero(seg >= run_peak - s.turn_band_deg)
        if not turned.any():
            if near.size:
                self._near_t = int(t_ns[near[-1]])
            return
        k = int(np.argmax(turned))
        near = near[near < k]
        t_near = int(t_ns[near[-1]]) if near.size else self._near_t
        peak = float(run_peak[k])
        self._turned = True
        self.turns.append(Turn(self._start, t_near, peak, int(t_ns[k])))
