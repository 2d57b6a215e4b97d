"""Giving way (knee instability): a sudden, uncontrolled flexion with a rotational jerk of the tibia.

Physics used (no exercise knowledge): in controlled knee motion - slow or fast squats, jump landings, running -
tibial rotation follows flexion (the screw-home coupling, ~0.05-0.10 deg of internal rotation per degree of
flexion), so the rotation rate is a fixed multiple of the flexion rate. When the knee gives way the tibia twists
on the femur within ~0.1 s, much faster than the coupling explains, while the knee collapses into extra flexion
and the body drops (the shank accelerometer reads less than 1 g). The detector

1. learns the coupling ``k`` online (least squares of rotation rate on flexion rate over plausibly coupled
   samples) and forms the residual rotation rate ``|d rot/dt - k d flex/dt|`` (deg/s);
2. takes each rise of the residual above ``rotation_rate_dps`` as a candidate; its onset is ``onset_lead_s``
   before the rise;
3. confirms it when the flexion surges: within ``surge_window_s`` it exceeds its constant-velocity extrapolation
   from just before the jerk by ``flexion_surge_deg``. It decides as soon as the surge is there (and no earlier
   than ``impact_after_s`` after the onset, when the impact window below is complete): ~0.15 s after the onset
   in 50 ms frames, the alert a coach needs at once; a candidate without a surge is dropped after the window;
4. near an impact (|accel| of any sensor above ``impact_g`` from ``impact_before_s`` before the onset to
   ``impact_after_s`` after it: landings and footstrikes shake the estimated angles for a few tens of ms), when
   IMU data are given, it also needs a twist that stays: ``impact_twist_deg`` of rotation beyond the coupling
   over the last ``twist_hold_s`` before the decision (a giving way at a landing, when knees are injured,
   twists ~10 deg and holds it; a wobble has passed by then). The shank's unloading (|accel| below
   ``unloading_g``) raises the confidence.

The event's time is the onset; its magnitude the extra flexion reached when decided (deg, a lower bound of the
collapse), ``details["decided_after_s"]`` the decision's delay after the onset.

Angles in degrees (knee flexion, tibial rotation relative to the femur, any sign convention), times in ns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.imu_context import ImuContext
from analysis.kinematic_event import KinematicEvent
from analysis.stream_filters import DelayLine, History, SavgolStream, rising_edges


@dataclass(frozen=True)
class InstabilitySettings:
    rate_hz: float = 200.0  # nominal sample rate of the angle stream, Hz
    smooth_window_s: float = 0.075  # Savitzky-Golay window (order 2) for the angle rates, s
    rotation_rate_dps: float = 80.0  # residual rotation rate that counts as a rotational jerk, deg/s
    flexion_surge_deg: float = 8.0  # extra flexion beyond constant-velocity extrapolation, deg
    surge_window_s: float = 0.25  # ... reached within this time after the onset, s
    onset_lead_s: float = 0.04  # the onset is taken this long before the residual crosses the threshold, s
    decel_span_s: float = 0.05  # the flexion deceleration before the onset is measured over this span, s
    refractory_s: float = 1.5  # one giving-way episode (collapse, hold, recovery) per this time, s
    coupling_prior: float = 0.07  # rotation per flexion (deg/deg) before any is learned
    coupling_prior_weight_s: float = 2.0  # the prior counts like this many seconds of coupled movement at 100 deg/s
    coupling_min_rate_dps: float = 30.0  # samples slower than this (flexion) do not teach the coupling, deg/s
    coupling_max_ratio: float = 0.3  # |rot rate| / |flex rate| above this is not coupling (an event, noise)
    impact_g: float = 6.0  # |accel| above this (g) near the onset marks a landing (8-16 g; heel strikes ~3 g)
    impact_before_s: float = 0.2  # veto window before the onset, s
    impact_after_s: float = 0.1  # ... and after it (covers the smoothing window and the onset lead), s
    impact_twist_deg: float = 4.0  # near an impact, a candidate needs this much sustained twist beyond the coupling,
    # deg (a giving way twists ~10 deg and holds it; an impact shakes the estimated rotation for 20-50 ms)
    twist_hold_s: float = 0.03  # ... over the last this-long before the decision (an impact wobble has passed), s
    unloading_g: float = 0.9  # shank |accel| below this (g) around the collapse: the body drops
    imu_wait_s: float = 1.0  # wait at most this long for IMU data to cover a candidate, s
    max_step_s: float = 0.25  # a longer step between angle samples (a link gap) breaks the stream: the filters
    # restart after it as after unknown angles (the orientation bridges shorter gaps), s


class InstabilityDetector:
    """Streaming giving-way detector: ``update(t_ns, flexion_deg, rotation_deg) -> [KinematicEvent]``.

    Feed IMU magnitudes through the shared :class:`ImuContext` (optional). Events come out when the surge is
    there, at least ``impact_after_s`` after the onset, plus the filter delay (``smooth_window_s`` / 2).
    """

    def __init__(self, settings: InstabilitySettings | None = None, imu: ImuContext | None = None) -> None:
        s = self.settings = settings or InstabilitySettings()
        w = int(round(s.smooth_window_s * s.rate_hz)) | 1
        self._f = SavgolStream(w, 2, 0, s.rate_hz)
        self._fr = SavgolStream(w, 2, 1, s.rate_hz)
        self._rr = SavgolStream(w, 2, 1, s.rate_hz)
        self._r = SavgolStream(w, 2, 0, s.rate_hz)
        self._t = DelayLine(w // 2)
        self._lead = int(round(s.onset_lead_s * s.rate_hz))
        self._win = int(round(s.surge_window_s * s.rate_hz))
        self._after = min(int(round(s.impact_after_s * s.rate_hz)), self._win)
        self._acc_span = int(round(s.decel_span_s * s.rate_hz))
        self._hist = History(("t", "f", "fr", "r", "res"), keep=4 * (self._win + self._lead + self._acc_span) + 8)
        prior_w = s.coupling_prior_weight_s * s.rate_hz * 100.0**2
        self._sxx = prior_w
        self._sxy = prior_w * s.coupling_prior
        self._above = False
        self._next = 0  # absolute index of the next sample whose crossing is still to be decided
        self._pending: list[int] = []  # candidate crossings (absolute indices) waiting for look-ahead / IMU
        self._refractory_until_ns = np.iinfo(np.int64).min
        self._last_t_ns: int | None = None
        self.imu = imu

    @property
    def coupling(self) -> float:
        """The learned rotation/flexion coupling (deg/deg)."""
        return self._sxy / self._sxx

    def update(self, t_ns: np.ndarray, flexion_deg: np.ndarray, rotation_deg: np.ndarray) -> list[KinematicEvent]:
        s = self.settings
        t_ns = np.asarray(t_ns, np.int64)
        if t_ns.size == 0:
            return []
        t_ns, flexion_deg, rotation_deg = self._break_at_gaps(t_ns, flexion_deg, rotation_deg)
        f = self._f.process(flexion_deg)
        fr = self._fr.process(flexion_deg)
        rr = self._rr.process(rotation_deg)
        r = self._r.process(rotation_deg)
        t = self._t.process(t_ns)
        # Coupling, learned sample by sample from plausibly coupled motion (sequential sums: chunking-exact).
        use = (np.abs(fr) > s.coupling_min_rate_dps) & (np.abs(rr) < s.coupling_max_ratio * np.abs(fr))
        sxx = np.cumsum(np.concatenate(([self._sxx], np.where(use, fr * fr, 0.0))))
        sxy = np.cumsum(np.concatenate(([self._sxy], np.where(use, fr * rr, 0.0))))
        k = sxy[:-1] / sxx[:-1]  # coupling known before each sample
        self._sxx, self._sxy = float(sxx[-1]), float(sxy[-1])
        res = np.abs(rr - k * fr)
        base = self._hist.end
        self._hist.append(t=t.astype(float), f=f, fr=fr, r=r, res=res)
        above = res > s.rotation_rate_dps
        self._pending += [base + int(i) for i in rising_edges(above, self._above)]
        self._above = bool(above[-1])
        out = self._decide()
        self._hist.trim(self._pending[0] - self._lead - self._acc_span if self._pending else None)
        return out

    def _break_at_gaps(self, t_ns: np.ndarray, flexion_deg: np.ndarray,
                       rotation_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One unknown (NaN) sample, one period after the last before it, inserted at each step longer than
        ``max_step_s``: the angles on either side of a link gap are not one movement (the filters, rates and surge
        windows count samples)."""
        s = self.settings
        prev = np.concatenate(([t_ns[0] if self._last_t_ns is None else self._last_t_ns], t_ns[:-1]))
        self._last_t_ns = int(t_ns[-1])
        at = np.flatnonzero(t_ns - prev > s.max_step_s * 1e9)
        if not at.size:
            return t_ns, np.asarray(flexion_deg, float), np.asarray(rotation_deg, float)
        t_gap = prev[at] + int(round(1e9 / s.rate_hz))
        return (np.insert(t_ns, at, t_gap), np.insert(np.asarray(flexion_deg, float), at, np.nan),
                np.insert(np.asarray(rotation_deg, float), at, np.nan))

    def _decide(self) -> list[KinematicEvent]:
        s = self.settings
        out: list[KinematicEvent] = []
        h = self._hist
        while self._pending:
            c = self._pending[0]
            o = max(c - self._lead, h.start)
            verdict = self._verdict(o)
            if verdict is None:
                break  # look-ahead not there yet
            d, surge = verdict
            t_on = int(h.window("t", o, o + 1)[0])
            t_d = int(h.window("t", d, d + 1)[0])
            if self.imu is not None and self.imu.sensors:
                covered = self.imu.covered_until_ns()
                t_last = int(h.window("t", h.end - 1, h.end)[0])
                need = max(t_d, t_on + int(s.impact_after_s * 1e9))
                if covered is not None and covered < need and t_last - need < s.imu_wait_s * 1e9:
                    break  # wait for the IMU to catch up (results must not depend on chunking)
            self._pending.pop(0)
            if t_on < self._refractory_until_ns or surge is None:
                continue
            ev = self._confirm(o, d, t_on, t_d, surge)
            if ev is not None:
                out.append(ev)
                self._refractory_until_ns = t_on + int(s.refractory_s * 1e9)
        return out

    def _verdict(self, o: int) -> tuple[int, float | None] | None:
        """Decide the flexion surge of a candidate with onset at absolute index ``o``: ``(d, surge)`` with ``d`` the
        deciding sample (the first where the extra flexion reaches ``flexion_surge_deg``, at least
        ``impact_after_s`` after the onset so that the impact veto is complete) and ``surge`` the extra flexion
        reached by then (deg), or ``(d, None)`` when the whole window passed without a surge; None while the
        samples needed are still to come. The deciding sample depends on the data only, not on chunking."""
        s = self.settings
        h = self._hist
        f = h.window("f", o, min(o + self._win + 1, h.end))
        if f.size == 0:
            return None
        fr = h.window("fr", o - self._acc_span, o + 1)
        fr = fr[np.isfinite(fr)]  # right after unknown angles (a link gap) judge with the rates there are
        if fr.size == 0:
            return o, None  # no flexion rate at the onset: nothing to extrapolate from
        v0 = float(fr[-1])
        # Deceleration (or an accelerating ascent) just before the onset is extrapolated too: a collapse near
        # the bottom of a descent shows as flexion that stops slowing down.
        a0 = min((fr[-1] - fr[0]) * s.rate_hz / max(fr.size - 1, 1), 0.0)
        tau = np.arange(f.size) / s.rate_hz
        extra = f - f[0] - v0 * tau - 0.5 * a0 * tau**2
        hit = np.flatnonzero(extra >= s.flexion_surge_deg)
        if hit.size:
            k = max(int(hit[0]), self._after)
            if k < f.size:
                return o + k, float(np.nanmax(extra[: k + 1]))  # finite: extra[hit[0]] is
            return None
        if f.size < self._win + 1:
            return None
        return o + self._win, None

    def _twist(self, o: int, d: int) -> float:
        """Rotation beyond the coupling (deg, absolute) since ``decel_span_s`` before the onset ``o`` (before any
        impact wobble the onset may sit on) that is still there at the deciding sample ``d``: the smallest over the
        last ``twist_hold_s`` before it."""
        s = self.settings
        h = self._hist
        a = max(o - self._acc_span, h.start)
        r, f = h.window("r", a, d + 1), h.window("f", a, d + 1)
        net = np.abs((r - r[0]) - self.coupling * (f - f[0]))[-max(int(round(s.twist_hold_s * s.rate_hz)), 1):]
        return float(net.min()) if np.isfinite(net).all() else 0.0  # unknown angles show no twist

    def _confirm(self, o: int, d: int, t_on: int, t_d: int, surge: float) -> KinematicEvent | None:
        s = self.settings
        h = self._hist
        res = h.window("res", o, d + 1)
        res = res[np.isfinite(res)]  # angles may turn unknown (NaN) after the onset, e.g. at a link gap
        peak_res = float(res.max()) if res.size else s.rotation_rate_dps
        f0 = float(h.window("f", o, o + 1)[0])
        details: dict[str, float | bool | None] = {"extra_flexion_deg": round(surge, 1),
                                                   "rotation_rate_dps": round(peak_res, 1),
                                                   "flexion_deg": round(f0, 1) if np.isfinite(f0) else None,
                                            "decided_after_s": round((t_d - t_on) / 1e9, 3)}
        conf = 0.6 + 0.2 * min(peak_res / (2 * s.rotation_rate_dps), 1.0)
        if self.imu is not None and self.imu.sensors:
            t0 = t_on - int(s.impact_before_s * 1e9)
            t1 = t_on + int(s.impact_after_s * 1e9)
            peak_g = self.imu.max_accel(t0, t1)
            if peak_g > s.impact_g:
                # A landing or footstrike shakes the estimated angles for a few tens of ms; a giving way at the
                # landing twists the tibia for good. Near an impact only a twist still there when deciding counts.
                twist = self._twist(o, d)
                details["impact_g"] = round(peak_g, 1)
                details["twist_deg"] = round(twist, 1)
                if twist < s.impact_twist_deg:
                    return None
            shank = self.imu.accel_window("shank", t_on - int(0.05e9), max(t_d, t1))
            if shank.size:
                low = float(shank.min())
                details["shank_min_accel_g"] = round(low, 2)
                details["unloading"] = bool(low < s.unloading_g)
                conf += 0.19 if low < s.unloading_g else -0.1
        return KinematicEvent("instability", t_on, surge, float(np.clip(conf, 0.05, 0.99)), details)
