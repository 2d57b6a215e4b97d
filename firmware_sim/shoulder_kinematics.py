"""Shoulder kinematics: trunk (upper-back sensor) + upper arm chain.

Frames and the humerothoracic angle convention (elevation, plane of elevation, axial rotation) are defined in
:mod:`firmware_sim.body_model`:
``R_upper_arm = R_trunk @ R_z(-s * plane) @ R_x(s * elevation) @ R_z(s * (plane - rotation))``, s = +1 left,
-1 right.

Geometry (trunk frame, metres): the trunk's root point is the mid-hip; the upper-back sensor sits on the
thorax at T3, ``trunk_sensor_height_m`` up the trunk and ``trunk_skin_offset_m`` behind its long axis (between
the scapulae; it moves with the thorax, not with the scapula). The shoulder joint centre is
``shoulder_height_m`` up and ``shoulder_half_width_m`` lateral. The upper-arm sensor sits on the lateral
deltoid, ``upper_arm_sensor_from_shoulder_m`` below the joint centre and ``upper_arm_skin_offset_m`` lateral of
the humerus, close enough to the joint for its contact microphone to hear it.
"""

from __future__ import annotations

import numpy as np

from firmware_sim.body_model import (
    AthleteProfile,
    Kinematics,
    PointTraj,
    RotTraj,
    Traj,
    body_offset,
    segment_motion,
    shoulder_joint_rotation_traj,
    side_sign,
)

SEGMENTS = ("upper_arm", "trunk")


def shoulder_chain(
    t_s: np.ndarray,
    *,
    side: str,
    profile: AthleteProfile,
    root: PointTraj,
    trunk_rotation: RotTraj,
    elevation_deg: Traj,
    plane_deg: Traj,
    rotation_deg: Traj,
    shocks_m: dict[str, Traj] | None = None,
) -> Kinematics:
    """Trunk and upper-arm motion from the mid-hip point ``root``, the trunk's world orientation and the
    shoulder angles (degrees, with derivatives). ``shocks_m``: a short displacement (m) of a sensor along its
    segment's long axis (e.g. the jerk of a snapping tendon), keyed by segment name."""
    shocks_m = shocks_m or {}
    s = side_sign(side)
    joint = shoulder_joint_rotation_traj(elevation_deg, plane_deg, rotation_deg, side)
    r_arm = trunk_rotation @ joint
    trunk_off = np.array([-profile.trunk_skin_offset_m, 0.0, profile.trunk_sensor_height_m])
    trunk_sensor = root.attach(trunk_rotation, body_offset(trunk_off, shocks_m.get("trunk")))
    shoulder = root.attach(trunk_rotation,
                           np.array([0.0, s * profile.shoulder_half_width_m, profile.shoulder_height_m]))
    arm_off = np.array([0.0, s * profile.upper_arm_skin_offset_m, -profile.upper_arm_sensor_from_shoulder_m])
    arm_sensor = shoulder.attach(r_arm, body_offset(arm_off, shocks_m.get("upper_arm")))
    t = np.asarray(t_s, dtype=float)
    return Kinematics(
        t_s=t,
        segments={"upper_arm": segment_motion(t, r_arm, arm_sensor), "trunk": segment_motion(t, trunk_rotation,
                                                                                             trunk_sensor)},
        angles={"elevation_deg": elevation_deg, "plane_deg": plane_deg, "rotation_deg": rotation_deg},
        main_angle="elevation_deg",
        extras={"shoulder_position_m": shoulder.p},
    )
