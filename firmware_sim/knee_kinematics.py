"""Knee kinematics: the 3D thigh + shank chain (:func:`knee_chain`) and the first version's planar squat model.

3D chain
--------
Frames and the joint-angle convention are defined in :mod:`firmware_sim.body_model` (world X anterior, Y left,
Z up; ``R_shank = R_thigh @ R_y(flexion) @ R_x(s * abduction) @ R_z(-s * rotation)``, s = +1 left, -1 right).
:func:`knee_chain` composes the two segments either from the ankle (closed chain, foot planted: squats,
lunges, step-downs, landings; the shank's world orientation is given) or from the hip (open chain: running,
leg swings; the thigh's world orientation is given). Sensors sit on the skin in front of each bone's long
axis (``*_skin_offset_m``), near the knee joint line.

Planar squat model (first version, kept for compatibility: :func:`plan_squats`, :func:`sensor_motion`)
---------------------------------------------------------------------------------------------------
World frame: X anterior (forward), Y left, Z up; the ankle is fixed at the origin.

* Shank lean ``alpha`` (degrees): rotation of the shank about world +Y, so the knee moves forward
  (the shank long axis tilts from +Z toward +X). Shank orientation ``R_y(alpha)``.
* Thigh lean ``beta`` (degrees): the thigh leans back, the hip moves backward. Thigh orientation
  ``R_y(-beta)``.
* Knee flexion = ``alpha + beta`` (degrees, 0 = straight).
* ``R_y(theta) = [[cos, 0, sin], [0, 1, 0], [-sin, 0, cos]]``.

Each sensor frame coincides with the world frame when standing (x anterior, y left, z up along the
segment), i.e. sensor orientation = segment orientation (no mounting misalignment in this version).
The "pitch" of a sensor below is its rotation about world +Y: ``alpha`` for the shank, ``-beta`` for
the thigh. Everything is evaluated analytically from minimum-jerk ramps, so positions, velocities and
accelerations are exactly consistent (no numerical differentiation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from firmware_sim.body_model import (
    G_MPS2,
    AthleteProfile,
    Kinematics,
    PointTraj,
    RotTraj,
    Traj,
    body_offset,
    knee_joint_rotation_traj,
    segment_motion,
)

__all__ = [
    "G_MPS2",
    "SEGMENTS",
    "AthleteProfile",
    "SensorMotion",
    "SquatPlan",
    "SquatRep",
    "knee_chain",
    "plan_squats",
    "sensor_motion",
]

SEGMENTS = ("thigh", "shank")


def knee_chain(
    t_s: np.ndarray,
    *,
    side: str,
    profile: AthleteProfile,
    root: PointTraj,
    root_segment: str,
    root_rotation: RotTraj,
    flexion_deg: Traj,
    abduction_deg: Traj,
    rotation_deg: Traj,
    shocks_m: dict[str, Traj] | None = None,
) -> Kinematics:
    """Thigh and shank motion from a root point, the root segment's orientation and the knee angles (degrees).

    ``root_segment="shank"``: ``root`` is the ankle joint centre and ``root_rotation`` the shank's world
    orientation (closed chain); ``"thigh"``: ``root`` is the hip joint centre and ``root_rotation`` the thigh's
    (open chain). ``shocks_m`` adds a soft-tissue displacement (m) along a segment's long axis to that segment's
    sensor (footstrike shocks), keyed by segment name.
    """
    shocks_m = shocks_m or {}
    joint = knee_joint_rotation_traj(flexion_deg, abduction_deg, rotation_deg, side)
    L_s, L_t = profile.shank_length_m, profile.thigh_length_m
    off_s = np.array([profile.shank_skin_offset_m, 0.0, profile.shank_sensor_from_ankle_m])
    off_t = np.array([profile.thigh_skin_offset_m, 0.0, profile.thigh_sensor_from_knee_m])
    if root_segment == "shank":
        r_shank = root_rotation
        r_thigh = r_shank @ joint.inv()
        knee = root.attach(r_shank, np.array([0.0, 0.0, L_s]))
        shank_sensor = root.attach(r_shank, body_offset(off_s, shocks_m.get("shank")))
    elif root_segment == "thigh":
        r_thigh = root_rotation
        r_shank = r_thigh @ joint
        knee = root.attach(r_thigh, np.array([0.0, 0.0, -L_t]))
        shank_sensor = knee.attach(r_shank, body_offset(off_s - np.array([0.0, 0.0, L_s]), shocks_m.get("shank")))
    else:
        raise ValueError(f"root_segment must be 'shank' or 'thigh', got {root_segment!r}")
    thigh_sensor = knee.attach(r_thigh, body_offset(off_t, shocks_m.get("thigh")))
    t = np.asarray(t_s, dtype=float)
    return Kinematics(
        t_s=t,
        segments={"thigh": segment_motion(t, r_thigh, thigh_sensor), "shank": segment_motion(t, r_shank, shank_sensor)},
        angles={"flexion_deg": flexion_deg, "abduction_deg": abduction_deg, "rotation_deg": rotation_deg},
        main_angle="flexion_deg",
        extras={"knee_position_m": knee.p},
    )


# ---------------------------------------------------------------- the first version's planar squat model


@dataclass(frozen=True)
class SquatRep:
    """One squat repetition, times in seconds since session start, flexion in degrees."""

    t_start_s: float  # descent begins (knee straight)
    t_bottom_s: float  # descent ends, bottom hold begins (peak flexion)
    t_rise_s: float  # hold ends, ascent begins
    t_end_s: float  # ascent ends (knee straight again)
    peak_flexion_deg: float


def _min_jerk(u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-jerk profile s(u) = 10u^3 - 15u^4 + 6u^5 on u in [0, 1] and its 1st/2nd derivatives in u.

    s' and s'' vanish at both ends, so joined ramps have continuous velocity *and* acceleration: the
    simulated accelerometer has no steps.
    """
    u2 = u * u
    s = u2 * u * (10.0 - 15.0 * u + 6.0 * u2)
    ds = 30.0 * u2 * (1.0 - 2.0 * u + u2)
    d2s = 60.0 * u * (1.0 - 3.0 * u + 2.0 * u2)
    return s, ds, d2s


@dataclass(frozen=True)
class SquatPlan:
    """The schedule of one squat session: standing start, then reps separated by standing pauses.

    ``flexion(t)`` evaluates the knee flexion (degrees) and its 1st/2nd time derivatives (deg/s,
    deg/s^2) at any times (seconds). Flexion is split between shank (``alpha_fraction``) and thigh.
    """

    duration_s: float
    stand_start_s: float  # the session starts with [0, stand_start_s) standing still (calibration window)
    alpha_fraction: float  # alpha = alpha_fraction * flexion, beta = (1 - alpha_fraction) * flexion
    reps: tuple[SquatRep, ...]

    def _ramps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Ramp start times (s), durations (s), start and end flexion (deg): descent, ascent per rep."""
        if not self.reps:
            empty = np.empty(0)
            return empty, empty, empty, empty
        r = np.array([(x.t_start_s, x.t_bottom_s, x.t_rise_s, x.t_end_s, x.peak_flexion_deg) for x in self.reps])
        t0 = np.column_stack([r[:, 0], r[:, 2]]).ravel()
        dur = np.column_stack([r[:, 1] - r[:, 0], r[:, 3] - r[:, 2]]).ravel()
        zero = np.zeros(len(r))
        v0 = np.column_stack([zero, r[:, 4]]).ravel()
        v1 = np.column_stack([r[:, 4], zero]).ravel()
        return t0, dur, v0, v1

    def flexion(self, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Knee flexion (deg), flexion rate (deg/s) and flexion acceleration (deg/s^2) at times ``t_s`` (s)."""
        t = np.asarray(t_s, dtype=float)
        t0, dur, v0, v1 = self._ramps()
        if t0.size == 0:
            z = np.zeros_like(t)
            return z, z.copy(), z.copy()
        # Each time belongs to the last ramp that started before it; between ramps the value holds at
        # that ramp's end value (peak during the bottom hold, 0 while standing), derivatives are 0.
        idx = np.searchsorted(t0, t, side="right") - 1
        started = idx >= 0
        i = np.maximum(idx, 0)
        T = dur[i]
        u = np.clip((t - t0[i]) / T, 0.0, 1.0)
        s, ds, d2s = _min_jerk(u)
        dv = v1[i] - v0[i]
        theta = np.where(started, v0[i] + dv * s, 0.0)
        theta_dot = np.where(started, dv * ds / T, 0.0)
        theta_ddot = np.where(started, dv * d2s / (T * T), 0.0)
        return theta, theta_dot, theta_ddot

    def moving_intervals(self) -> np.ndarray:
        """(k, 2) array of [start, end) seconds of every descent and ascent, in time order."""
        t0, dur, _, _ = self._ramps()
        return np.column_stack([t0, t0 + dur])


def plan_squats(duration_s: float, rng: np.random.Generator, *, end_margin_s: float = 0.25) -> SquatPlan:
    """Draw a random squat schedule for a session of ``duration_s`` seconds.

    Standing still for 1-2 s at the start; each rep: descent 0.8-1.2 s, bottom hold 0.1-0.4 s,
    ascent 0.7-1.1 s (1.5-2.3 s down + up); 0.5-1.5 s standing between reps. Peak flexion per rep is
    drawn around an athlete-specific depth (98-108 deg, SD 4 deg) and clipped to 90-115 deg. Only reps
    that end at least ``end_margin_s`` before the session end are kept (no partial rep at the end).
    """
    stand_start = float(rng.uniform(1.0, 2.0))
    alpha_fraction = float(rng.uniform(0.27, 0.33))
    mean_depth = rng.uniform(98.0, 108.0)
    # Draw more reps than can possibly fit (shortest rep + pause is 2.1 s), then keep the prefix that
    # fits. One row of uniforms per rep: the same seed gives the same first reps for any duration.
    n_max = int(np.ceil(max(duration_s, 0.0) / 2.1)) + 1
    u = rng.random((n_max, 5))
    down = 0.8 + 0.4 * u[:, 0]
    hold = 0.1 + 0.3 * u[:, 1]
    up = 0.7 + 0.4 * u[:, 2]
    pause = 0.5 + 1.0 * u[:, 3]
    peak = np.clip(mean_depth + 4.0 * ndtri(u[:, 4]), 90.0, 115.0)  # normal via the inverse CDF
    rep_len = down + hold + up
    starts = stand_start + np.concatenate(([0.0], np.cumsum(rep_len + pause)[:-1]))
    n = int(np.count_nonzero(starts + rep_len <= duration_s - end_margin_s))  # ends are increasing
    reps = tuple(
        SquatRep(float(s), float(s + d), float(s + d + h), float(s + d + h + a), float(p))
        for s, d, h, a, p in zip(starts[:n], down[:n], hold[:n], up[:n], peak[:n], strict=True)
    )
    return SquatPlan(float(duration_s), stand_start, alpha_fraction, reps)


@dataclass(frozen=True)
class SensorMotion:
    """True motion of one sensor (frame = its segment's frame), sampled at the given times.

    ``pitch_deg``: rotation of the sensor frame about world +Y (deg); ``rate_dps`` its time derivative
    (deg/s), which is also the sensor-frame y angular velocity. ``position_m`` / ``accel_mps2``: sensor
    origin position (m) and acceleration (m/s^2) in the world frame, shape (n, 3).
    """

    pitch_deg: np.ndarray
    rate_dps: np.ndarray
    position_m: np.ndarray
    accel_mps2: np.ndarray

    def rotation(self) -> np.ndarray:
        """Sensor-to-world rotation matrices R_y(pitch), shape (n, 3, 3)."""
        phi = np.radians(self.pitch_deg)
        c, s = np.cos(phi), np.sin(phi)
        z, o = np.zeros_like(phi), np.ones_like(phi)
        return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)

    def specific_force_g(self) -> np.ndarray:
        """Noise-free accelerometer reading in g, sensor frame: R^T (a_world / g + [0, 0, 1]), (n, 3)."""
        f = self.accel_mps2 / G_MPS2
        f[:, 2] += 1.0  # specific force = acceleration minus gravity (gravity is -Z)
        phi = np.radians(self.pitch_deg)
        c, s = np.cos(phi), np.sin(phi)
        # R_y(phi)^T applied row-wise, written out to avoid building (n, 3, 3) matrices.
        return np.column_stack([c * f[:, 0] - s * f[:, 2], f[:, 1], s * f[:, 0] + c * f[:, 2]])


def _axis_and_accel(phi: np.ndarray, phi_dot: np.ndarray, phi_ddot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Segment axis u = R_y(phi) e_z = [sin, 0, cos] and its 2nd time derivative (inputs rad, rad/s, rad/s^2).

    d2u/dt2 = phi_ddot * du/dphi - phi_dot^2 * u: tangential plus centripetal term.
    """
    c, s, z = np.cos(phi), np.sin(phi), np.zeros_like(phi)
    u = np.column_stack([s, z, c])
    w = np.column_stack([c, z, -s])  # du/dphi
    d2u = phi_ddot[:, None] * w - (phi_dot * phi_dot)[:, None] * u
    return u, d2u


def sensor_motion(plan: SquatPlan, t_s: np.ndarray, profile: AthleteProfile | None = None) -> dict[str, SensorMotion]:
    """True motion of the ``"thigh"`` and ``"shank"`` sensors at times ``t_s`` (s), see :class:`SensorMotion`."""
    profile = profile or AthleteProfile()
    t = np.asarray(t_s, dtype=float)
    theta, theta_dot, theta_ddot = (np.radians(x) for x in plan.flexion(t))
    fa, fb = plan.alpha_fraction, 1.0 - plan.alpha_fraction
    # Shank pitch = +alpha, thigh pitch = -beta (both about world +Y).
    ua, d2ua = _axis_and_accel(fa * theta, fa * theta_dot, fa * theta_ddot)
    ub, d2ub = _axis_and_accel(-fb * theta, -fb * theta_dot, -fb * theta_ddot)
    r_s, L_s, r_t = profile.shank_sensor_from_ankle_m, profile.shank_length_m, profile.thigh_sensor_from_knee_m
    shank = SensorMotion(
        pitch_deg=np.degrees(fa * theta),
        rate_dps=np.degrees(fa * theta_dot),
        position_m=r_s * ua,
        accel_mps2=r_s * d2ua,
    )
    # The thigh sensor rides on the knee, which itself moves with the shank.
    thigh = SensorMotion(
        pitch_deg=np.degrees(-fb * theta),
        rate_dps=np.degrees(-fb * theta_dot),
        position_m=L_s * ua + r_t * ub,
        accel_mps2=L_s * d2ua + r_t * d2ub,
    )
    return {"thigh": thigh, "shank": shank}
