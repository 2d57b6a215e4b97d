"""Dynamic knee valgus: knee abduction beyond a threshold during loaded flexion, as episodes with magnitude.

Angles in degrees: ``flexion_deg`` (0 = straight), ``abduction_deg`` (knee abduction = valgus positive, the
angle helper's convention), ``rotation_deg`` (tibial internal rotation positive). Times in ns.

* The estimator's abduction may carry an offset and a slow drift; the detector re-references it to the
  abduction of quiet standing (flexion below ``standing_max_flexion_deg``), followed with time constant
  ``baseline_tau_s``. The truth is 0 there, so nothing changes on true angles.
* An episode: re-referenced abduction above ``threshold_deg`` (off below ``threshold_deg - hysteresis_deg``)
  while the knee is flexed beyond ``min_flexion_deg`` (loaded flexion), lasting ``min_duration_s``. Episodes
  closer than ``merge_gap_s`` are one (a jump squat's countermovement and its landing absorption).
* Latency: the event comes out as soon as the episode is confirmed (``min_duration_s`` above the threshold in
  loaded flexion; ~0.14 s after the onset with the smoothing delay), not when it ends (0.3-2 s later). It
  carries the onset time and what is known at confirmation: magnitude = peak abduction so far (deg), details:
  ``confirmed_after_s``, flexion at that peak (deg) and the frontal-plane projection angle (FPPA, the 2-D video
  measure) there, estimated with :func:`fppa_deg`. The final peak of the rep comes with the rep
  (:meth:`peak_between`: ``peak_valgus_deg`` / ``fppa_deg`` of the "rep" event), and the duration of the last
  closed episode is :attr:`ValgusDetector.last_episode_s`.
* Samples with unknown abduction (NaN: before the sensor-to-segment calibration) are never an episode and do not
  touch the standing reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from analysis.kinematic_event import KinematicEvent
from analysis.stream_filters import DelayLine, History, SavgolStream


@dataclass(frozen=True)
class ValgusSettings:
    rate_hz: float = 200.0  # nominal sample rate of the angle stream, Hz
    threshold_deg: float = 5.0  # knee abduction above this is a valgus episode, deg (clinical default 5)
    hysteresis_deg: float = 1.0  # the episode ends below threshold - hysteresis, deg
    min_flexion_deg: float = 20.0  # only in loaded flexion: knee flexion above this, deg
    min_duration_s: float = 0.1  # shorter excursions are noise, s
    merge_gap_s: float = 1.0  # episodes closer than this are one event (countermovement + landing), s
    smooth_window_s: float = 0.075  # Savitzky-Golay smoothing window (order 2), s
    standing_max_flexion_deg: float = 10.0  # quiet standing (abduction reference) below this flexion, deg
    baseline_tau_s: float = 2.0  # time constant of the standing-abduction reference, s of standing
    baseline_max_deg: float = 4.0  # the reference is limited to +-this (a standing valgus is not an offset), deg
    shank_inclination_share: float = 0.4  # FPPA model: shank forward pitch per degree of knee flexion


def fppa_deg(flexion_deg: np.ndarray, abduction_deg: np.ndarray, rotation_deg: np.ndarray | float = 0.0,
             shank_inclination_deg: np.ndarray | float | None = None, shank_share: float = 0.4) -> np.ndarray:
    """Frontal-plane projection angle (FPPA) of the knee, as deviation from straight (deg, valgus positive).

    The 2-D video measure, from the 3-D segment orientations: the shank pitched forward by
    ``shank_inclination_deg`` (default ``shank_share * flexion``: closed-chain posture), the thigh placed relative
    to it by knee rotation (about the shank's long axis), abduction (about its anterior axis) and flexion; both
    segment axes are projected onto the frontal plane of a camera in front of the athlete and the angle between
    them is measured. Equals the abduction at zero flexion; in flexion the shank's forward pitch, the flexion
    and the tibial rotation all change it (which is why 2-D video and 3-D abduction disagree).
    """
    f = np.radians(np.asarray(flexion_deg, float))
    a = np.radians(np.asarray(abduction_deg, float))
    r = np.radians(np.asarray(rotation_deg, float))
    th = f * shank_share if shank_inclination_deg is None else np.radians(np.asarray(shank_inclination_deg, float))
    # Thigh (knee -> hip) in the shank frame (z up the shank, x anterior): flexion tilts it backward, abduction
    # turns it about x (hip lateral relative to the knee = valgus), rotation about z.
    v = np.stack([-np.sin(f), np.zeros_like(f * a), np.cos(f)])
    v = np.stack([v[0], np.cos(a) * v[1] - np.sin(a) * v[2], np.sin(a) * v[1] + np.cos(a) * v[2]])
    v = np.stack([np.cos(r) * v[0] - np.sin(r) * v[1], np.sin(r) * v[0] + np.cos(r) * v[1], v[2]])
    # Shank forward pitch (about world y): the frontal plane is y-z; the shank projects onto the vertical.
    z = -np.sin(th) * v[0] + np.cos(th) * v[2]
    return -np.degrees(np.arctan2(v[1], np.maximum(z, 1e-3)))


class ValgusDetector:
    """Streaming valgus episodes: ``update(t_ns, flexion_deg, abduction_deg, rotation_deg=None)``."""

    def __init__(self, settings: ValgusSettings | None = None) -> None:
        s = self.settings = settings or ValgusSettings()
        w = int(round(s.smooth_window_s * s.rate_hz)) | 1
        self._f = SavgolStream(w, 2, 0, s.rate_hz)
        self._a = SavgolStream(w, 2, 0, s.rate_hz)
        self._r = SavgolStream(w, 2, 0, s.rate_hz)
        self._t = DelayLine(w // 2)
        self._alpha = 1.0 - np.exp(-1.0 / (s.baseline_tau_s * s.rate_hz))
        self._base_zi: np.ndarray | None = None
        self.baseline_deg = 0.0
        self._keep = int(30 * s.rate_hz)
        self.history = History(("t", "f", "a", "r"), keep=self._keep)  # re-referenced angles (deg)
        self._on = False
        self._start = 0  # absolute index of the open episode's onset
        self._confirmed = False  # the open episode lasted min_duration_s (emitted, or merged into the last event)
        self._merge_until_ns = np.iinfo(np.int64).min
        self.last_episode_s = 0.0  # duration of the last confirmed episode, once it has ended (s)
        self._min_n = max(1, int(round(s.min_duration_s * s.rate_hz)))

    def update(self, t_ns: np.ndarray, flexion_deg: np.ndarray, abduction_deg: np.ndarray,
               rotation_deg: np.ndarray | None = None) -> list[KinematicEvent]:
        s = self.settings
        if len(t_ns) == 0:
            return []
        f = self._f.process(flexion_deg)
        a = self._a.process(abduction_deg)
        r = self._r.process(np.zeros(len(t_ns)) if rotation_deg is None else rotation_deg)
        t = self._t.process(np.asarray(t_ns, np.int64))
        a = a - self._baseline(f, a)
        base = self.history.end
        self.history.append(t=t.astype(float), f=f, a=a, r=r)
        on_thr = s.threshold_deg
        off_thr = s.threshold_deg - s.hysteresis_deg
        loaded = f > s.min_flexion_deg
        out: list[KinematicEvent] = []
        i, n = 0, a.size
        while i < n:  # loops over threshold crossings only
            if not self._on:
                hits = np.flatnonzero((a[i:] > on_thr) & loaded[i:])
                if not hits.size:
                    break
                self._on, self._start, self._confirmed = True, base + i + int(hits[0]), False
                i += int(hits[0])
            else:
                hits = np.flatnonzero(~(a[i:] >= off_thr) | ~loaded[i:])  # NaN ends an episode
                end = base + i + int(hits[0]) if hits.size else base + n
                if not self._confirmed and self._start + self._min_n <= end:
                    self._confirmed = True
                    ev = self._confirm(self._start)
                    if ev is not None:
                        out.append(ev)
                if not hits.size:
                    break
                self._on = False
                if self._confirmed:
                    t_end = float(self.history.window("t", end - 1, end)[0])
                    t_on = float(self.history.window("t", self._start, self._start + 1)[0])
                    self.last_episode_s = (t_end - t_on) / 1e9
                    self._merge_until_ns = int(t_end) + int(s.merge_gap_s * 1e9)
                i = end - base
        self.history.trim(self._start if self._on else None)
        return out

    def _baseline(self, f: np.ndarray, a: np.ndarray) -> np.ndarray:
        """The standing-abduction reference before each sample (deg): an EMA over quiet-standing samples only."""
        s = self.settings
        stand = (f < s.standing_max_flexion_deg) & np.isfinite(a)
        ref = np.full(a.size, self.baseline_deg)
        if stand.any():
            x = a[stand]
            if self._base_zi is None:
                self._base_zi = np.array([(1.0 - self._alpha) * x[0]])
            y, self._base_zi = lfilter([self._alpha], [1.0, -(1.0 - self._alpha)], x, zi=self._base_zi)
            y = np.clip(y, -s.baseline_max_deg, s.baseline_max_deg)
            # Each sample uses the reference known before it: the value after the last earlier standing sample.
            after = np.full(a.size, np.nan)
            after[stand] = y
            pos = np.maximum.accumulate(np.where(np.isnan(after), -1, np.arange(a.size)))
            filled = np.where(pos >= 0, after[np.maximum(pos, 0)], self.baseline_deg)
            ref = np.concatenate(([self.baseline_deg], filled[:-1]))
            self.baseline_deg = float(y[-1])
        return ref

    def _confirm(self, start: int) -> KinematicEvent | None:
        """The episode starting at absolute index ``start`` has lasted ``min_duration_s``: its event (None when
        it continues the last event's movement, e.g. a jump's landing after the countermovement)."""
        s = self.settings
        h = self.history
        end = start + self._min_n
        t = h.window("t", start, end)
        if t[0] < self._merge_until_ns:
            return None
        a = h.window("a", start, end)
        k = int(np.argmax(a))
        f_pk = float(h.window("f", start + k, start + k + 1)[0])
        r_pk = float(h.window("r", start + k, start + k + 1)[0])
        fp = float(fppa_deg(f_pk, float(a[k]), r_pk, shank_share=s.shank_inclination_share))
        peak = float(a[k])
        conf = float(np.clip(0.5 + 0.1 * (peak - s.threshold_deg), 0.5, 0.99))
        return KinematicEvent("valgus", int(t[0]), peak, conf,
                              {"confirmed_after_s": round((t[-1] - t[0]) / 1e9, 3),
                               "flexion_at_peak_deg": round(f_pk, 1), "fppa_deg": round(fp, 1),
                               "threshold_deg": s.threshold_deg, "reference_deg": round(self.baseline_deg, 2)})

    def merge_horizon_ns(self) -> int:
        """Until when (ns) a new episode would continue the last event's movement: an episode still open and
        confirmed at the end of the data continues to the last sample."""
        if self._on and self._confirmed and self.history.end > self.history.start:
            t_last = float(self.history.window("t", self.history.end - 1, self.history.end)[0])
            return max(self._merge_until_ns, int(t_last) + int(self.settings.merge_gap_s * 1e9))
        return self._merge_until_ns

    def merge_until(self, t_ns: int) -> None:
        """Episodes starting before ``t_ns`` continue an event already reported (e.g. by a backfill scan)."""
        self._merge_until_ns = max(self._merge_until_ns, int(t_ns))

    def peak_between(self, t0_ns: int, t1_ns: int) -> tuple[float, float] | None:
        """Peak re-referenced abduction (deg) with flexion above ``min_flexion_deg`` between two times, and the
        FPPA (deg) there; None if no such samples are held (the last 30 s are) or the abduction is unknown there."""
        d = self.history.data
        sel = (d["t"] >= t0_ns) & (d["t"] <= t1_ns) & (d["f"] > self.settings.min_flexion_deg) & np.isfinite(d["a"])
        if not sel.any():
            return None
        i = np.flatnonzero(sel)[int(np.argmax(d["a"][sel]))]
        return float(d["a"][i]), float(fppa_deg(d["f"][i], d["a"][i], d["r"][i],
                                                shank_share=self.settings.shank_inclination_share))
