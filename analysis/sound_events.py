"""Joint sounds of one joint from both sensors' microphone transients: merge, impact veto, trains, classes.

Input: :class:`~analysis.transient_detector.Transient` candidates per sensor (with their wall-clock time),
accelerometer frames (for the impact veto) and the joint angle as it is estimated. Output: one
:class:`SoundEvent` per click, snap or crepitus train.

What decides, besides each transient's own shape (``analysis/sound_classifier.py``):

* impacts: an accelerometer jump at the same time (IMU), or the sound's own thud (a burst followed by loud
  0-500 Hz power within a few ms) vetoes a burst; a low-band thump within the thud's first tens of ms of an
  impact is the thud, not a snap (a snap 100 ms after a landing is kept);
* repetition over the movement: crepitus grinds at the same flexion range every rep, and a tendon snaps at the
  same angle on the same crossing direction every rep. So the angles of confirmed trains mark a "crepitus
  zone": a lone burst inside it is crepitus (not a click), and a weak low-band thump at an angle where one
  was already heard in an earlier rep (same direction) is a snap;
* one crepitus event per movement cycle: a train is reported once it has ``train_min_bursts`` bursts, at the
  earliest of its bursts within ``train_gap_s`` before the confirming one (so the report trails the event time
  by at most ``train_gap_s + hold_s``); later bursts are absorbed until an IMU impact (a foot strike or
  landing starts a new stride) or ``rearm_silence_s`` without bursts;
* weak sounds are confirmed by the second microphone: a high-band transient too weak or too wide to be a burst
  counts when the other microphone heard one within ``burst_pair_s``; a low-band thump heard by both
  microphones at ``snap_pair_min_db`` is a snap without recurrence.

Latency: a burst is decided ``hold_s`` after it (the IMU must have covered the veto window); a lone burst is a
click once ``click_wait_s`` passed without a next burst; a snap after ``hold_s`` (plus the low band's own lag).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.impact_detector import ImpactDetector, ImpactSettings
from analysis.mic_offset import MicOffset
from analysis.sound_classifier import (
    ClassifierSettings,
    classify_group,
    is_burst,
    logistic,
    snap_confidence,
    train_confidence,
)
from analysis.sound_coherence import CoherenceSettings, MicHistory, PairStats, lag_scan, pair_stats
from analysis.sound_jerk import JerkDetector, JerkSettings
from analysis.transient_detector import Transient, TransientSettings, band_lag_s


@dataclass(frozen=True)
class SoundSettings:
    transient: TransientSettings = field(default_factory=TransientSettings)
    classifier: ClassifierSettings = field(default_factory=ClassifierSettings)
    impact: ImpactSettings = field(default_factory=ImpactSettings)
    jerk: JerkSettings = field(default_factory=JerkSettings)
    coherence: CoherenceSettings = field(default_factory=CoherenceSettings)
    burst_merge_s: float = 0.004  # the same burst on both microphones (clock alignment error included), s
    snap_merge_s: float = 0.015  # the same thump on both microphones (peak frames within a few ms), s
    snap_refractory_s: float = 0.250  # a snap rings up to ~0.2 s; one tendon snaps once per crossing, s
    train_gap_s: float = 0.150  # bursts closer than this belong to one train, s
    click_wait_s: float = 0.100  # a lone burst is a click when no other burst follows within this, s
    hold_s: float = 0.060  # wait this long past a candidate for the IMU (impact veto), s
    angle_keep_s: float = 10.0  # joint-angle history kept for late events, s
    # A burst whose 0-500 Hz tail exceeds both of these is an impact's crack (its thud follows within ms):
    # Weak bursts: a high-band transient too weak or too wide (noise widens it) to be a burst on its own counts
    # when the other microphone heard one within ``burst_pair_s`` too (a joint sound reaches both sensors
    # within a fraction of a ms; noise bursts are each sensor's own).
    burst_pair_s: float = 0.001  # s
    burst_pair_min_db: float = 8.0  # dB (the detector's own threshold)
    burst_pair_max_width_s: float = 0.007  # s
    burst_pair_min_hf: float = 0.6  # excess power above 2 kHz / 0.4-7 kHz: a click's signature
    # Both microphones (analysis/sound_coherence.py): a high/mid transient whose samples on the two microphones
    # correlate at least ``coherent_min`` is heard by both, a joint sound even when weak (``coherent_min_db``,
    # up to ``coherent_max_width_s`` wide); one below ``incoherent_max`` is one sensor's own noise (rubbing,
    # a noise peak), not a joint sound, however loud (noise alone: median 0.27, 99th percentile 0.6).
    coherent_min: float = 0.6
    coherent_min_db: float = 9.5
    coherent_max_width_s: float = 0.007
    incoherent_max: float = 0.3
    # A click during an impact's veto window is still a click: an impact's crack rings mostly below 2 kHz (ss
    # impact sessions: 0.07-0.21 of the vetoed cracks' excess above 2 kHz, 5-95 %) with its thud right after it,
    # while a cavitation click is a 2-6 kHz resonance with nothing below (0.75-0.96). A high-band burst with at least
    # ``impact_click_min_hf`` of its excess above 2 kHz, ``click_min_db`` loud and no thud tail (``thud_min_db``)
    # is kept through the impact veto, as a click only: where crepitus grinds (recent trains), only when it stands
    # out from their bursts (see ``standout_db``).
    impact_click_min_hf: float = 0.6
    thud_min_db: float = 16.0  # dB over the background (joint sounds' tails: 95 % below ~15 dB)
    thud_below_level_db: float = 10.0  # ... and at most this far below the burst itself (very loud clicks leak), dB
    zone_margin_deg: float = 4.0  # a burst this close to the angle of bursts of earlier trains is crepitus, deg
    zone_min_trains: int = 2  # ... of at least this many earlier trains
    zone_min_bursts: int = 1  # a group in the zone is reported as crepitus from this many bursts on
    zone_keep_s: float = 30.0  # trains remembered for the zone, s
    # Re-arming (a new crepitus event may be reported, one per movement cycle): a silence of ``rearm_silence_s``
    # (rest between reps); in a gait (an IMU impact within ``rearm_gait_s`` of the one before), a foot strike
    # since the last burst (running: every stride's grinding is its own train; an isolated landing is part of
    # its jump's rep); in cyclic swings without impacts, a new cluster of bursts after a pause of
    # ``rearm_cycle_gap_s`` that starts at the reported train's starting angle (+-``rearm_cycle_deg``) on the same
    # crossing direction, at least ``rearm_cycle_min_s`` after it, with no impact in between (a jump's landing
    # grinds at its descent's angle again, a squat's ascent crosses the other way).
    rearm_on_impact: bool = True
    rearm_silence_s: float = 1.5
    rearm_gait_s: float = 1.5
    rearm_cycle_gap_s: float = 0.3
    rearm_cycle_deg: float = 5.0
    rearm_cycle_min_s: float = 0.5
    # ... and a swing turning back (flexing -> extending) within one grinding cluster, bursts on both sides within
    # this pause (s): a leg swing's rep ends at the top of its back swing (pause ~0.1 s), a squat's bottom pauses
    # longer (>= 0.27 s on the set); not within ``rearm_turn_quiet_s`` after an impact (a stride's stance and a
    # landing's absorption turn too, inside their rep). 0 disables.
    rearm_turn_gap_s: float = 0.2
    rearm_turn_quiet_s: float = 2.0
    rearm_turn_max_deg: float = 40.0  # ... at a shallow flexion (a swing's knee; a squat's or jump's bottom is deep)
    # A burst this close to a thump (s before, s after) makes the thump the burst's low end (a click or crepitus
    # burst reaches 60-320 Hz at the same instant, +-~2.5 ms of frame timing); a snap's tendon may crack a few
    # ms after the thump starts, or crepitus grind right after it, which does not hide the snap.
    thump_burst_before_s: float = 0.020
    thump_burst_after_s: float = 0.005
    # ... when louder than the thump by this much: a click's or burst's 60-320 Hz end is far weaker than its
    # 0.4-6.5 kHz peak, while a snap's thump is its loudest part (ss: 88 snaps vs 5 others at -3 dB), dB.
    thump_hidden_db: float = -3.0
    snap_recur_deg: float = 3.0  # a weak thump recurs when an earlier one (>= snap_recur_gap_s before) was this close
    snap_recur_gap_s: float = 0.4  # earlier thumps must be from an earlier crossing, s
    snap_recur_min_db: float = 9.0  # the weakest low-band thump that can be a snap when it recurs, dB
    # Below this a thump must be heard by both microphones: a joint sound reaches every sensor on the joint
    # (a few dB apart), while rumble and rubbing swells are each sensor's own, dB.
    snap_one_mic_db: float = 18.0
    # A thump heard by both microphones at least this loud on each is a snap without recurrence: rumble,
    # rubbing and hum are each sensor's own, so a both-microphone coincidence within ``snap_merge_s`` at this
    # level is rare unless the joint made it (dev set: 26 snaps vs 1 other at 9.5 dB), dB.
    snap_pair_min_db: float = 9.5
    snap_pair_max_width_s: float = 0.032  # ... and each no wider than this, s
    # A snapping tendon is felt too: the limb rings (analysis/sound_jerk.py) 5-30 ms after the thump's peak frame.
    # A ring of at least ``snap_ring_g2``, ``snap_ring_over_bg`` times the sensor's usual ring over the last
    # second (running strides ring at every phase: there the ring says nothing) and ``snap_ring_over_other``
    # times the other sensor's (a jump's take-off rings both segments alike; ss + alternate: 15 false snaps
    # fewer, none lost) makes a thump of ``snap_jerk_min_db`` (one microphone, up to ``snap_jerk_max_width_s``
    # wide) a snap (ss: snaps ring at 0.05-0.09 g^2 on the sensor next to the joint, still squats below 0.01).
    snap_ring_window_s: tuple[float, float] = (-0.010, 0.030)
    snap_ring_g2: float = 0.04
    snap_ring_over_bg: float = 2.0
    snap_ring_bg_s: float = 1.0
    snap_ring_over_other: float = 1.5
    snap_jerk_min_db: float = 5.0
    snap_jerk_max_width_s: float = 0.064
    # One tendon snaps at one angle, on one crossing direction, rep after rep (+-1-2 deg). A thump of
    # ``snap_angle_min_db`` (any microphone, up to ``snap_jerk_max_width_s`` wide) within ``snap_angle_deg`` of
    # an earlier decided snap's angle, same direction, is a snap, even with a burst up to ``snap_angle_burst_db``
    # louder at the same instant (crepitus grinding over the snap's angle; ss + alternate set: +90 thumps at 12 dB,
    # 6 others).
    snap_angle_deg: float = 2.0
    snap_angle_min_db: float = 12.0
    snap_angle_burst_db: float = 9.0
    # A tendon snaps over a bony prominence as the joint moves through an angle: a thump while the joint is still
    # (slower than this, deg/s) is not a snap (unknown angle: no test).
    snap_min_rate_dps: float = 10.0
    # A cavitation click is one sharp, loud, broadband (2-6 kHz) event; the bursts of a crepitus train are small,
    # 0.4-3 kHz and alike. So a burst "stands out" from the trains of the last ``zone_keep_s`` (and the open
    # one) when it is ``standout_db`` louder than their 90th level percentile and its high-frequency fraction is
    # at least ``standout_min_hf`` and ``standout_hf_margin`` above their median: such a burst inside a train or
    # in the crepitus zone is a click, while a lone burst that does not stand out within ``train_tail_s`` after a
    # train is the train's last, sparse grinding (not a click).
    standout_db: float = 4.0
    standout_min_hf: float = 0.6
    standout_hf_margin: float = 0.1
    standout_min_ref: int = 3  # reference bursts needed to judge, else nothing stands out
    # ... or only ``standout_tone_db`` louder when what both microphones share is one decaying tone above the
    # grinding's 0.4-3 kHz ring (``PairStats``: tonality >= ``standout_tone_min`` at >= ``standout_tone_hz``): a
    # cavitation click's 2-6 kHz resonance (grinding is mostly noise; its ring never reaches 3 kHz).
    standout_tone_min: float = 0.6
    standout_tone_hz: float = 3000.0
    standout_tone_db: float = 0.0

    train_tail_s: float = 0.5


@dataclass(frozen=True)
class SoundEvent:
    type: str  # "click" | "snap" | "crepitus"
    t_ns: int  # onset (train: its start, see the module docstring), wall clock ns
    stream_t_s: float  # the same instant on the sensor's stream clock, s
    sensor: str  # the sensor that heard it loudest
    confidence: float  # 0..1
    magnitude_db: float  # loudest statistic, dB above the local background level
    details: dict[str, Any]


@dataclass(eq=False)
class _Cand:
    t_ns: int
    stream_t_s: float
    sensor: str
    tr: Transient
    pair: PairStats | None = None  # what both microphones' samples share around it (high/mid, once sorted)
    shift_ns: int = 0  # the clock offset taken off ``t_ns`` (second microphone: onto the first one's clock)


class SoundTracker:
    """Streaming: ``add`` candidates and IMU data in any order, ``poll(now_ns)`` for decided events."""

    def __init__(self, settings: SoundSettings | None = None) -> None:
        self.settings = settings or SoundSettings()
        self.impacts = ImpactDetector(self.settings.impact)
        self.jerks = JerkDetector(self.settings.jerk)
        self._bursts: list[_Cand] = []  # undecided, time-sorted
        self._hm: list[_Cand] = []  # high/mid transients not yet sorted (bursts, weak ones, noise)
        self._weak: list[_Cand] = []  # weak high-band transients waiting for the other microphone's
        self._mic_hist: dict[str, MicHistory] = {}  # raw samples per microphone, for the coherence
        # The second microphone's clock offset behind the first (live, the two clock maps differ by ms): its
        # candidates' times are moved onto the first one's clock, its samples read at the offset.
        self.offset = MicOffset()
        self._scanned_ns = -(2**62)  # transients up to here were scanned for the offset
        self.incoherent = 0  # loud transients dropped as one microphone's own noise
        self._paired: set[int] = set()  # id() of weak transients promoted to bursts by a coincidence
        self._snaps: list[_Cand] = []
        self._group: list[list[_Cand]] = []  # the open train: bursts, each as heard per band and microphone
        self._group_reported = False  # the open group already gave (or was absorbed into) a crepitus event
        self._group_from = 0  # the open group's bursts from this index on make the current train (a swing re-arms)
        self._last_burst_dir = 0.0  # direction of the joint at the last burst: +1 flexing, -1 extending
        # Joint-angle history: blocks appended as they come, joined (and trimmed) when looked up.
        self._angle_parts: list[tuple[np.ndarray, np.ndarray]] = []
        self._angle_t = np.zeros(0, np.int64)
        self._angle_v = np.zeros(0)
        self._angle_series = False  # on_angles gives the full series: on_imu's one value per frame is not used
        self.vetoed = 0
        self._last_snap_ns = -(2**62)
        self._thumps: deque[tuple[int, float, float]] = deque()  # earlier low-band thumps: (t_ns, angle, direction)
        self._snap_angles: deque[tuple[int, float, float]] = deque()  # decided snaps: (t_ns, angle, direction)
        self._trains: deque[tuple[int, float, float]] = deque()  # confirmed trains: (t_ns, lowest, highest angle)
        self._armed = True  # a new crepitus train may be reported
        self._reported: tuple[int, float, float] = (-(2**62), float("nan"), 0.0)  # last report: t_ns, angle, direction
        self._last_burst_ns = -(2**62)
        self._burst_times: deque[tuple[int, float]] = deque()  # recent bursts: (t_ns, level_db)
        self._mic_names: set[str] = set()  # microphones heard so far (one-microphone set-ups exist)
        self._train_bursts: deque[tuple[int, float, float]] = deque()  # bursts of trains: (t_ns, level, hf)
        self._last_train_ns = -(2**62)  # last burst of the last closed train

    def add(self, sensor: str, t_ns: int, stream_t_s: float, tr: Transient) -> None:
        shift = self._offset_ns(sensor)
        c = _Cand(int(t_ns) - shift, float(stream_t_s), sensor, tr, shift_ns=shift)
        self._mic_names.add(sensor)
        s = self.settings
        if tr.band in ("high", "mid"):
            self._hm.append(c)  # sorted once both microphones' samples are in (``_sort_hm``)
        elif (tr.band == "low"
              and tr.level_db >= min(s.snap_recur_min_db, s.snap_pair_min_db, s.classifier.snap_min_db,
                                     s.snap_jerk_min_db)
              and tr.width_s <= max(s.classifier.snap_max_width_s, s.snap_pair_max_width_s,
                                    s.snap_jerk_max_width_s)):
            self._snaps.append(c)

    def on_mic(self, sensor: str, t0_ns: int, rate_hz: float, x: np.ndarray) -> None:
        """A microphone's next samples (full scale) and the wall time (ns) of the first: kept briefly for the
        coherence of the two microphones."""
        h = self._mic_hist.get(sensor)
        if h is None or h.rate_hz != rate_hz:
            h = self._mic_hist[sensor] = MicHistory(rate_hz, self.settings.coherence.keep_s)
        h.add(t0_ns, x)

    def _offset_ns(self, sensor: str) -> int:
        """How late ``sensor``'s clock runs behind the first microphone's (ns; 0 for the first one)."""
        names = list(self._mic_hist)
        lag = self.offset.samples
        if lag is None or len(names) < 2 or sensor != names[1]:
            return 0
        return round(lag * 1e9 / self._mic_hist[sensor].rate_hz)

    def pair_at(self, t_ns: int) -> PairStats | None:
        """What the microphones' samples around ``t_ns`` (the first microphone's clock) share (:func:`pair_stats`
        at the second one's clock offset; one microphone: its own spectrum, coherence NaN); None when the samples
        are not (all) kept."""
        cs = self.settings.coherence
        hist = list(self._mic_hist.values())[:2]
        if not hist or len(hist) == 2 and hist[0].rate_hz != hist[1].rate_hz:
            return None
        rate = hist[0].rate_hz
        n = round(cs.window_s * rate)
        t0 = t_ns - round(cs.window_s / 2 * 1e9)
        a = hist[0].window(t0, n)
        if a is None:
            return None
        if len(hist) == 1:
            return pair_stats(a, None, rate, cs.band_hz, cs.max_lag, cs.tone_band_hz, cs.tone_halfwidth_hz)
        b = hist[1].window(t0 + self._offset_ns(list(self._mic_hist)[1]), n)
        if b is None:
            return None
        return pair_stats(a, b, rate, cs.band_hz, cs.max_lag, cs.tone_band_hz, cs.tone_halfwidth_hz)

    def _learn_offset(self, ready: list[_Cand]) -> None:
        """Scan the clear transients that both microphones had (within +-``search_s``) for the clock offset, and
        move the second microphone's pending candidates onto the first one's clock with what was learnt."""
        s, cs = self.settings, self.settings.coherence
        hist = list(self._mic_hist.values())[:2]
        if len(hist) < 2 or hist[0].rate_hz != hist[1].rate_hz:
            return
        rate, search = hist[0].rate_hz, round(cs.search_s * 1e9)
        # Twice the coherence window: a sound is one waveform, chance matches in noise fall off with the length.
        ns, span = 2 * round(cs.window_s * rate), round(cs.search_s * rate)
        step = 1e9 / rate
        pending = ready + self._hm
        before = self.offset.samples
        first, second = list(self._mic_hist)[:2]
        for c in ready:  # the first microphone's transients: their samples are the scan's reference
            if c.sensor != first or c.tr.level_db < s.coherent_min_db or c.t_ns <= self._scanned_ns:
                continue
            if not any(o.sensor == second and abs(o.t_ns - c.t_ns) <= search for o in pending):
                continue
            self._scanned_ns = c.t_ns + round(cs.window_s * 1e9)  # one scan per sound
            start = c.t_ns - round((ns / 2 + span) * step)
            a, b = hist[0].window(start, ns + 2 * span), hist[1].window(start, ns + 2 * span)
            if a is not None and b is not None:
                j, r = lag_scan(a, b, ns, rate, cs.band_hz)
                if r >= cs.confident:
                    self.offset.update(c.t_ns, j)
        if self.offset.samples != before:
            shift = self._offset_ns(second)
            for c in (*pending, *self._snaps, *self._weak, *self._bursts):
                if c.sensor == second and c.shift_ns != shift:
                    c.t_ns += c.shift_ns - shift
                    c.shift_ns = shift

    def _sort_hm(self, until_ns: int) -> None:
        """High/mid transients up to ``until_ns``: bursts (a click or crepitus burst), weak ones waiting for the
        other microphone (no coherence available), or noise."""
        s = self.settings
        self._hm.sort(key=lambda c: c.t_ns)
        n = 0
        while n < len(self._hm) and self._hm[n].t_ns <= until_ns:
            n += 1
        ready, self._hm = self._hm[:n], self._hm[n:]
        self._learn_offset(ready)
        ready.sort(key=lambda c: c.t_ns)
        merge = round(s.burst_merge_s * 1e9)
        i = 0
        while i < len(ready):
            j = i + 1
            while j < len(ready) and ready[j].t_ns - ready[i].t_ns <= merge:
                j += 1
            group = ready[i:j]
            i = j
            loud = max(group, key=lambda c: c.tr.level_db)
            pair = self.pair_at(loud.t_ns)
            coh = None if pair is None or not np.isfinite(pair.coherence) else pair.coherence
            for c in group:
                c.pair = pair
                tr = c.tr
                thud = self._thud(tr)  # an impact's crack
                if is_burst(tr, s.classifier) and not thud:
                    if coh is not None and coh < s.incoherent_max:
                        self.incoherent += 1
                        continue
                    if coh is not None and coh >= s.coherent_min:
                        self._paired.add(id(c))  # heard by both microphones
                    self._bursts.append(c)
                    self._burst_times.append((c.t_ns, tr.level_db))
                elif thud and is_burst(tr, s.classifier):
                    self.vetoed += 1
                elif (coh is not None and coh >= s.coherent_min and not thud and tr.level_db >= s.coherent_min_db
                      and tr.width_s <= s.coherent_max_width_s):
                    self._paired.add(id(c))  # heard by both microphones
                    self._bursts.append(c)
                    self._burst_times.append((c.t_ns, tr.level_db))
                elif (coh is None and tr.band == "high" and tr.level_db >= s.burst_pair_min_db
                      and tr.width_s <= s.burst_pair_max_width_s and tr.hf_fraction >= s.burst_pair_min_hf
                      and not thud):
                    self._weak.append(c)

    def on_imu(self, sensor: str, t_ns: np.ndarray, accel_g: np.ndarray, angle_deg: float = float("nan")) -> None:
        """``t_ns`` (n,) sample times (ns), ``accel_g`` (n, 3) in g; ``angle_deg`` the joint angle (deg) at the
        frame's first sample, if :meth:`on_angles` does not give the whole series."""
        self.impacts.update(sensor, t_ns, accel_g)
        self.jerks.update(sensor, t_ns, accel_g)
        if not self._angle_series and t_ns.size and np.isfinite(angle_deg):
            self._add_angles(t_ns[:1], np.array([float(angle_deg)]))

    def on_angles(self, t_ns: np.ndarray, angle_deg: np.ndarray) -> None:
        """The joint's main angle (deg; knee flexion, shoulder elevation) at ``t_ns`` (ns), as it is estimated;
        NaN where unknown."""
        if not self._angle_series:
            self._angle_series = True
            self._angle_parts, self._angle_t, self._angle_v = [], self._angle_t[:0], self._angle_v[:0]
        self._add_angles(np.asarray(t_ns, np.int64).ravel(), np.asarray(angle_deg, float).ravel())

    def _add_angles(self, t_ns: np.ndarray, angle_deg: np.ndarray) -> None:
        ok = np.isfinite(angle_deg)
        if ok.any():
            self._angle_parts.append((t_ns[ok], angle_deg[ok]))

    def _angles(self) -> tuple[np.ndarray, np.ndarray]:
        """The angle history (t_ns, deg), time-ordered, the last ``angle_keep_s``."""
        if self._angle_parts:
            t = np.concatenate([self._angle_t] + [p[0] for p in self._angle_parts])
            v = np.concatenate([self._angle_v] + [p[1] for p in self._angle_parts])
            self._angle_parts = []
            keep = t > np.maximum.accumulate(np.concatenate(([t[0] - 1], t[:-1])))  # two sensors' frames: monotonic
            t, v = t[keep], v[keep]
            start = np.searchsorted(t, t[-1] - round(self.settings.angle_keep_s * 1e9))
            self._angle_t, self._angle_v = t[start:], v[start:]
        return self._angle_t, self._angle_v

    def angle_at(self, t_ns: int) -> float:
        """Joint angle (deg) at ``t_ns`` from the recorded history; NaN when none."""
        t, v = self._angles()
        if not t.size:
            return float("nan")
        return float(np.interp(t_ns, t, v))

    def _rate(self, t_ns: int) -> float:
        """The angle's rate (deg/s) over +-50 ms around ``t_ns`` (NaN when unknown)."""
        return (self.angle_at(t_ns + 50_000_000) - self.angle_at(t_ns - 50_000_000)) * 10.0

    def _direction(self, t_ns: int) -> float:
        """Sign of the angle's rate over +-50 ms around ``t_ns``: +1 flexing, -1 extending, 0 unknown."""
        d = self._rate(t_ns)
        return float(np.sign(d)) if np.isfinite(d) else 0.0

    def poll(self, now_ns: int) -> list[SoundEvent]:
        self._sort_hm(now_ns - round(self.settings.hold_s * 1e9))  # bursts first: they may hide a thump
        out = self._poll_snaps(now_ns) + self._poll_bursts(now_ns)
        return sorted(out, key=lambda e: e.t_ns)

    def flush(self) -> list[SoundEvent]:
        return self.poll(2**62)

    # ------------------------------------------------------------ snaps

    def _poll_snaps(self, now_ns: int) -> list[SoundEvent]:
        s, out = self.settings, []
        # Both microphones' low band must have decided the instant: their spectrogram trails the input.
        hold = round(max(s.hold_s, band_lag_s(s.transient.low)) * 1e9)
        merge = round(s.snap_merge_s * 1e9)
        self._snaps.sort(key=lambda c: c.t_ns)
        while self._snaps and self._snaps[0].t_ns <= now_ns - hold - merge:
            first = self._snaps.pop(0)
            same = [first] + [c for c in self._snaps if c.t_ns - first.t_ns <= merge]
            self._snaps = [c for c in self._snaps if c not in same]
            if self.impacts.near(first.t_ns, low_band=True):
                self.vetoed += 1
                continue
            while self._burst_times and self._burst_times[0][0] < first.t_ns - 500_000_000:
                self._burst_times.popleft()
            lo, hi = -round(s.thump_burst_before_s * 1e9), round(s.thump_burst_after_s * 1e9)
            best = max(same, key=lambda c: c.tr.level_db)
            angle, direction = self.angle_at(first.t_ns), self._direction(first.t_ns)
            wide = [c for c in same if c.tr.width_s <= s.snap_jerk_max_width_s]
            wide_db = max((c.tr.level_db for c in wide), default=-np.inf)
            at_snap = wide_db >= s.snap_angle_min_db and self._at_snap_angle(first.t_ns, angle, direction)
            burst_db = max((lvl for b, lvl in self._burst_times if lo <= b - first.t_ns <= hi), default=-np.inf)
            if burst_db > best.tr.level_db + (s.snap_angle_burst_db if at_snap else s.thump_hidden_db):
                continue  # broadband: the low end of a louder click or crepitus burst, not a thump of its own
            recur = self._recurs(first.t_ns, angle, direction)
            if np.isfinite(angle) and best.tr.level_db >= s.snap_recur_min_db:
                self._thumps.append((first.t_ns, angle, direction))
            while self._thumps and self._thumps[0][0] < first.t_ns - round(s.zone_keep_s * 1e9):
                self._thumps.popleft()
            per_mic: dict[str, float] = {}
            for c in same:
                if c.tr.width_s <= s.snap_pair_max_width_s:
                    per_mic[c.sensor] = max(per_mic.get(c.sensor, -np.inf), c.tr.level_db)
            pair = len(per_mic) >= 2 and min(per_mic.values()) >= s.snap_pair_min_db
            narrow = [c for c in same if c.tr.width_s <= s.classifier.snap_max_width_s]
            felt = self._snap_felt(first.t_ns)
            heard = same if pair else narrow
            ok = pair
            if not ok and narrow:
                best = max(narrow, key=lambda c: c.tr.level_db)
                lvl = best.tr.level_db
                both = len({c.sensor for c in narrow}) >= min(2, len(self._mic_names))
                ok = lvl >= s.snap_one_mic_db or both and (lvl >= s.classifier.snap_min_db
                                                           or recur and lvl >= s.snap_recur_min_db)
            if not ok and (at_snap or felt and wide_db >= s.snap_jerk_min_db):
                ok, heard = True, wide
                best = max(wide, key=lambda c: c.tr.level_db)
            if not ok:
                continue
            if abs(self._rate(first.t_ns)) < s.snap_min_rate_dps:  # NaN (unknown angle) passes
                continue
            if first.t_ns - self._last_snap_ns < round(s.snap_refractory_s * 1e9):
                continue
            self._last_snap_ns = first.t_ns
            if np.isfinite(angle) and direction != 0.0:
                self._snap_angles.append((first.t_ns, angle, direction))
            while self._snap_angles and self._snap_angles[0][0] < first.t_ns - round(s.zone_keep_s * 1e9):
                self._snap_angles.popleft()
            conf = snap_confidence(best.tr, s.classifier)
            if recur:  # heard at this angle on an earlier crossing: the repetition is evidence too
                conf = max(conf, logistic(1.0))
            if felt:  # felt as well as heard
                conf = max(conf, logistic(1.5))
            out.append(self._event("snap", first, best, conf, {"sensors": len({c.sensor for c in heard}),
                                                                "recurring": recur or at_snap, "felt": felt}))
        return out

    def _at_snap_angle(self, t_ns: int, angle: float, direction: float) -> bool:
        """Whether an earlier decided snap (``snap_recur_gap_s`` or more before) was at ``angle`` (+-``snap_angle_deg``)
        on the same crossing direction."""
        s = self.settings
        if not np.isfinite(angle) or direction == 0.0:
            return False
        gap = round(s.snap_recur_gap_s * 1e9)
        return any(t_ns - t >= gap and d == direction and abs(a - angle) <= s.snap_angle_deg
                   for t, a, d in self._snap_angles)

    def _snap_felt(self, t_ns: int) -> bool:
        """Whether a sensor rang like a snapping tendon right after a thump at ``t_ns``: clearly above its usual
        ring over the last ``snap_ring_bg_s``, and ``snap_ring_over_other`` times more than the other sensor (the
        jerk starts at the joint and reaches one segment more than the other; movement rings both alike)."""
        s = self.settings
        w0, w1 = s.snap_ring_window_s
        rings = self.jerks.ring(t_ns + round(w0 * 1e9), t_ns + round(w1 * 1e9))
        if not rings:
            return False
        sensor, (t, v) = max(rings.items(), key=lambda kv: kv[1][1])
        other = max((r[1] for k, r in rings.items() if k != sensor), default=0.0)
        bg = self.jerks.background(sensor, t - round(s.snap_ring_bg_s * 1e9), t - 50_000_000)
        return v >= max(s.snap_ring_g2, s.snap_ring_over_bg * bg, s.snap_ring_over_other * other)

    def _recurs(self, t_ns: int, angle: float, direction: float) -> bool:
        """Whether a thump was heard at ``angle`` (deg), same crossing direction, on an earlier crossing."""
        s = self.settings
        if not np.isfinite(angle) or direction == 0.0:  # a tendon snaps on a crossing: the joint must move
            return False
        gap = round(s.snap_recur_gap_s * 1e9)
        return any(t_ns - t >= gap and abs(a - angle) <= s.snap_recur_deg and d == direction
                   for t, a, d in self._thumps)

    # ------------------------------------------------------------ bursts: clicks and crepitus

    def _in_zone(self, angle: float) -> bool:
        """Whether ``angle`` (deg) lies in the flexion range where crepitus trains recurred."""
        s = self.settings
        if not np.isfinite(angle):
            return False
        n = sum(lo - s.zone_margin_deg <= angle <= hi + s.zone_margin_deg for _, lo, hi in self._trains)
        return n >= s.zone_min_trains

    def _promote_pairs(self, until_ns: int) -> None:
        """Weak high-band transients up to ``until_ns`` heard by both microphones within ``burst_pair_s``
        become bursts; the rest are dropped."""
        s = self.settings
        self._weak.sort(key=lambda c: c.t_ns)
        tol = round(s.burst_pair_s * 1e9)
        n = 0
        while n < len(self._weak) and self._weak[n].t_ns <= until_ns:
            n += 1
        ready, self._weak = self._weak[:n], self._weak[n:]
        for i, c in enumerate(ready):
            if id(c) in self._paired:
                continue
            mate = next((d for d in ready[i + 1:] + self._weak if d.sensor != c.sensor and abs(d.t_ns - c.t_ns) <= tol
                         and id(d) not in self._paired), None)
            if mate is None:
                continue
            for x in (c, mate):
                self._paired.add(id(x))
                self._bursts.append(x)
                self._burst_times.append((x.t_ns, x.tr.level_db))
        if len(self._paired) > 4096:  # ids of long-decided transients
            self._paired = {id(c) for c in self._bursts}

    def _poll_bursts(self, now_ns: int) -> list[SoundEvent]:
        s, out = self.settings, []
        hold, gap = round(s.hold_s * 1e9), round(s.train_gap_s * 1e9)
        self._promote_pairs(now_ns - hold)
        self._bursts.sort(key=lambda c: c.t_ns)
        merge = round(s.burst_merge_s * 1e9)
        while self._bursts and self._bursts[0].t_ns <= now_ns - hold - merge:
            # One burst: as heard in both bands on both microphones (within ``burst_merge_s``).
            first = self._bursts[0].t_ns
            n = 1
            while n < len(self._bursts) and self._bursts[n].t_ns - first <= merge:
                n += 1
            burst, self._bursts = self._bursts[:n], self._bursts[n:]
            near = [c for c in burst if self.impacts.near(c.t_ns)]
            if near:  # an impact's crack, unless a click (never a crepitus burst: grinding is not judged here)
                click = [c for c in near if self._click_like(c)]
                if not click or (len(self._train_ref(burst[0].t_ns)) >= s.standout_min_ref
                                 and not self._stands_out(click)):
                    click = []
                burst = [c for c in burst if c not in near or c in click]
            self.vetoed += n - len(burst)
            if not burst:
                continue
            c = burst[0]
            if self._group and c.t_ns - self._group[-1][0].t_ns <= gap and self._stands_out(burst):
                out.append(self._click(burst))  # a click during a train: not one of its bursts
                continue
            rate = self._rate(c.t_ns)  # a still joint (|rate| < 5 deg/s: no grinding) has no direction
            direction = float(np.sign(rate)) if np.isfinite(rate) and abs(rate) >= 5.0 else 0.0
            self._rearm(c.t_ns, direction)
            if self._group and c.t_ns - self._group[-1][0].t_ns > gap:
                out += self._close()
            self._group.append(burst)
            self._last_burst_ns, self._last_burst_dir = c.t_ns, direction
            out += self._train_update()
        if self._group and now_ns - hold - self._group[-1][0].t_ns > round(s.click_wait_s * 1e9) \
                and (len(self._group) < 2 or now_ns - hold - self._group[-1][0].t_ns > gap):
            out += self._close()
        return out

    def _click_like(self, c: _Cand) -> bool:
        """Whether ``c`` is a cavitation click's high band, not an impact's crack (see ``impact_click_min_hf``)."""
        s, tr = self.settings, c.tr
        return (s.impact_click_min_hf <= 1.0 and tr.band == "high" and tr.hf_fraction >= s.impact_click_min_hf
                and tr.level_db >= s.classifier.click_min_db and not self._thud(tr))

    def _thud(self, tr: Transient) -> bool:
        """Whether ``tr`` has an impact's thud tail: 0-500 Hz power after it ``thud_min_db`` over the background and
        at most ``thud_below_level_db`` below the transient itself."""
        s = self.settings
        return tr.lf_db >= max(s.thud_min_db, tr.level_db - s.thud_below_level_db)

    def _rearm(self, t_ns: int, direction: float) -> None:
        """A new movement cycle (see ``SoundSettings``): silence, a foot strike in a gait, or a cyclic swing
        grinding again where the reported train started."""
        if self._armed:
            return
        s = self.settings
        if t_ns - self._last_burst_ns > round(s.rearm_silence_s * 1e9) or (
                s.rearm_on_impact and self.impacts.between(self._last_burst_ns, t_ns, s.rearm_gait_s)):
            self._armed = True
            return
        rt, ra, rd = self._reported
        landed = self.impacts.between(t_ns - round(s.rearm_turn_quiet_s * 1e9), t_ns)
        if (s.rearm_turn_gap_s > 0 and not landed
                and t_ns - self._last_burst_ns <= round(s.rearm_turn_gap_s * 1e9)
                and self._last_burst_dir > 0 and direction < 0 and self.angle_at(t_ns) <= s.rearm_turn_max_deg):
            # A swing turning back at the top of its flexion while grinding: the next rep starts here.
            self._armed = True
            if self._group:
                self._group_reported, self._group_from = False, len(self._group)
            return
        if (t_ns - self._last_burst_ns >= round(s.rearm_cycle_gap_s * 1e9)
                and t_ns - rt >= round(s.rearm_cycle_min_s * 1e9) and rd != 0.0
                and abs(self.angle_at(t_ns) - ra) <= s.rearm_cycle_deg and self._direction(t_ns) == rd
                and not self.impacts.between(rt, t_ns)):
            self._armed = True

    def _stands_out(self, burst: list[_Cand]) -> bool:
        """Whether ``burst`` is far louder and higher-pitched than the recent trains' bursts (a click)."""
        s = self.settings
        ref = self._train_ref(burst[0].t_ns)
        if len(ref) < s.standout_min_ref:
            return False
        lvl, hf = self._burst_stats(burst)
        pair = next((c.pair for c in burst if c.pair is not None), None)
        tonal = pair is not None and pair.tonality >= s.standout_tone_min and pair.peak_hz >= s.standout_tone_hz
        return bool(lvl >= np.percentile([r[0] for r in ref], 90) + (s.standout_tone_db if tonal else s.standout_db)
                    and hf >= max(s.standout_min_hf, float(np.median([r[1] for r in ref])) + s.standout_hf_margin))

    def _train_ref(self, t_ns: int) -> list[tuple[float, float]]:
        """(level dB, hf fraction) of the bursts of the trains of the last ``zone_keep_s`` and the open group."""
        while self._train_bursts and self._train_bursts[0][0] < t_ns - round(self.settings.zone_keep_s * 1e9):
            self._train_bursts.popleft()
        return [(lvl, hf) for _, lvl, hf in self._train_bursts] + [self._burst_stats(b) for b in self._group]

    @staticmethod
    def _burst_stats(burst: list[_Cand]) -> tuple[float, float]:
        """(loudest level dB, highest high-band hf fraction) of one burst."""
        return (max(c.tr.level_db for c in burst),
                max((c.tr.hf_fraction for c in burst if c.tr.band == "high"), default=0.0))

    def _click(self, burst: list[_Cand]) -> SoundEvent:
        s = self.settings
        best = max(burst, key=lambda c: c.tr.level_db)
        conf = logistic((best.tr.level_db - s.classifier.click_min_db) / s.classifier.slope_db)
        return self._event("click", min(burst, key=lambda c: c.t_ns), best, conf,
                           {"hf_fraction": round(self._burst_stats(burst)[1], 2), "in_train": True})

    def _train_update(self) -> list[SoundEvent]:
        """The open group just got a burst: report crepitus once it is a train, or a burst in the zone."""
        s = self.settings
        c = self._group[-1][0]
        angle = self.angle_at(c.t_ns)
        if self._group_reported:
            return []
        n = len(self._group) - self._group_from
        if n < s.classifier.train_min_bursts and (n < s.zone_min_bursts or not self._in_zone(angle)
                                                   or (n == 1 and self._stands_out(self._group[-1]))):
            return []
        self._group_reported = True
        if not self._armed:  # the same cycle's grinding, already reported
            return []
        self._armed = False
        # The event: the earliest burst within one train gap of the confirming one (bounded latency).
        start = next(b for b in self._group[self._group_from:] if c.t_ns - b[0].t_ns <= round(s.train_gap_s * 1e9))[0]
        self._reported = (start.t_ns, self.angle_at(start.t_ns), self._direction(start.t_ns))
        every = [x for b in self._group for x in b]
        best = max(every, key=lambda x: x.tr.level_db)
        conf = train_confidence(n, s.classifier) if n >= s.classifier.train_min_bursts else logistic(0.5)
        details: dict[str, Any] = {"bursts_at_report": n, "in_zone": self._in_zone(angle),
                                   "hf_fraction": round(max(x.tr.hf_fraction for x in every), 2)}
        return [self._event("crepitus", start, best, conf, details)]

    def _close(self) -> list[SoundEvent]:
        group, self._group = self._group, []
        reported, self._group_reported = self._group_reported or self._group_from > 0, False
        self._group_from = 0
        s = self.settings
        if len(group) >= s.classifier.train_min_bursts:
            self._train_bursts.extend((b[0].t_ns, *self._burst_stats(b)) for b in group)
            angles = [a for a in (self.angle_at(b[0].t_ns) for b in group) if np.isfinite(a)]
            if angles:  # a confirmed train marks its range for the zone
                self._trains.append((group[0][0].t_ns, min(angles), max(angles)))
            while self._trains and self._trains[0][0] < group[0][0].t_ns - round(s.zone_keep_s * 1e9):
                self._trains.popleft()
            self._last_train_ns = group[-1][0].t_ns
        if reported:
            return []
        if (len(group) == 1 and group[0][0].t_ns - self._last_train_ns <= round(s.train_tail_s * 1e9)
                and not self._stands_out(group[0])):
            return []  # the last, sparse grinding of the train just before
        decided = classify_group([[c.tr for c in burst] for burst in group], s.classifier)
        if decided is None and len(group) == 1 and any(id(c) in self._paired for c in group[0]):
            top = max(group[0], key=lambda c: c.tr.level_db)
            if top.tr.band == "high" and top.tr.hf_fraction >= s.classifier.click_min_hf:  # a weak click, both mics
                decided = ("click", logistic((top.tr.level_db - s.classifier.click_min_db) / s.classifier.slope_db))
        if decided is None or decided[0] != "click":
            return []  # two bursts outside the zone: too little for a train, too much for a click
        kind, conf = decided
        every = [c for burst in group for c in burst]
        best = max(every, key=lambda c: c.tr.level_db)
        # A click is its loudest burst (a weaker one before it is noise).
        first = min(next(b for b in group if best in b), key=lambda c: c.t_ns)
        return [self._event(kind, first, best, conf, {"hf_fraction": round(best.tr.hf_fraction, 2)})]

    def _event(self, kind: str, first: _Cand, best: _Cand, conf: float, details: dict[str, Any]) -> SoundEvent:
        return SoundEvent(kind, first.t_ns, first.stream_t_s, best.sensor, float(np.clip(conf, 0.0, 1.0)),
                          float(best.tr.level_db), {"flexion_deg": round(self.angle_at(first.t_ns), 1), **details})
