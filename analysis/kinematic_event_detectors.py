"""All kinematic detectors of one joint behind one streaming facade: reps and ROM, locking, valgus, instability.

Wiring (``analysis/knee_pipeline.py``)::

    kin = KinematicEvents("knee", "left", KinematicSettings())
    kin.update_imu("shank", t_ns, accel_g, gyro_dps)            # raw IMU, any mounting (optional, improves
    kin.update_imu("thigh", t_ns, accel_g, gyro_dps)            #  instability: impact veto, unloading)
    for ev in kin.update_angles(t_ns, {"flexion_deg": f, "abduction_deg": a, "rotation_deg": r}):
        sink.event(ev.to_joint_event(athlete, joint, session, stream_origin_ns))
    ...
    kin.finish()

Knee: also pass ``KneeAngles.settling_angles`` of each angle chunk as ``update_angles(..., settling=...)``: the
flexion and rotation through a long link gap's settling time, where the angles are unknown, for the giving-way
detector only (a giving way right after a gap is otherwise lost whole).

Shoulders: ``KinematicEvents("shoulder", side)`` with ``{"elevation_deg": e, "plane_deg": p}``: reps, ROM and
restricted-range locking on the elevation. Angles in degrees, times in ns on the angle stream's clock; the
results do not depend on how the stream is cut into chunks.

Latency: valgus events come out when the episode is confirmed (``min_duration_s`` above the threshold, ~0.14 s
after the onset), with the magnitude known then; the rep's final peak valgus and FPPA come with its "rep" event.
Instability events come out once the flexion surge is there, at least ``impact_after_s`` after the onset (the
landing veto's window), ~0.15 s; reps when the rep ends; range locking at the rep's turning point (once the joint
is ``turn_drop_deg`` back from its peak); extension locks after ``lock_hold_s``.

Jumps: a landing absorption that follows a ballistic flight (every IMU below ``free_fall_g``) within
``jump_gap_s`` of the previous excursion is part of that jump's rep: no rep of its own, no range judgement (a
shallow landing is not a restricted rep).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from analysis.imu_context import ImuContext
from analysis.instability_detector import InstabilityDetector, InstabilitySettings
from analysis.kinematic_event import KinematicEvent
from analysis.rep_counter import SHOULDER_REPS, Rep, RepCounter, RepSettings, Turn
from analysis.rom_tracker import RomSettings, RomTracker
from analysis.valgus_detector import ValgusDetector, ValgusSettings

IMU_KEEP_NS = 5_000_000_000  # IMU history kept behind the newest angle sample: covers every look-back window


@dataclass(frozen=True)
class KinematicSettings:
    valgus: ValgusSettings = field(default_factory=ValgusSettings)
    instability: InstabilitySettings = field(default_factory=InstabilitySettings)
    rom: RomSettings = field(default_factory=RomSettings)
    rep: RepSettings | None = None  # None: knee flexion 40/20 deg; shoulder: rest and direction learned
    emit_reps: bool = True  # also return one "rep" event per completed rep (ROM, peak valgus in details)
    # A jump's landing absorption is part of the jump's rep, not a rep of its own: an excursion that starts
    # within jump_gap_s of the previous rep's end, with a ballistic flight between them (every sensor below
    # free_fall_g for at least flight_min_s; running's swing leg is never that quiet), is merged into it.
    jump_gap_s: float = 1.2  # s
    free_fall_g: float = 0.4  # |accel| of a body in flight, g
    flight_min_s: float = 0.12  # s


class KinematicEvents:
    """Streaming kinematic events of one joint (``joint_kind`` "knee" or "shoulder", ``side`` "left"/"right")."""

    def __init__(self, joint_kind: str, side: str = "", settings: KinematicSettings | None = None) -> None:
        if joint_kind not in ("knee", "shoulder"):
            raise ValueError(f"joint_kind must be 'knee' or 'shoulder', got {joint_kind!r}")
        self.joint_kind, self.side = joint_kind, side
        s = self.settings = settings or KinematicSettings()
        self.imu = ImuContext()
        self.reps_counter = RepCounter(s.rep or (RepSettings() if joint_kind == "knee" else SHOULDER_REPS))
        self.rom = RomTracker(s.rom)
        self.valgus = ValgusDetector(s.valgus) if joint_kind == "knee" else None
        self.instability = InstabilityDetector(s.instability, self.imu) if joint_kind == "knee" else None
        self.reps: list[Rep] = []
        self.landings_merged = 0  # landing absorptions merged into their jump's rep
        self._last_end_ns: int | None = None  # end of the previous excursion (rep or landing), ns
        self._pre: list[tuple[np.ndarray, np.ndarray]] = []  # driving angle held until its rest is known

    @property
    def driving_angle(self) -> str:
        return "flexion_deg" if self.joint_kind == "knee" else "elevation_deg"

    def update_imu(self, sensor: str, t_ns: np.ndarray, accel_g: np.ndarray, gyro_dps: np.ndarray) -> None:
        """Raw IMU of one sensor: ``accel_g`` (n, 3) in g, ``gyro_dps`` (n, 3) in deg/s, sensor frame (any
        mounting: only magnitudes are used). Feed it before (or with) the angles computed from it."""
        self.imu.update(sensor, t_ns, accel_g, gyro_dps)

    def update_angles(self, t_ns: np.ndarray, angles: Mapping[str, np.ndarray],
                      settling: Mapping[str, np.ndarray] | None = None) -> list[KinematicEvent]:
        """The next chunk of joint angles (deg) at times ``t_ns`` (int64 ns); returns the events completed.
        ``settling``: knee flexion/rotation (deg) where ``angles`` are unknown in a long gap's settling time
        (:attr:`analysis.knee_angles.KneeAngles.settling_angles`, NaN elsewhere): their level may be off by
        several degrees, so only the giving-way detector, which judges their fast changes, takes them."""
        t_ns = np.asarray(t_ns, np.int64)
        if t_ns.size == 0:
            return []
        out: list[KinematicEvent] = []
        if self.joint_kind == "knee":
            f = np.asarray(angles["flexion_deg"], float)
            a = np.asarray(angles.get("abduction_deg", np.zeros_like(f)), float)
            r = np.asarray(angles.get("rotation_deg", np.zeros_like(f)), float)
            assert self.valgus is not None and self.instability is not None
            out += self.valgus.update(t_ns, f, a, r)
            if "rotation_deg" in angles:
                fi, ri = f, r
                if settling is not None and len(settling.get("flexion_deg", ())) == f.size:
                    sf, sr = (np.asarray(settling.get(k, np.full(f.size, np.nan)), float)
                              for k in ("flexion_deg", "rotation_deg"))
                    fi, ri = np.where(np.isnan(f), sf, f), np.where(np.isnan(r), sr, r)
                gave_way = self.instability.update(t_ns, fi, ri)
                for ev in gave_way:  # its collapse, hold and recovery are not locking
                    self.rom.note_giving_way(ev.t_ns)
                out += gave_way
        drive = np.asarray(angles[self.driving_angle], float)
        reps = self.reps_counter.update(t_ns, drive)
        rc = self.reps_counter
        if rc.ready:
            self._pre.append((t_ns, drive))
            t_all = np.concatenate([p[0] for p in self._pre])
            x_all = rc.excursion(np.concatenate([p[1] for p in self._pre]))
            self._pre = []
            out += self.rom.update(t_all, x_all)
        else:
            self._pre.append((t_ns, drive))
        # Turning points (range judged there) and completed reps, in the order they happened: a rep's turn comes
        # before its end, and the previous rep's end (what a landing is judged against) before both.
        steps: list[Rep | Turn] = [*reps, *rc.take_turns()]
        for step in sorted(steps, key=lambda x: x.t_seen_ns if isinstance(x, Turn) else x.t_end_ns):
            if isinstance(step, Turn):
                if not self._is_landing(step.t_start_ns):  # a landing absorption is no restricted rep
                    out += self.rom.on_turn(step, len(self.reps) + 1)
                continue
            rep = step
            if self._is_landing(rep.t_start_ns):
                self._last_end_ns = rep.t_end_ns
                self.landings_merged += 1
                continue
            self._last_end_ns = rep.t_end_ns
            rep = replace(rep, index=len(self.reps) + 1)
            self.reps.append(rep)
            self.rom.on_rep(rep, float(rc.excursion(np.array([rep.peak_flexion_deg]))[0]))
            if self.settings.emit_reps:
                out.append(self._rep_event(rep))
        # IMU no detector looks at any more: older than every look-back window and than the last excursion's end
        # (a landing is judged on the flight since then), trimmed only now that this chunk's reps are judged.
        keep_from = int(t_ns[-1]) - IMU_KEEP_NS
        self.imu.trim(keep_from if self._last_end_ns is None else min(keep_from, self._last_end_ns))
        return sorted(out, key=lambda e: (e.t_ns, e.type))

    def backfill_angles(self, t_ns: np.ndarray, angles: Mapping[str, np.ndarray]) -> list[KinematicEvent]:
        """Angles of an earlier stretch recomputed after the fact (the knee's abduction before its calibration
        completed, :meth:`analysis.knee_angles.KneeAngles.take_backfill`), given once, before the live angles
        that follow it. A separate valgus scan reports that stretch's episodes (late, with their true onset;
        ``details["backfilled"]``); an episode still going at its end is continued, not repeated, live."""
        if self.valgus is None or len(t_ns) == 0:
            return []
        scan = ValgusDetector(self.valgus.settings)
        f = np.asarray(angles["flexion_deg"], float)
        found = scan.update(np.asarray(t_ns, np.int64), f, np.asarray(angles["abduction_deg"], float),
                            np.asarray(angles.get("rotation_deg", np.zeros_like(f)), float))
        self.valgus.merge_until(scan.merge_horizon_ns())
        return [replace(ev, details={**ev.details, "backfilled": True}) for ev in found]

    def _is_landing(self, t_start_ns: int) -> bool:
        """True when the excursion starting at ``t_start_ns`` is the landing absorption after a jump (flight since
        the previous excursion)."""
        s = self.settings
        if self._last_end_ns is None or t_start_ns - self._last_end_ns > s.jump_gap_s * 1e9:
            return False
        return self.imu.free_fall_s(self._last_end_ns, t_start_ns, s.free_fall_g) >= s.flight_min_s

    def _rep_event(self, rep: Rep) -> KinematicEvent:
        details: dict[str, float | int | None] = {
            "index": rep.index, "t_end_ns": rep.t_end_ns, "t_peak_ns": rep.t_peak_ns,
            "min_flexion_deg": round(rep.min_flexion_deg, 1) if np.isfinite(rep.min_flexion_deg) else None,
            "rom_deg": round(rep.rom_deg, 1) if np.isfinite(rep.rom_deg) else None}
        if self.valgus is not None:
            pk = self.valgus.peak_between(rep.t_start_ns, rep.t_end_ns)
            details["peak_valgus_deg"] = None if pk is None else round(pk[0], 1)
            details["fppa_deg"] = None if pk is None or not np.isfinite(pk[1]) else round(pk[1], 1)
        return KinematicEvent("rep", rep.t_start_ns, float(rep.peak_flexion_deg), 1.0, details)

    def finish(self) -> list[KinematicEvent]:
        """End of stream: nothing is held back that would still become an event (episodes still open at the end
        are incomplete and dropped)."""
        return []
