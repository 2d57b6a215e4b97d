"""3D body model: frames, joint-angle conventions, rigid-segment kinematics with exact derivatives, profiles.

Frames
------
* World frame: X anterior (forward), Y left, Z up. Gravity is -Z. Positions in metres.
* Segment frames (thigh, shank, upper arm, trunk): when standing upright in the neutral pose (arms
  hanging), every segment frame equals the world frame: x anterior, y left, z up along the segment's
  long axis, pointing proximally (ankle -> knee, knee -> hip, elbow -> shoulder, hip -> neck).
* Sensor frames: a sensor's frame is its segment frame rotated by the (small) mounting misalignment
  ``M``: ``R_sensor = R_segment @ M`` (``M`` = sensor-to-segment rotation; identity = ideal mounting).
* Orientation matrices ``R`` map body (segment/sensor) coordinates to world coordinates, shape (n, 3, 3).
* ``R_x, R_y, R_z`` are right-handed elementary rotations, e.g. ``R_y(t) = [[c, 0, s], [0, 1, 0], [-s, 0, c]]``.

Knee joint angles (Grood & Suntay joint coordinate system as a Cardan Y-X-Z sequence)
-----------------------------------------------------------------------------------
``R_shank = R_thigh @ R_y(flexion) @ R_x(s * abduction) @ R_z(-s * rotation)`` with ``s = +1`` for the
left leg and ``s = -1`` for the right leg, angles in degrees:

* flexion: about the thigh's medio-lateral y axis; 0 = straight, positive = flexed (the shank's long axis
  tilts toward the thigh's +x, i.e. the foot goes back relative to the thigh).
* abduction (valgus positive): about the floating axis; positive = knee abduction/valgus = the knee
  collapses inward (the ankle moves laterally relative to the knee). Left leg: lateral = +Y, so valgus is a
  positive rotation about x; right leg: lateral = -Y, a negative one. Adduction/varus is negative.
* rotation (internal positive): about the shank's long axis; positive = internal rotation of the tibia
  relative to the femur (the tibia's anterior surface turns medially). Left: negative about z.

:func:`knee_angles_from_orientations` is the exact inverse (valid for |abduction| < 90 deg).

Shoulder (humerothoracic) angles, ISB-like sequence adapted to z-up frames
------------------------------------------------------------------------
``R_upper_arm = R_trunk @ R_z(-s * plane) @ R_x(s * elevation) @ R_z(s * (plane - rotation))``

* elevation (0..180 deg): the angle between the humerus and the trunk's downward vertical (arm hanging = 0,
  overhead = 180).
* plane of elevation (deg): direction of elevation in the trunk's transverse plane, ISB convention:
  0 = abduction in the frontal plane (the hand moves laterally), 90 = forward flexion in the sagittal plane,
  negative = behind the frontal plane. Undefined (returned as 0) at elevation 0.
* rotation (internal positive): axial rotation of the humerus. The trailing ``R_z(s * plane)`` makes it
  independent of the plane when the arm hangs, and elevation in a fixed plane with zero rotation is a pure
  rotation about the horizontal axis perpendicular to that plane (no "Codman paradox" in the truth).

:func:`shoulder_angles_from_orientations` is the exact inverse for 0 < elevation < 180 deg.

Kinematics with exact derivatives
---------------------------------
Angles, rotations and positions carry their 1st and 2nd time derivatives (:class:`Traj`,
:class:`RotTraj`, :class:`PointTraj`), composed with the chain rule. So the sensor's linear
acceleration and angular velocity are analytic, not numerically differentiated. Body angular velocity
``w`` is defined by ``dR/dt = R [w]x`` (rad/s, body frame), body angular acceleration ``a = dw/dt``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

G_MPS2 = 9.81  # standard gravity used for the g <-> m/s^2 conversion (the first version's value)
E_Z = np.array([0.0, 0.0, 1.0])


@dataclass(frozen=True)
class Impact:
    """A footstrike, landing or other impact: ``t_s`` time of the peak (s), ``peak_g`` its peak acceleration (g).

    ``peak_g`` is the programmed peak of the impact acceleration (without gravity) along the shank's long
    axis, before the IMU's anti-alias filter; the accelerometer shows about ``peak_g + 1`` g (or saturates).
    """

    t_s: float
    peak_g: float


@dataclass
class Label:
    """A ground-truth event (also importable as ``firmware_sim.session.Label``; same class).

    ``type``: "click", "snap", "crepitus" (microphone), "valgus", "instability", "locking" (kinematic events),
    "impact" (footstrike/landing, diagnostics). Times in seconds since session start (sensor clock).
    ``magnitude``: click/snap: peak SNR in dB; valgus: peak knee abduction, deg; instability: flexion drop, deg;
    locking: degrees short of full extension / of the usual range; impact: peak acceleration, g.
    """

    type: str
    joint: str  # e.g. "left_knee"
    t_start_s: float
    t_end_s: float
    magnitude: float


# ---------------------------------------------------------------- athlete profiles


@dataclass(frozen=True)
class AthleteProfile:
    """Segment lengths, sensor placement (metres) and typical range of motion (degrees) of one athlete type.

    The first four fields (and their defaults) are the first version's ``AthleteProfile``: the shank sensor
    sits ``shank_sensor_from_ankle_m`` up the shank from the ankle, the thigh sensor ``thigh_sensor_from_knee_m``
    up the thigh from the knee, both close to the knee joint line so both contact microphones hear the knee.
    """

    shank_length_m: float = 0.43
    thigh_length_m: float = 0.45
    shank_sensor_from_ankle_m: float = 0.33  # ~10 cm below the knee joint line
    thigh_sensor_from_knee_m: float = 0.12
    name: str = "medium"
    height_m: float = 1.75
    shank_skin_offset_m: float = 0.03  # sensor in front of the tibia's long axis (tibial crest), segment +x
    thigh_skin_offset_m: float = 0.07  # sensor in front of the femur's long axis (quadriceps), segment +x
    upper_arm_length_m: float = 0.30
    upper_arm_sensor_from_shoulder_m: float = 0.10  # lateral deltoid, below the acromion
    upper_arm_skin_offset_m: float = 0.045  # sensor lateral of the humerus's long axis
    shoulder_half_width_m: float = 0.19  # trunk midline to the glenohumeral joint centre
    shoulder_height_m: float = 0.50  # mid-hip to the shoulder joint centres, along the trunk
    trunk_sensor_height_m: float = 0.42  # mid-hip to the upper-back sensor (T3, between the scapulae)
    trunk_skin_offset_m: float = 0.10  # sensor behind the trunk's long axis, segment -x
    squat_depth_deg: tuple[float, float] = (98.0, 108.0)  # range of the session's mean bodyweight-squat depth
    max_knee_flexion_deg: float = 135.0
    lunge_depth_deg: float = 92.0  # front-knee flexion at the bottom of a lunge
    step_down_depth_deg: float = 62.0
    hip_swing_deg: tuple[float, float] = (65.0, 25.0)  # leg swing: forward flexion, backward extension peaks
    shoulder_max_elevation_deg: float = 170.0
    ankle_share: tuple[float, float] = (0.27, 0.33)  # shank's share of knee flexion in squats (range)
    valgus_tendency_deg: float = 1.5  # natural knee abduction at 100 deg of bodyweight flexion
    cadence_steps_per_s: float = 2.75  # running cadence (both legs)

    @property
    def hip_height_m(self) -> float:
        """Standing hip joint height above the ankle, m."""
        return self.shank_length_m + self.thigh_length_m


PROFILES: dict[str, AthleteProfile] = {
    "small": AthleteProfile(
        shank_length_m=0.39, thigh_length_m=0.41, shank_sensor_from_ankle_m=0.30, thigh_sensor_from_knee_m=0.11,
        name="small", height_m=1.60, upper_arm_length_m=0.27, upper_arm_sensor_from_shoulder_m=0.09,
        shoulder_half_width_m=0.17, shoulder_height_m=0.46, trunk_sensor_height_m=0.38,
        squat_depth_deg=(102.0, 112.0), max_knee_flexion_deg=140.0, lunge_depth_deg=95.0,
        step_down_depth_deg=65.0, hip_swing_deg=(70.0, 28.0), shoulder_max_elevation_deg=172.0,
        ankle_share=(0.29, 0.35), valgus_tendency_deg=2.0, cadence_steps_per_s=2.95,
    ),
    "medium": AthleteProfile(),
    "tall": AthleteProfile(
        shank_length_m=0.48, thigh_length_m=0.50, shank_sensor_from_ankle_m=0.37, thigh_sensor_from_knee_m=0.13,
        name="tall", height_m=1.92, thigh_skin_offset_m=0.08, upper_arm_length_m=0.34,
        upper_arm_sensor_from_shoulder_m=0.11, shoulder_half_width_m=0.21, shoulder_height_m=0.56,
        trunk_sensor_height_m=0.47, squat_depth_deg=(92.0, 102.0), max_knee_flexion_deg=130.0,
        lunge_depth_deg=88.0, step_down_depth_deg=58.0, hip_swing_deg=(60.0, 22.0),
        shoulder_max_elevation_deg=166.0, ankle_share=(0.24, 0.30), valgus_tendency_deg=1.2,
        cadence_steps_per_s=2.55,
    ),
    # Medium build with restricted range of motion (e.g. a stiff older athlete): shallower in everything.
    "stiff": AthleteProfile(
        name="stiff", squat_depth_deg=(78.0, 88.0), max_knee_flexion_deg=115.0, lunge_depth_deg=80.0,
        step_down_depth_deg=50.0, hip_swing_deg=(45.0, 15.0), shoulder_max_elevation_deg=150.0,
        ankle_share=(0.22, 0.27), valgus_tendency_deg=2.5, cadence_steps_per_s=2.6,
    ),
}


def get_profile(name: str) -> AthleteProfile:
    """The preset :class:`AthleteProfile` called ``name`` (one of :data:`PROFILES`); ``KeyError`` otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown athlete profile {name!r} (known: {', '.join(sorted(PROFILES))})") from None


def side_sign(side: str) -> float:
    """+1.0 for the left side, -1.0 for the right: ``"left"``, ``"right"`` or a joint name like ``"left_knee"``."""
    s = side.split("_", 1)[0].lower()
    if s == "left":
        return 1.0
    if s == "right":
        return -1.0
    raise ValueError(f"side must be 'left' or 'right' (or a joint like 'left_knee'), got {side!r}")


# ---------------------------------------------------------------- trajectories with derivatives


@dataclass(frozen=True)
class Traj:
    """Scalar time series ``v`` with its exact 1st and 2nd time derivatives ``d1``, ``d2`` (each (n,))."""

    v: np.ndarray
    d1: np.ndarray
    d2: np.ndarray

    @staticmethod
    def const(value: float | np.ndarray, n: int) -> Traj:
        """A constant (or piecewise constant, switching only where it does not matter) trajectory."""
        v = np.broadcast_to(np.asarray(value, dtype=float), (n,)).copy()
        z = np.zeros(n)
        return Traj(v, z, z.copy())

    def __add__(self, other: Traj | float) -> Traj:
        if isinstance(other, Traj):
            return Traj(self.v + other.v, self.d1 + other.d1, self.d2 + other.d2)
        return Traj(self.v + other, self.d1, self.d2)

    __radd__ = __add__

    def __neg__(self) -> Traj:
        return Traj(-self.v, -self.d1, -self.d2)

    def __sub__(self, other: Traj | float) -> Traj:
        return self + (-other)

    def __mul__(self, other: Traj | float | np.ndarray) -> Traj:
        if isinstance(other, Traj):  # product rule
            return Traj(
                self.v * other.v,
                self.d1 * other.v + self.v * other.d1,
                self.d2 * other.v + 2.0 * self.d1 * other.d1 + self.v * other.d2,
            )
        # A constant factor (an array factor must only change where this trajectory is flat and zero).
        return Traj(self.v * other, self.d1 * other, self.d2 * other)

    __rmul__ = __mul__

    def radians(self) -> Traj:
        """Degrees -> radians."""
        return self * (np.pi / 180.0)

    def take(self, index: np.ndarray | slice) -> Traj:
        """The samples at ``index``."""
        return Traj(self.v[index], self.d1[index], self.d2[index])


def _skew_cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.cross(a, b)


def _mt(R: np.ndarray) -> np.ndarray:
    return np.swapaxes(R, -1, -2)


def _mv(R: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Row-wise matrix-vector product: (n, 3, 3) x (n, 3) -> (n, 3)."""
    return np.einsum("nij,nj->ni", R, v)


def _mtv(R: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Row-wise R^T v."""
    return np.einsum("nji,nj->ni", R, v)


def elementary_rotation(axis: int, angle_rad: np.ndarray) -> np.ndarray:
    """Right-handed rotation matrices about body axis ``axis`` (0 = x, 1 = y, 2 = z) by ``angle_rad``, (n, 3, 3)."""
    a = np.asarray(angle_rad, dtype=float)
    c, s = np.cos(a), np.sin(a)
    R = np.zeros(a.shape + (3, 3))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]  # the plane rotated by the axis, in right-handed order
    R[..., axis, axis] = 1.0
    R[..., i, i] = c
    R[..., j, j] = c
    R[..., i, j] = -s
    R[..., j, i] = s
    return R


@dataclass(frozen=True)
class RotTraj:
    """Orientation time series ``R`` (n, 3, 3, body -> world) with body angular velocity ``w`` (rad/s) and body
    angular acceleration ``a`` (rad/s^2), both (n, 3), defined by ``dR/dt = R [w]x`` and ``a = dw/dt``."""

    R: np.ndarray
    w: np.ndarray
    a: np.ndarray

    @staticmethod
    def identity(n: int) -> RotTraj:
        return RotTraj(np.broadcast_to(np.eye(3), (n, 3, 3)).copy(), np.zeros((n, 3)), np.zeros((n, 3)))

    @staticmethod
    def about(axis: int, angle_rad: Traj) -> RotTraj:
        """Rotation about a fixed body axis by a time-varying angle (radians, with derivatives)."""
        n = angle_rad.v.shape[0]
        w = np.zeros((n, 3))
        a = np.zeros((n, 3))
        w[:, axis] = angle_rad.d1
        a[:, axis] = angle_rad.d2
        return RotTraj(elementary_rotation(axis, angle_rad.v), w, a)

    def __matmul__(self, other: RotTraj) -> RotTraj:
        """Composition ``R1 @ R2`` (R2 expressed in R1's frame): w = R2^T w1 + w2, a = R2^T a1 + (R2^T w1) x w2 + a2."""
        w1_in_2 = _mtv(other.R, self.w)
        return RotTraj(
            self.R @ other.R,
            w1_in_2 + other.w,
            _mtv(other.R, self.a) + _skew_cross(w1_in_2, other.w) + other.a,
        )

    def inv(self) -> RotTraj:
        """The inverse (transpose) trajectory: w' = -R w, a' = -R a."""
        return RotTraj(_mt(self.R), -_mv(self.R, self.w), -_mv(self.R, self.a))

    def take(self, index: np.ndarray | slice) -> RotTraj:
        return RotTraj(self.R[index], self.w[index], self.a[index])


def cardan(axes: str, angles_rad: list[Traj]) -> RotTraj:
    """Intrinsic sequence, e.g. ``cardan("yxz", [a, b, c]) = R_y(a) @ R_x(b) @ R_z(c)`` with derivatives."""
    out: RotTraj | None = None
    for ax, ang in zip(axes, angles_rad, strict=True):
        r = RotTraj.about("xyz".index(ax), ang)
        out = r if out is None else out @ r
    if out is None:
        raise ValueError("empty rotation sequence")
    return out


@dataclass(frozen=True)
class PointTraj:
    """A point's world position ``p`` (m), velocity ``v`` (m/s) and acceleration ``a`` (m/s^2), each (n, 3)."""

    p: np.ndarray
    v: np.ndarray
    a: np.ndarray

    @staticmethod
    def fixed(position_m: np.ndarray, n: int) -> PointTraj:
        p = np.broadcast_to(np.asarray(position_m, dtype=float), (n, 3)).copy()
        return PointTraj(p, np.zeros((n, 3)), np.zeros((n, 3)))

    def attach(self, rot: RotTraj, offset: np.ndarray | PointTraj) -> PointTraj:
        """The point at body-frame ``offset`` (m; constant (3,) or a time-varying :class:`PointTraj` in body
        coordinates) from this point, on a body with orientation ``rot``.

        p = P + R r;  v = V + R (r' + w x r);  a = A + R (r'' + 2 w x r' + a x r + w x (w x r)).
        """
        n = self.p.shape[0]
        if isinstance(offset, PointTraj):
            r, r1, r2 = offset.p, offset.v, offset.a
        else:
            r = np.broadcast_to(np.asarray(offset, dtype=float), (n, 3))
            r1 = r2 = np.zeros((n, 3))
        w, al = rot.w, rot.a
        w_x_r = np.cross(w, r)
        vel_body = r1 + w_x_r
        acc_body = r2 + 2.0 * np.cross(w, r1) + np.cross(al, r) + np.cross(w, w_x_r)
        return PointTraj(self.p + _mv(rot.R, r), self.v + _mv(rot.R, vel_body), self.a + _mv(rot.R, acc_body))


def body_offset(base: np.ndarray, shock_m: Traj | None) -> np.ndarray | PointTraj:
    """A sensor's offset in segment coordinates (m): ``base`` plus an optional short displacement along the
    segment's +z axis (a shock, with its derivatives), as :meth:`PointTraj.attach` takes it."""
    if shock_m is None:
        return base
    n = shock_m.v.shape[0]
    p = np.broadcast_to(base, (n, 3)).copy()
    v = np.zeros((n, 3))
    a = np.zeros((n, 3))
    p[:, 2] += shock_m.v
    v[:, 2] = shock_m.d1
    a[:, 2] = shock_m.d2
    return PointTraj(p, v, a)


@dataclass(frozen=True)
class SegmentMotion:
    """True motion of one segment and of the sensor point on it, sampled at ``t_s`` (s).

    ``R``: segment -> world orientation (n, 3, 3); ``omega_rad_s``: angular velocity in the segment frame
    (rad/s); ``position_m``, ``velocity_mps``, ``accel_mps2``: the sensor point in the world frame (m, m/s,
    m/s^2), each (n, 3).
    """

    t_s: np.ndarray
    R: np.ndarray
    omega_rad_s: np.ndarray
    position_m: np.ndarray
    velocity_mps: np.ndarray
    accel_mps2: np.ndarray

    def specific_force_g(self, mounting: np.ndarray | None = None) -> np.ndarray:
        """Noise-free accelerometer in g, sensor frame: ``M^T R^T (a_world / g + [0, 0, 1])``, (n, 3).

        ``mounting`` = M, the sensor-to-segment rotation (default identity). Reads +1 g on z standing still.
        """
        f = self.accel_mps2 / G_MPS2 + E_Z  # specific force = acceleration minus gravity (gravity is -Z)
        seg = _mtv(self.R, f)
        return seg if mounting is None else seg @ mounting  # rows: (M^T v)^T = v^T M

    def gyro_dps(self, mounting: np.ndarray | None = None) -> np.ndarray:
        """Noise-free gyroscope in deg/s, sensor frame: ``M^T w_segment``, (n, 3)."""
        w = np.degrees(self.omega_rad_s)
        return w if mounting is None else w @ mounting

    def take(self, index: np.ndarray | slice) -> SegmentMotion:
        return SegmentMotion(self.t_s[index], self.R[index], self.omega_rad_s[index], self.position_m[index],
                             self.velocity_mps[index], self.accel_mps2[index])


def segment_motion(t_s: np.ndarray, rot: RotTraj, sensor: PointTraj) -> SegmentMotion:
    """Bundle a segment's :class:`RotTraj` and its sensor point's :class:`PointTraj` into a :class:`SegmentMotion`."""
    return SegmentMotion(t_s, rot.R, rot.w, sensor.p, sensor.v, sensor.a)


@dataclass(frozen=True)
class Kinematics:
    """Everything the body model computes for one session, at the internal time grid ``t_s`` (s).

    ``segments``: motion per segment name ("thigh", "shank" or "upper_arm", "trunk"); ``angles``: the joint
    angles in degrees with their derivatives (knee: "flexion_deg", "abduction_deg", "rotation_deg"; shoulder:
    "elevation_deg", "plane_deg", "rotation_deg"); ``main_angle``: the key of the joint's main angle.
    """

    t_s: np.ndarray
    segments: dict[str, SegmentMotion]
    angles: dict[str, Traj]
    main_angle: str
    extras: dict[str, np.ndarray] = field(default_factory=dict)


# ---------------------------------------------------------------- joint-angle conventions


def knee_joint_rotation_traj(flexion: Traj, abduction: Traj, rotation: Traj, side: str) -> RotTraj:
    """Knee joint rotation ``R_thigh^T R_shank`` (see the module docstring) from angles in degrees."""
    s = side_sign(side)
    return cardan("yxz", [flexion.radians(), (s * abduction).radians(), (-s * rotation).radians()])


def shoulder_joint_rotation_traj(elevation: Traj, plane: Traj, rotation: Traj, side: str) -> RotTraj:
    """Shoulder joint rotation ``R_trunk^T R_upper_arm`` (see the module docstring) from angles in degrees."""
    s = side_sign(side)
    return cardan("zxz", [(-s * plane).radians(), (s * elevation).radians(), (s * (plane - rotation)).radians()])


def _as_traj(x: np.ndarray | float) -> Traj:
    a = np.atleast_1d(np.asarray(x, dtype=float))
    return Traj.const(a, a.shape[0])


def _broadcast_angles(*angles: np.ndarray | float) -> tuple[list[Traj], bool]:
    arrays = np.broadcast_arrays(*[np.asarray(a, dtype=float) for a in angles])
    scalar = arrays[0].ndim == 0
    return [_as_traj(a) for a in arrays], scalar


def knee_joint_rotation(
    flexion_deg: np.ndarray | float, abduction_deg: np.ndarray | float, rotation_deg: np.ndarray | float, side: str
) -> np.ndarray:
    """``R_thigh^T R_shank`` for knee angles in degrees: (3, 3) for scalars, (n, 3, 3) for arrays."""
    (f, b, r), scalar = _broadcast_angles(flexion_deg, abduction_deg, rotation_deg)
    R = knee_joint_rotation_traj(f, b, r, side).R
    return R[0] if scalar else R


def shoulder_joint_rotation(
    elevation_deg: np.ndarray | float, plane_deg: np.ndarray | float, rotation_deg: np.ndarray | float, side: str
) -> np.ndarray:
    """``R_trunk^T R_upper_arm`` for shoulder angles in degrees: (3, 3) for scalars, (n, 3, 3) for arrays."""
    (e, p, r), scalar = _broadcast_angles(elevation_deg, plane_deg, rotation_deg)
    R = shoulder_joint_rotation_traj(e, p, r, side).R
    return R[0] if scalar else R


def _wrap_deg(x: np.ndarray) -> np.ndarray:
    """Wrap angles (deg) to [-180, 180)."""
    return (x + 180.0) % 360.0 - 180.0


def _relative(R_proximal: np.ndarray, R_distal: np.ndarray) -> tuple[np.ndarray, bool]:
    """``R_proximal^T R_distal`` as (n, 3, 3) (single matrices broadcast), and whether both were single."""
    Rp, Rd = np.asarray(R_proximal, dtype=float), np.asarray(R_distal, dtype=float)
    scalar = Rp.ndim == 2 and Rd.ndim == 2
    M = np.einsum("...ji,...jk->...ik", Rp.reshape(-1, 3, 3), Rd.reshape(-1, 3, 3))
    return M, scalar


def knee_angles_from_orientations(R_thigh: np.ndarray, R_shank: np.ndarray, side: str) -> dict[str, np.ndarray]:
    """Knee angles (degrees) from segment orientations (segment -> world, (3, 3) or (n, 3, 3)), the exact
    inverse of :func:`knee_joint_rotation`.

    Returns ``{"flexion_deg", "abduction_deg", "rotation_deg"}`` (flexion positive, abduction = valgus
    positive, rotation = tibial internal rotation positive), arrays (n,) or floats for single matrices.
    """
    s = side_sign(side)
    M, scalar = _relative(R_thigh, R_shank)
    # M = R_y(f) R_x(b) R_z(c): M02 = sin f cos b, M22 = cos f cos b, M12 = -sin b, M10 = cos b sin c, M11 = cos b cos c
    f = np.degrees(np.arctan2(M[:, 0, 2], M[:, 2, 2]))
    b = np.degrees(np.arcsin(np.clip(-M[:, 1, 2], -1.0, 1.0)))
    c = np.degrees(np.arctan2(M[:, 1, 0], M[:, 1, 1]))
    out = {"flexion_deg": f, "abduction_deg": s * b, "rotation_deg": -s * c}
    return {k: float(v[0]) for k, v in out.items()} if scalar else out  # type: ignore[return-value]


def shoulder_angles_from_orientations(
    R_trunk: np.ndarray, R_upper_arm: np.ndarray, side: str
) -> dict[str, np.ndarray]:
    """Shoulder angles (degrees) from trunk and upper-arm orientations, the exact inverse of
    :func:`shoulder_joint_rotation` for 0 < elevation < 180 deg.

    Returns ``{"elevation_deg", "plane_deg", "rotation_deg"}``; the plane is set to 0 where the elevation is
    below 1e-6 deg (undefined), rotation is then the pure axial rotation. Angles wrapped to [-180, 180).
    """
    s = side_sign(side)
    M, scalar = _relative(R_trunk, R_upper_arm)
    if s < 0:  # mirror the right side onto the left: P M P with P = diag(1, -1, 1)
        M = M * np.array([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, 1.0]])
    # Left: M = R_z(a) R_x(b) R_z(c) with a = -plane, b = elevation, c = plane - rotation.
    b = np.degrees(np.arccos(np.clip(M[:, 2, 2], -1.0, 1.0)))
    hanging = b < 1e-6
    a = np.where(hanging, 0.0, np.degrees(np.arctan2(M[:, 0, 2], -M[:, 1, 2])))
    # At elevation 0 only a + c is defined: M = R_z(a + c).
    c = np.where(hanging, np.degrees(np.arctan2(M[:, 1, 0], M[:, 0, 0])),
                 np.degrees(np.arctan2(M[:, 2, 0], M[:, 2, 1])))
    plane = -a
    out = {"elevation_deg": b, "plane_deg": _wrap_deg(plane), "rotation_deg": _wrap_deg(plane - c)}
    return {k: float(v[0]) for k, v in out.items()} if scalar else out  # type: ignore[return-value]


def sagittal_inclination_deg(R: np.ndarray) -> np.ndarray:
    """Sagittal inclination (deg) of a segment: its z axis tilted toward world +X about world +Y
    (``atan2(R[0, 2], R[2, 2])``); equals the first version's sensor "pitch" for planar motion."""
    return np.degrees(np.arctan2(R[..., 0, 2], R[..., 2, 2]))
