"""Kinematic events programmed into an exercise plan, and their ground-truth labels.

* ``valgus`` (dynamic knee valgus): on chosen reps of loaded flexion the knee abduction follows
  ``magnitude * (flexion / rep_peak_flexion)^2`` instead of the natural ``valgus_base * (flexion / 100)^2``,
  so it rises smoothly with flexion and peaks at exactly ``magnitude`` degrees at the bottom. Label: from the
  first to the last time the abduction exceeds ``threshold_deg`` (default 5 deg) in that rep, magnitude =
  peak abduction (deg). Natural valgus always stays below the threshold (it is scaled down if needed), so
  there are no unlabelled excursions.
* ``instability`` (giving way): at the programmed time the knee flexes an extra ``magnitude_deg`` (default
  30 deg) within ``duration_s`` (default 0.2 s) - the shank takes 45 % of it (the tibia pitches forward, the
  body drops, the shank accelerometer's vertical reading falls by a few tenths of a g for ~0.1 s) - with an
  internal-rotation jerk of ``rotation_deg`` (default 10 deg) in 0.1 s (tibia relative to femur; the foot
  pivots, so the shank turns internally by 40 % of it in the world); the athlete then holds for
  0.15-0.3 s and recovers over 0.6-1.0 s. Label: from onset to the end of the collapse (``duration_s``),
  magnitude = flexion drop (deg). Only weight-bearing (closed-chain) knee exercises.
* ``locking`` (locking / restricted range of motion), on chosen reps. Mode ``"extension"`` (knee): the ascent
  stops ``short_deg`` short of full extension and the knee stays there for ``hold_s`` (default 1.5 s) before
  it releases (0.4 s); later reps are delayed accordingly. Label: from the end of the ascent to the release,
  magnitude = ``short_deg``; the flexion inside the label is >= ``short_deg``. Mode ``"range"``: the rep's
  peak stops ``short_deg`` short of its planned peak (knee flexion or shoulder elevation). Label: the whole
  rep, magnitude = ``short_deg``.

Reps are numbered from 1 (the first rep of the session) in the specs; reps that do not fit in the session
are ignored. Deterministic in the random generator.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from firmware_sim.body_model import Kinematics, Label
from firmware_sim.exercises import VALGUS_BASELINE_CAP_DEG, ExercisePlan, Keyframes, Rep

INSTABILITY_SHANK_SHARE = 0.45  # share of the giving-way flexion taken by the shank (forward pitch)
INSTABILITY_SHANK_ROTATION_SHARE = 0.4  # share of the internal-rotation jerk taken by the shank in the world
LOCK_RELEASE_S = 0.4


@dataclass(frozen=True)
class ValgusSpec:
    """Valgus episodes on ``reps`` (1-based) with peak knee abduction ``magnitude_deg`` (> ``threshold_deg``)."""

    reps: tuple[int, ...]
    magnitude_deg: float = 12.0
    threshold_deg: float = 5.0


@dataclass(frozen=True)
class InstabilitySpec:
    """Giving-way episodes starting at ``times_s`` (s): flexion drop ``magnitude_deg`` within ``duration_s``."""

    times_s: tuple[float, ...]
    magnitude_deg: float = 30.0
    duration_s: float = 0.2
    rotation_deg: float = 10.0


@dataclass(frozen=True)
class LockingSpec:
    """Locking on ``reps`` (1-based): ``short_deg`` short of extension (mode "extension") or of the rep's range
    (mode "range"); ``hold_s``: how long an extension lock lasts."""

    reps: tuple[int, ...]
    short_deg: float = 20.0
    mode: str = "extension"
    hold_s: float = 1.5


@dataclass(frozen=True)
class EventSpec:
    """The scenario's ``[events]`` table."""

    valgus: ValgusSpec | None = None
    instability: InstabilitySpec | None = None
    locking: LockingSpec | None = None


@dataclass(frozen=True)
class ProgrammedEvent:
    """An event as applied to the plan (before its label is measured on the kinematics)."""

    type: str
    rep_index: int  # 0-based index into plan.all_reps, -1 for time-based events
    t_start_s: float
    t_end_s: float
    magnitude: float
    threshold_deg: float = 0.0


def _overlay(plan: ExercisePlan, channel: str, keys: list[tuple[float, float]]) -> None:
    plan.overlays.setdefault(channel, []).append(Keyframes.of(keys))


def _apply_locking(plan: ExercisePlan, spec: LockingSpec) -> list[ProgrammedEvent]:
    out: list[ProgrammedEvent] = []
    ch = plan.main_channel
    # Later reps first would shift the earlier ones' keys: go in time order and re-read the rep each time.
    for n in sorted(set(spec.reps)):
        i = n - 1
        if not 0 <= i < len(plan.reps):
            continue  # not in the session
        r = plan.all_reps[i]
        keys = plan.channels[ch]
        rest = keys.value_at_key(r.t_start_s)
        if spec.mode == "extension":
            short = min(spec.short_deg, 0.9 * r.peak_deg)
            plan.shift_after(r.t_end_s, spec.hold_s + LOCK_RELEASE_S)
            keys = plan.channels[ch].with_value(r.t_end_s, short)
            plan.channels[ch] = keys.inserted([(r.t_end_s + spec.hold_s, short),
                                               (r.t_end_s + spec.hold_s + LOCK_RELEASE_S, 0.0)])
            out.append(ProgrammedEvent("locking", i, r.t_end_s, r.t_end_s + spec.hold_s, short))
        else:  # "range": the peak stops short (toward the rest value)
            span = r.peak_deg - rest
            short = min(spec.short_deg, 0.8 * abs(span))
            peak = r.peak_deg - np.sign(span) * short
            plan.channels[ch] = keys.with_value(r.t_peak_s, peak).with_value(r.t_return_s, peak)
            plan.all_reps[i] = replace(r, peak_deg=float(peak))
            out.append(ProgrammedEvent("locking", i, r.t_start_s, r.t_end_s, short))
    plan.fit_to_session()  # a lock delays the later reps: the last may no longer fit
    return [e for e in out if e.rep_index < len(plan.reps)]


def _apply_valgus(plan: ExercisePlan, spec: ValgusSpec) -> list[ProgrammedEvent]:
    # Keep natural valgus below the label threshold at the deepest planned flexion.
    deepest = max((r.peak_deg for r in plan.all_reps), default=100.0)
    base = plan.params.get("valgus_base_deg", 0.0)
    limit = min(0.8 * spec.threshold_deg, VALGUS_BASELINE_CAP_DEG) / max(deepest / 100.0, 1.0) ** 2
    plan.params["valgus_base_deg"] = min(base, limit)
    out = []
    for n in sorted(set(spec.reps)):
        i = n - 1
        if not 0 <= i < len(plan.reps):
            continue
        plan.valgus_peaks[i] = float(spec.magnitude_deg)
        r = plan.all_reps[i]
        out.append(ProgrammedEvent("valgus", i, r.t_start_s, r.t_end_s, float(spec.magnitude_deg),
                                   spec.threshold_deg))
    return out


def _apply_instability(plan: ExercisePlan, spec: InstabilitySpec, rng: np.random.Generator) -> list[ProgrammedEvent]:
    out = []
    for t0 in sorted(spec.times_s):
        hold = float(rng.uniform(0.15, 0.30))
        recover = float(rng.uniform(0.6, 1.0))
        if not 0.0 <= t0 < plan.duration_s:
            continue
        tc = t0 + spec.duration_s
        d = spec.magnitude_deg
        _overlay(plan, "flexion", [(t0, 0.0), (tc, d), (tc + hold, d), (tc + hold + recover, 0.0)])
        _overlay(plan, "incl", [(t0, 0.0), (tc, INSTABILITY_SHANK_SHARE * d), (tc + hold, INSTABILITY_SHANK_SHARE * d),
                                (tc + hold + recover, 0.0)])
        # The rotational jerk: internal rotation in 0.1 s, early in the collapse.
        tr = t0 + 0.01
        rot_keys = [(tr, 0.0), (tr + 0.1, spec.rotation_deg), (tc + hold, spec.rotation_deg),
                    (tc + hold + recover, 0.0)]
        _overlay(plan, "rotation", rot_keys)  # tibia relative to femur
        # The foot pivots too: the shank itself turns internally by part of it (visible on the shank gyro).
        _overlay(plan, "shank_rotation", [(a, INSTABILITY_SHANK_ROTATION_SHARE * b) for a, b in rot_keys])
        out.append(ProgrammedEvent("instability", -1, t0, tc, d))
    return out


def apply_events(plan: ExercisePlan, spec: EventSpec, rng: np.random.Generator) -> list[ProgrammedEvent]:
    """Program the events of ``spec`` into ``plan`` (edited in place); return them in time order.

    Locking comes first (an extension lock delays later reps), then valgus, then instability.
    """
    events: list[ProgrammedEvent] = []
    if spec.locking is not None:
        events += _apply_locking(plan, spec.locking)
    if spec.valgus is not None:
        events += _apply_valgus(plan, spec.valgus)
    if spec.instability is not None:
        events += _apply_instability(plan, spec.instability, rng)
    return sorted(events, key=lambda e: e.t_start_s)


def _crossings(t: np.ndarray, x: np.ndarray, thr: float) -> tuple[float, float] | None:
    """First upward and last downward crossing of ``thr`` by ``x(t)``, linearly interpolated (s)."""
    above = x > thr
    if not np.any(above):
        return None
    i0, i1 = int(np.argmax(above)), int(len(above) - 1 - np.argmax(above[::-1]))

    def interp(a: int, b: int) -> float:
        if a < 0 or b >= len(x) or x[a] == x[b]:
            return float(t[min(max(a, 0), len(t) - 1)])
        return float(t[a] + (thr - x[a]) * (t[b] - t[a]) / (x[b] - x[a]))

    return interp(i0 - 1, i0), interp(i1, i1 + 1)


def event_labels(plan: ExercisePlan, events: list[ProgrammedEvent], kin: Kinematics, joint: str) -> list[Label]:
    """Ground-truth labels of the programmed events, measured on the evaluated kinematics where needed."""
    labels = []
    t = kin.t_s
    for e in events:
        if e.type == "valgus":
            r: Rep = plan.all_reps[e.rep_index]
            nxt = plan.all_reps[e.rep_index + 1].t_start_s if e.rep_index + 1 < len(plan.all_reps) else np.inf
            win = (t >= r.t_start_s) & (t < nxt)
            abd = kin.angles["abduction_deg"].v[win]
            cross = _crossings(t[win], abd, e.threshold_deg)
            if cross is None:
                continue
            labels.append(Label("valgus", joint, cross[0], cross[1], float(np.max(abd))))
        else:
            labels.append(Label(e.type, joint, e.t_start_s, e.t_end_s, e.magnitude))
    return labels
