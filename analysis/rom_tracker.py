"""Range of motion per rep and locking / restricted motion (a joint that stops short), as "locking" events.

Works on the driving angle's excursion from rest (deg, see :class:`analysis.rep_counter.RepCounter`): knee
flexion, or shoulder elevation turned so that reps are positive. Two signs, both measured against the athlete's
own usual motion in the session, never a population norm. Each event's time is the moment the restriction is
evident in the motion itself - where the joint stopped or turned back short - and it is reported as soon as
that can be told from a normal movement:

* **Extension lock** (the knee will not straighten): after coming up from a rep the joint stops
  (|rate| < ``plateau_rate_dps``) at ``lock_min_deg`` or more above the usual rest excursion and at least
  ``lock_below_peak_deg`` below the rep's peak (a bottom hold is not a lock). Event time: the start of that
  plateau (where the ascent stopped short); reported once the joint has stayed there for ``lock_hold_s``. A
  normal ascent passes the level ``lock_min_deg`` above rest at 50-100 deg/s and only comes to rest inside
  ``rest_band_deg``, so a short hold separates the two. Magnitude = degrees short of the usual extension.
* **Restricted range**: a rep whose peak excursion falls ``range_short_deg`` and ``range_short_sd`` standard
  deviations (of the last ``range_spread_history`` reps' peaks) below the median of the previous reps
  (``range_history`` of them, at least ``range_min_reps``) and ``range_short_min_deg`` below each of them (so
  alternating reps, e.g. a jump squat's countermovement and its landing absorption, are not restricted). Reps
  that turn back within ``range_min_turn_s`` of their start (a running stride's swing, whose range follows the
  speed) are not judged.
  Judged at the rep's turning point (:class:`analysis.rep_counter.Turn`: the joint is ``turn_drop_deg`` back
  from its peak, ~0.1-0.2 s after the turn); event time: the turn, i.e. the end of the dwell at the peak (a hold
  at the top is not over, and the range not yet known, until the joint leaves it). Magnitude = degrees short of
  the usual peak.

Neither is reported within a giving way's collapse, hold and recovery (:meth:`RomTracker.note_giving_way`): the
knee then stops and turns back short for another reason, already reported as instability.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.kinematic_event import KinematicEvent
from analysis.rep_counter import Rep, Turn
from analysis.stream_filters import DelayLine, SavgolStream


@dataclass(frozen=True)
class RomSettings:
    rate_hz: float = 200.0  # nominal sample rate of the angle stream, Hz
    smooth_window_s: float = 0.055  # Savitzky-Golay window (order 2) for the angle and its rate, s (delay: half)
    plateau_rate_dps: float = 8.0  # a joint moving slower than this is still, deg/s
    lock_min_deg: float = 10.0  # a still joint this far beyond its usual rest posture is locked, deg
    lock_below_peak_deg: float = 15.0  # ... if this far below the rep's peak (not a bottom hold), deg
    lock_hold_s: float = 0.1  # ... for this long, s (standard sets: no false lock at 0.1, recall 0.83 at 0.6)
    rest_band_deg: float = 8.0  # still samples this close to the usual rest update it, deg
    rest_tau_s: float = 2.0  # time constant of the usual-rest estimate, s of still rest
    range_short_deg: float = 15.0  # a rep peaking this far below the usual peak is restricted, deg (depth varies
    # rep to rep by ~5 deg SD in squats and jumps: 3 SD; on the dev seeds 12 gave P 0.53, 15 gave P 0.80, R 1.0)
    range_short_min_deg: float = 5.0  # ... and this far below every recent normal rep, deg
    range_short_sd: float = 3.0  # ... and this many standard deviations of the recent reps' peaks below their median
    range_spread_history: int = 12  # number of recent reps whose peaks give that standard deviation
    range_min_turn_s: float = 0.3  # a rep turning back sooner after its start is not judged, s: a running stride's
    # swing turns 0.1-0.15 s after it starts (squats, lunges, step-downs, presses, pull-ups >= 0.4 s), and its
    # range follows the running speed, not a restriction
    # (running strides vary by ~6-8 deg SD: 20 deg shorter is no restriction there)
    range_history: int = 6  # number of recent reps forming the usual peak
    range_min_reps: int = 2  # reps needed before range is judged
    # A giving way (instability event) is a collapse (0.1-0.3 s), a hold and a recovery (up to ~1.5 s): neither its
    # hold nor its turning points are locking. No locking is reported from this long before its onset to this long
    # after it, s.
    giving_way_before_s: float = 0.5
    giving_way_s: float = 2.0


class RomTracker:
    """Streaming ROM/locking: ``update(t_ns, excursion_deg)`` for extension locks, ``on_rep(rep, peak_exc)`` for
    range; both return :class:`KinematicEvent` lists (type "locking")."""

    def __init__(self, settings: RomSettings | None = None) -> None:
        s = self.settings = settings or RomSettings()
        w = int(round(s.smooth_window_s * s.rate_hz)) | 1
        self._x = SavgolStream(w, 2, 0, s.rate_hz)
        self._v = SavgolStream(w, 2, 1, s.rate_hz)
        self._t = DelayLine(w // 2)
        self._alpha = 1.0 - np.exp(-1.0 / (s.rest_tau_s * s.rate_hz))
        self.rest_exc_deg = 0.0  # usual rest excursion (deg), learned
        self._run_start_ns: int | None = None  # start of the current lock-candidate plateau
        self._run_level = 0.0
        self._peak_since_rest = 0.0  # highest excursion since the joint was last at rest (deg)
        self._locked = False  # a lock was reported since the joint was last at rest
        self._hold_n = int(round(s.lock_hold_s * s.rate_hz))
        self._run_n = 0
        self.normal_peaks: list[float] = []  # peak excursions of the recent reps (deg)
        self.rom_deg: list[float] = []  # ROM per rep (deg)
        self._giving_way_ns = np.iinfo(np.int64).min // 2  # onset of the latest giving-way episode (ns)

    def update(self, t_ns: np.ndarray, excursion_deg: np.ndarray) -> list[KinematicEvent]:
        s = self.settings
        if len(t_ns) == 0:
            return []
        x = self._x.process(excursion_deg)
        v = self._v.process(excursion_deg)
        t = self._t.process(np.asarray(t_ns, np.int64))
        still = np.abs(v) < s.plateau_rate_dps
        out: list[KinematicEvent] = []
        # Per-sample state (rest estimate, running peak, plateau runs) changes only at a few transitions, but
        # its rules interlock; a compact per-segment loop over runs of equal (still, at_rest) keeps it exact.
        at_rest = np.abs(x - self.rest_exc_deg) < s.rest_band_deg
        key = still.astype(np.int8) * 2 + at_rest.astype(np.int8)
        bounds = np.flatnonzero(np.diff(key)) + 1
        for a, b in zip(np.concatenate(([0], bounds)), np.concatenate((bounds, [x.size])), strict=True):
            seg_x, seg_t = x[a:b], t[a:b]
            if at_rest[a]:
                self._peak_since_rest, self._locked = 0.0, False
                self._run_n = 0
                if still[a]:  # quiet rest: follow slow changes of the rest posture (offset, drift)
                    w = (1.0 - self._alpha) ** np.arange(seg_x.size - 1, -1, -1)
                    self.rest_exc_deg = float(self.rest_exc_deg * (1.0 - self._alpha) ** seg_x.size
                                              + np.sum(self._alpha * w * seg_x))
                continue
            if not still[a]:
                self._peak_since_rest = max(self._peak_since_rest, float(seg_x.max()))
                self._run_n = 0
                continue
            # Still, away from rest: a lock candidate if well above rest and well below the rep's peak.
            self._peak_since_rest = max(self._peak_since_rest, float(seg_x.max()))
            ok = (seg_x - self.rest_exc_deg > s.lock_min_deg) & (seg_x < self._peak_since_rest - s.lock_below_peak_deg)
            if not ok.all():
                self._run_n = 0
                first_bad = int(np.flatnonzero(~ok)[-1]) + 1
                seg_x, seg_t = seg_x[first_bad:], seg_t[first_bad:]
            if not seg_x.size:
                continue
            if self._run_n == 0:
                self._run_start_ns, self._run_level = int(seg_t[0]), float(seg_x[0])
            self._run_n += seg_x.size
            if not self._locked and self._run_n >= self._hold_n and self._run_start_ns is not None:
                self._locked = True
                short = self._run_level - self.rest_exc_deg
                if self._after_giving_way(self._run_start_ns):
                    continue
                out.append(KinematicEvent("locking", self._run_start_ns, short,
                                          float(np.clip(0.5 + short / 40.0, 0.5, 0.95)),
                                          {"kind": "extension", "short_deg": round(short, 1),
                                           "hold_s": s.lock_hold_s}))
        return out

    def note_giving_way(self, t_onset_ns: int) -> None:
        """A giving-way episode began at ``t_onset_ns``: its collapse, hold and recovery are no locking."""
        self._giving_way_ns = max(self._giving_way_ns, int(t_onset_ns))

    def _after_giving_way(self, t_ns: int) -> bool:
        s = self.settings
        return self._giving_way_ns - s.giving_way_before_s * 1e9 <= t_ns <= self._giving_way_ns + s.giving_way_s * 1e9

    def on_turn(self, turn: Turn, rep_index: int) -> list[KinematicEvent]:
        """Judge the range of the rep under way (number ``rep_index``) at its turning point: ``turn`` from
        :meth:`analysis.rep_counter.RepCounter.take_turns` (peak excursion from rest, deg). The event's time is the
        turning point, the rep's peak: where the joint turned back short of its usual range."""
        s = self.settings
        prev = self.normal_peaks[-s.range_history:]
        if len(prev) < s.range_min_reps or turn.t_turn_ns - turn.t_start_ns < s.range_min_turn_s * 1e9:
            return []
        usual = float(np.median(prev))
        peak = turn.peak_excursion_deg
        short = usual - peak
        spread_of = self.normal_peaks[-s.range_spread_history:]
        spread = float(np.std(spread_of, ddof=1)) if len(spread_of) > 2 else 0.0
        if short <= max(s.range_short_deg, s.range_short_sd * spread) or peak >= min(prev) - s.range_short_min_deg:
            return []
        conf = float(np.clip(0.5 + short / 40.0, 0.5, 0.95))
        if self._after_giving_way(turn.t_turn_ns):
            return []
        return [KinematicEvent("locking", turn.t_turn_ns, short, conf,
                               {"kind": "range", "short_deg": round(short, 1), "rep": rep_index,
                                "usual_peak_excursion_deg": round(usual, 1),
                                "decided_after_s": round((turn.t_seen_ns - turn.t_turn_ns) / 1e9, 3)})]

    def on_rep(self, rep: Rep, peak_excursion_deg: float) -> None:
        """Record a completed rep's ROM and peak excursion from rest (deg): the usual range later reps are judged
        against (their range is judged at their turning point, :meth:`on_turn`)."""
        self.rom_deg.append(rep.rom_deg)
        keep = max(self.settings.range_history, self.settings.range_spread_history)
        self.normal_peaks = (self.normal_peaks + [peak_excursion_deg])[-keep:]
