"""Knee flexion from the thigh and shank sensors' orientations, streaming.

This version assumes sensors mounted with their y axis along the knee's flexion axis (the
simulator's default); flexion is then the difference of the two segments' sagittal
inclinations. Sensor-to-segment calibration for arbitrary mounting comes with the
detection-science issue.
"""

from __future__ import annotations

import numpy as np

from analysis.orientation import SegmentOrientation, sagittal_inclination_deg


class KneeFlexion:
    """Feed each sensor's IMU frames with their sample times; get flexion (degrees, 0 = straight,
    positive = flexed) at the thigh's sample times, as soon as the shank covers them.

    The two sensors have separate clocks, so the shank's inclination is interpolated at the
    thigh's times (both already mapped to wall time by the gateway).
    """

    def __init__(self, rate_hz: float) -> None:
        self._orient = {"thigh": SegmentOrientation(rate_hz), "shank": SegmentOrientation(rate_hz)}
        self._t: dict[str, np.ndarray] = {"thigh": np.empty(0, np.int64), "shank": np.empty(0, np.int64)}
        self._incl: dict[str, np.ndarray] = {"thigh": np.empty(0), "shank": np.empty(0)}

    def update(self, sensor: str, t_ns: np.ndarray, accel_g: np.ndarray, gyro_dps: np.ndarray,
               ) -> tuple[np.ndarray, np.ndarray]:
        """Add one frame of ``sensor`` ("thigh" or "shank"); return (t_ns, flexion_deg) now computable."""
        incl = sagittal_inclination_deg(self._orient[sensor].update(accel_g, gyro_dps))
        self._t[sensor] = np.concatenate((self._t[sensor], t_ns))
        self._incl[sensor] = np.concatenate((self._incl[sensor], incl))
        return self._emit()

    def _emit(self) -> tuple[np.ndarray, np.ndarray]:
        tt, ts = self._t["thigh"], self._t["shank"]
        if tt.size == 0 or ts.size == 0:
            return np.empty(0, np.int64), np.empty(0)
        ready = tt <= ts[-1]
        n = int(np.count_nonzero(ready))
        if n == 0:
            return np.empty(0, np.int64), np.empty(0)
        t_out = tt[:n]
        shank = np.interp(t_out, ts, self._incl["shank"])
        flex = shank - self._incl["thigh"][:n]
        # Keep the shank samples still needed for interpolation of later thigh samples.
        keep = max(int(np.searchsorted(ts, t_out[-1], side="right")) - 1, 0)
        self._t["thigh"], self._incl["thigh"] = tt[n:], self._incl["thigh"][n:]
        self._t["shank"], self._incl["shank"] = ts[keep:], self._incl["shank"][keep:]
        return t_out, flex
