"""Joint sounds of one joint from both sensors' microphone transients: merge, impact veto, trains, classes.

Input: :class:`~analysis.transient_detector.Transient` candidates per sensor (with their wall-clock time),
accelerometer frames (for the impact veto) and the joint angle as it is estimated. Output: one
:class:`SoundEvent` per click, snap or crepitus train (at the train's first burst, with its burst count).

Decisions wait until the stream has moved ``train_gap_s`` (s) past a burst (a lone burst is only a click
once no train follows it) and ``hold_s`` past a snap (the IMU must have covered the veto window).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.impact_detector import ImpactDetector, ImpactSettings
from analysis.sound_classifier import (
    ClassifierSettings,
    classify_group,
    is_burst,
    is_snap,
    snap_confidence,
)
from analysis.transient_detector import Transient, TransientSettings


@dataclass(frozen=True)
class SoundSettings:
    transient: TransientSettings = field(default_factory=TransientSettings)
    classifier: ClassifierSettings = field(default_factory=ClassifierSettings)
    impact: ImpactSettings = field(default_factory=ImpactSettings)
    burst_merge_s: float = 0.004  # the same burst on both microphones (clock alignment error included), s
    snap_merge_s: float = 0.030  # the same thump on both microphones, s
    snap_refractory_s: float = 0.250  # a snap rings up to ~0.2 s; one tendon snaps once per crossing, s
    train_gap_s: float = 0.150  # bursts closer than this belong to one train, s
    hold_s: float = 0.060  # wait this long past a candidate for the IMU (impact veto), s
    angle_keep_s: float = 5.0  # joint-angle history kept for late events, s


@dataclass(frozen=True)
class SoundEvent:
    type: str  # "click" | "snap" | "crepitus"
    t_ns: int  # onset (train: first burst), wall clock ns
    stream_t_s: float  # the same instant on the sensor's stream clock, s
    sensor: str  # the sensor that heard it loudest
    confidence: float  # 0..1
    magnitude_db: float  # loudest statistic, dB above the local background level
    details: dict[str, Any]


@dataclass(frozen=True)
class _Cand:
    t_ns: int
    stream_t_s: float
    sensor: str
    tr: Transient


class SoundTracker:
    """Streaming: ``add`` candidates and IMU data in any order, ``poll(now_ns)`` for decided events."""

    def __init__(self, settings: SoundSettings | None = None) -> None:
        self.settings = settings or SoundSettings()
        self.impacts = ImpactDetector(self.settings.impact)
        self._bursts: list[_Cand] = []  # undecided, time-sorted
        self._snaps: list[_Cand] = []
        self._group: list[list[_Cand]] = []  # the open train: bursts, each as heard per band and microphone
        self._angle: deque[tuple[int, float]] = deque()
        self.vetoed = 0
        self._last_snap_ns = -(2**62)
        self._burst_times: deque[int] = deque()  # recent burst times (ns): a snap has nothing above ~500 Hz

    def add(self, sensor: str, t_ns: int, stream_t_s: float, tr: Transient) -> None:
        c = _Cand(int(t_ns), float(stream_t_s), sensor, tr)
        if is_burst(tr, self.settings.classifier):
            self._bursts.append(c)
            self._burst_times.append(c.t_ns)
        elif is_snap(tr, self.settings.classifier):
            self._snaps.append(c)

    def on_imu(self, sensor: str, t_ns: np.ndarray, accel_g: np.ndarray, angle_deg: float) -> None:
        self.impacts.update(sensor, t_ns, accel_g)
        if t_ns.size and np.isfinite(angle_deg):
            self._angle.append((int(t_ns[0]), float(angle_deg)))
            horizon = int(t_ns[0]) - round(self.settings.angle_keep_s * 1e9)
            while self._angle and self._angle[0][0] < horizon:
                self._angle.popleft()

    def angle_at(self, t_ns: int) -> float:
        """Joint angle (deg) at ``t_ns`` from the recorded history; NaN when none."""
        if not self._angle:
            return float("nan")
        t = np.fromiter((a[0] for a in self._angle), dtype=np.int64)
        v = np.fromiter((a[1] for a in self._angle), dtype=float)
        return float(np.interp(t_ns, t, v))

    def poll(self, now_ns: int) -> list[SoundEvent]:
        s = self.settings
        out: list[SoundEvent] = []
        hold, gap = round(s.hold_s * 1e9), round(s.train_gap_s * 1e9)
        # Snaps: merge both microphones, veto impacts.
        self._snaps.sort(key=lambda c: c.t_ns)
        while self._snaps and self._snaps[0].t_ns <= now_ns - hold - round(s.snap_merge_s * 1e9):
            first = self._snaps.pop(0)
            same = [first] + [c for c in self._snaps if c.t_ns - first.t_ns <= round(s.snap_merge_s * 1e9)]
            self._snaps = [c for c in self._snaps if c not in same]
            if self.impacts.near(first.t_ns, low_band=True):
                self.vetoed += 1
                continue
            if first.t_ns - self._last_snap_ns < round(s.snap_refractory_s * 1e9):
                continue
            while self._burst_times and self._burst_times[0] < first.t_ns - round(0.5 * 1e9):
                self._burst_times.popleft()
            if any(-0.02e9 <= b - first.t_ns <= 0.04e9 for b in self._burst_times):
                continue  # broadband: the low band of a click, crepitus burst or crack
            self._last_snap_ns = first.t_ns
            best = max(same, key=lambda c: c.tr.level_db)
            out.append(self._event("snap", first, best, snap_confidence(best.tr, s.classifier),
                                   {"sensors": len({c.sensor for c in same})}))
        # Bursts: merge both microphones, veto impacts, chain into trains, classify closed trains.
        self._bursts.sort(key=lambda c: c.t_ns)
        while self._bursts and self._bursts[0].t_ns <= now_ns - hold:
            c = self._bursts.pop(0)
            if self.impacts.near(c.t_ns):
                self.vetoed += 1
                continue
            if self._group and c.t_ns - self._group[-1][0].t_ns <= round(s.burst_merge_s * 1e9):
                self._group[-1].append(c)  # the same burst in the other band or on the other microphone
                continue
            if self._group and c.t_ns - self._group[-1][0].t_ns > gap:
                out += self._close()
            self._group.append([c])
        if self._group and now_ns - self._group[-1][0].t_ns > gap + hold:
            out += self._close()
        return sorted(out, key=lambda e: e.t_ns)

    def flush(self) -> list[SoundEvent]:
        return self.poll(2**62)

    def _close(self) -> list[SoundEvent]:
        group, self._group = self._group, []
        decided = classify_group([[c.tr for c in burst] for burst in group], self.settings.classifier)
        if decided is None:
            return []
        kind, conf = decided
        every = [c for burst in group for c in burst]
        best = max(every, key=lambda c: c.tr.level_db)
        # A train starts at its first burst; a click is its loudest burst (a weaker one before it is noise).
        first = group[0][0] if kind == "crepitus" else min(next(b for b in group if best in b), key=lambda c: c.t_ns)
        details: dict[str, Any] = {"hf_fraction": round(max(c.tr.hf_fraction for c in every), 2)}
        if kind == "crepitus":
            a0, a1 = self.angle_at(group[0][0].t_ns), self.angle_at(group[-1][0].t_ns)
            details.update(bursts=len(group), duration_s=round((group[-1][0].t_ns - first.t_ns) / 1e9, 3),
                           flexion_range_deg=[round(min(a0, a1), 1), round(max(a0, a1), 1)])
        return [self._event(kind, first, best, conf, details)]

    def _event(self, kind: str, first: _Cand, best: _Cand, conf: float, details: dict[str, Any]) -> SoundEvent:
        return SoundEvent(kind, first.t_ns, first.stream_t_s, best.sensor, float(np.clip(conf, 0.0, 1.0)),
                          float(best.tr.level_db), {"flexion_deg": round(self.angle_at(first.t_ns), 1), **details})
