"""Shoulder (humerothoracic) elevation, plane of elevation and rotation from upper-arm + trunk sensors.

Convention (the simulator's ``shoulder_angles_from_orientations``): ``R_trunk^T R_upper_arm =
R_z(-s plane) R_x(s elevation) R_z(s (plane - rotation))``, ``s`` = +1 left, -1 right; elevation 0 =
arm hanging, plane 0 = frontal-plane abduction, 90 = forward flexion.

Calibration: the trunk's long axis is the gravity direction in its sensor while standing still
(the trunk is upright then). The upper arm's long axis comes from the same pose only when the arm
hangs (its sensor's z within ``ARM_HANGING_MAX_DEG`` of gravity): a session may start in the front
rack or a dead hang, where the humerus is not vertical and nothing tells its axis; then the sensor
is taken as mounted along the humerus and its misalignment (3-15 deg) remains in the elevation.
Elevation depends on the relative heading of
the two 6D orientations only through the trunk's lean, so it is nearly heading-free. Plane and
rotation need that heading, which a 3-DoF joint does not constrain; it is taken from VQF's
initialisation (both earth frames start at their sensor's heading) and drifts with the gyro
bias: treat plane and rotation as provisional. Output starts once the standing pose is seen.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from analysis.knee_angles import GAP_SETTLE_S, side_sign
from analysis.orientation import SegmentOrientation
from analysis.segment_calibration import mounting_from_axes, quat_wxyz_to_rotation
from analysis.sensor_pair import GapWindows, SensorPair

SHOULDER_ANGLES = ("elevation_deg", "plane_deg", "rotation_deg")
# The standing pose calibrates the upper arm's long axis only when the arm hangs: the sensor's z axis is
# then within its misalignment (<= 15 deg) of the measured gravity. A front rack (elevation 70-80 deg) or
# a dead hang (150-170 deg) is far outside this, so neither is mistaken for a hanging arm.
ARM_HANGING_MAX_DEG = 30.0


def shoulder_angles_from_segments(r_trunk: Rotation, r_upper_arm: Rotation, joint: str) -> dict[str, np.ndarray]:
    """Elevation, plane and rotation (deg) from segment -> world rotations; scipy's intrinsic "ZXZ"
    Euler angles of the (mirrored, for the right side) relative rotation."""
    s = side_sign(joint)
    m = np.atleast_3d((r_trunk.inv() * r_upper_arm).as_matrix()).reshape(-1, 3, 3)
    if s < 0:  # mirror the right side onto the left: P M P with P = diag(1, -1, 1)
        m = m * np.array([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, 1.0]])
    e = np.degrees(Rotation.from_matrix(m).as_euler("ZXZ"))
    a, b, c = e[:, 0], e[:, 1], e[:, 2]
    plane = -a

    def wrap(x: np.ndarray) -> np.ndarray:
        return (x + 180.0) % 360.0 - 180.0

    return {"elevation_deg": b, "plane_deg": wrap(plane), "rotation_deg": wrap(plane - c)}


class ShoulderAngles:
    """Feed ``update("upper_arm" | "trunk", t_ns, accel_g, gyro_dps)``; get ``(t_ns, {name: deg})`` at the
    upper arm's sample times (NaN until the standing pose has been seen)."""

    def __init__(self, rate_hz: float, joint: str = "left_shoulder", still_gyro_dps: float = 10.0,
                 still_min_s: float = 1.0) -> None:
        self.joint = joint
        side_sign(joint)
        self._orient = {"upper_arm": SegmentOrientation(rate_hz), "trunk": SegmentOrientation(rate_hz)}
        self._pair = SensorPair("upper_arm", "trunk", 10, (slice(0, 4),))
        self._need = int(round(still_min_s * rate_hz))
        self._still_gyro_dps = still_gyro_dps
        self._run = 0
        self._acc_sum = np.zeros(3)
        self._arm_acc_sum = np.zeros(3)
        self.trunk_mounting: np.ndarray | None = None
        # Sensor -> humerus rotation: from the standing pose when the arm hangs (its long axis is then the
        # measured gravity, so the tilt of the sensor on the arm is removed, which is what elevation
        # depends on); else the sensor is taken as mounted along the humerus (``arm_calibrated`` False).
        self.arm_mounting = np.eye(3)
        self.arm_calibrated = False
        self._gaps = GapWindows(GAP_SETTLE_S)  # after long gaps, as for the knee: orientation unknown

    @property
    def calibrated(self) -> bool:
        return self.trunk_mounting is not None

    def update(self, sensor: str, t_ns: np.ndarray, accel_g: np.ndarray, gyro_dps: np.ndarray,
               first_index: int | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        q = self._gaps.follow(self._orient[sensor], accel_g, gyro_dps, t_ns, first_index)
        self._pair.push(sensor, t_ns, np.column_stack((q, accel_g, gyro_dps)))
        t_out, arm, trunk = self._pair.pop()
        out = {k: np.full(t_out.size, np.nan) for k in SHOULDER_ANGLES}
        unknown = self._gaps.mask(t_out)
        if t_out.size:
            self._gaps.prune(int(t_out[-1]))
        start = 0
        if not self.calibrated and t_out.size:
            still = ((np.linalg.norm(arm[:, 7:10], axis=1) < self._still_gyro_dps)
                     & (np.linalg.norm(trunk[:, 7:10], axis=1) < self._still_gyro_dps))
            # Sum the trunk's accelerometer over the first still run of the required length (a short
            # loop over runs, not samples: a chunk holds a few).
            start = t_out.size
            for i in range(t_out.size):  # noqa: B007 - bounded: only until the standing pose is found
                if still[i]:
                    self._run += 1
                    self._acc_sum += trunk[i, 4:7]
                    self._arm_acc_sum += arm[i, 4:7]
                    if self._run >= self._need:
                        self.trunk_mounting = mounting_from_axes(self._acc_sum / self._run, np.array([0.0, 1.0, 0.0]))
                        up = self._arm_acc_sum / np.linalg.norm(self._arm_acc_sum)
                        if np.degrees(np.arccos(np.clip(up[2], -1.0, 1.0))) < ARM_HANGING_MAX_DEG:
                            self.arm_mounting = mounting_from_axes(up, np.array([0.0, 1.0, 0.0]))
                            self.arm_calibrated = True
                        start = i + 1
                        break
                else:
                    self._run, self._acc_sum, self._arm_acc_sum = 0, np.zeros(3), np.zeros(3)
        if self.trunk_mounting is not None and start < t_out.size:
            r_trunk = quat_wxyz_to_rotation(trunk[start:, 0:4]) * Rotation.from_matrix(self.trunk_mounting.T)
            r_arm = quat_wxyz_to_rotation(arm[start:, 0:4]) * Rotation.from_matrix(self.arm_mounting.T)
            for k, v in shoulder_angles_from_segments(r_trunk, r_arm, self.joint).items():
                out[k][start:] = v
        for v in out.values():
            v[unknown] = np.nan
        return t_out, out
