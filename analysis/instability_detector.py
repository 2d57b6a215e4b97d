"""Giving way (knee instability): a sudden, uncontrolled flexion with a rotational jerk of the tibia.

Physics used (no exercise knowledge): in controlled knee motion - slow or fast squats, jump landings, running -
tibial rotation follows flexion (the screw-home coupling, ~0.05-0.10 deg of internal rotation per degree of
flexion), so the rotation rate is a fixed multiple of the flexion rate. When the knee gives way the tibia twists
on the femur within ~0.1 s, much faster than the coupling explains, while the knee collapses into extra flexion
and the body drops (the shank accelerometer reads less than 1 g). The detector

1. learns the coupling ``k`` online (least squares of rotation rate on flexion rate over plausibly coupled
   samples) and forms the residual rotation rate ``|d rot/dt - k d flex/dt|`` (deg/s);
2. takes each rise of the residual above ``rotation_rate_dps`` as a candidate;
3. confirms it when the flexion surges: within ``surge_window_s`` it exceeds its constant-velocity extrapolation
   from just before the jerk by ``flexion_surge_deg``;
4. vetoes candidates next to an impact (|accel| of any sensor above ``impact_g``: landings and footstrikes shake
   the estimated angles), when IMU data are given; the shank's unloading (|accel| below ``unloading_g``) raises
   the confidence.

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
    unloading_g: float = 0.9  # shank |accel| below this (g) around the collapse: the body drops
    imu_wait_s: float = 1.0  # wait at most this long for IMU data to cover a candidate, s


class InstabilityDetector:
    """Streaming giving-way detector: ``update(t_ns, flexion_deg, rotation_deg) -> [KinematicEvent]``.

    Feed IMU magnitudes through the shared :class:`ImuContext` (optional). Events come out ``surge_window_s`` +
    the filter delay (~0.3 s) after the onset.
    """

    def __init__(self, settings: InstabilitySettings | None = None, imu: ImuContext | None = None) -> None:
        s = self.settings = settings or InstabilitySettings()
        w = int(round(s.smooth_window_s * s.rate_hz)) | 1
        self._f = SavgolStream(w, 2, 0, s.rate_hz)
        self._fr = SavgolStream(w, 2, 1, s.rate_hz)
        self._rr = SavgolStream(w, 2, 1, s.rate_hz)
        self._t = DelayLine(w // 2)
        self._lead = int(round(s.onset_lead_s * s.rate_hz))
        self._win = int(round(s.surge_window_s * s.rate_hz))
        self._acc_span = int(round(s.decel_span_s * s.rate_hz))
        self._hist = History(("t", "f", "fr", "res"), keep=4 * (self._win + self._lead + self._acc_span) + 8)
        prior_w = s.coupling_prior_weight_s * s.rate_hz * 100.0**2
        self._sxx = prior_w
        self._sxy = prior_w * s.coupling_prior
        self._above = False
        self._next = 0  # absolute index of the next sample whose crossing is still to be decided
        self._pending: list[int] = []  # candidate crossings (absolute indices) waiting for look-ahead / IMU
        self._refractory_until_ns = np.iinfo(np.int64).min
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
        f = self._f.process(flexion_deg)
        fr = self._fr.process(flexion_deg)
        rr = self._rr.process(rotation_deg)
        t = self._t.process(t_ns)
        # Coupling, learned sample by sample from plausibly coupled motion (sequential sums: chunking-exact).
        use = (np.abs(fr) > s.coupling_min_rate_dps) & (np.abs(rr) < s.coupling_max_ratio * np.abs(fr))
        sxx = np.cumsum(np.concatenate(([self._sxx], np.where(use, fr * fr, 0.0))))
        sxy = np.cumsum(np.concatenate(([self._sxy], np.where(use, fr * rr, 0.0))))
        k = sxy[:-1] / sxx[:-1]  # coupling known before each sample
        self._sxx, self._sxy = float(sxx[-1]), float(sxy[-1])
        res = np.abs(rr - k * fr)
        base = self._hist.end
        self._hist.append(t=t.astype(float), f=f, fr=fr, res=res)
        above = res > s.rotation_rate_dps
        self._pending += [base + int(i) for i in rising_edges(above, self._above)]
        self._above = bool(above[-1])
        out = self._decide()
        self._hist.trim(self._pending[0] - self._lead - self._acc_span if self._pending else None)
        return out

    def _decide(self) -> list[KinematicEvent]:
        s = self.settings
        out: list[KinematicEvent] = []
        h = self._hist
        while self._pending:
            c = self._pending[0]
            o = max(c - self._lead, h.start)
            if o + self._win + 1 > h.end:
                break  # look-ahead not there yet
            t_on = int(h.window("t", o, o + 1)[0])
            if self.imu is not None and self.imu.sensors:
                covered = self.imu.covered_until_ns()
                t_last = int(h.window("t", h.end - 1, h.end)[0])
                need = t_on + int((s.surge_window_s + s.impact_after_s) * 1e9)
                if covered is not None and covered < need and t_last - need < s.imu_wait_s * 1e9:
                    break  # wait for the IMU to catch up (results must not depend on chunking)
            self._pending.pop(0)
            if t_on < self._refractory_until_ns:
                continue
            ev = self._confirm(o, t_on)
            if ev is not None:
                out.append(ev)
                self._refractory_until_ns = t_on + int(s.refractory_s * 1e9)
        return out

    def _confirm(self, o: int, t_on: int) -> KinematicEvent | None:
        s = self.settings
        h = self._hist
        f = h.window("f", o, o + self._win + 1)
        fr = h.window("fr", o - self._acc_span, o + 1)
        v0 = float(fr[-1])
        # Deceleration (or an accelerating ascent) just before the onset is extrapolated too: a collapse near
        # the bottom of a descent shows as flexion that stops slowing down.
        a0 = min((fr[-1] - fr[0]) * s.rate_hz / max(fr.size - 1, 1), 0.0)
        tau = np.arange(f.size) / s.rate_hz
        extra = f - f[0] - v0 * tau - 0.5 * a0 * tau**2
        surge = float(extra.max())
        if surge < s.flexion_surge_deg:
            return None
        peak_res = float(h.window("res", o, o + self._win + 1).max())
        details: dict[str, float | bool] = {"extra_flexion_deg": round(surge, 1),
                                            "rotation_rate_dps": round(peak_res, 1),
                                            "flexion_deg": round(float(f[0]), 1)}
        conf = 0.6 + 0.2 * min(peak_res / (2 * s.rotation_rate_dps), 1.0)
        if self.imu is not None and self.imu.sensors:
            t0 = t_on - int(s.impact_before_s * 1e9)
            t1 = t_on + int(s.impact_after_s * 1e9)
            peak_g = self.imu.max_accel(t0, t1)
            if peak_g > s.impact_g:
                return None  # a landing or footstrike: shaken angles, not a giving way
            shank = self.imu.accel_window("shank", t_on - int(0.05e9), t_on + int(s.surge_window_s * 1e9))
            if shank.size:
                low = float(shank.min())
                details["shank_min_accel_g"] = round(low, 2)
                details["unloading"] = bool(low < s.unloading_g)
                conf += 0.19 if low < s.unloading_g else -0.1
        return KinematicEvent("instability", t_on, surge, float(np.clip(conf, 0.05, 0.99)), details)
