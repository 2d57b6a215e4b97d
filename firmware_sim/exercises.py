"""Exercise library: per-rep plans (timing, depth, pauses with natural variation) and their joint kinematics.

Every exercise is planned as keyframes of a few driving angles (degrees) and root translations (metres),
joined by minimum-jerk segments (zero velocity and acceleration at every keyframe, so every keyframe is a
local extremum or a hold), plus acceleration-specified root motion where physics demands it (jump
take-off, ballistic flight at -1 g, landing deceleration). Everything has exact 1st and 2nd derivatives.

Exercises (``EXERCISES``), all starting with 1-2 s of standing still (the calibration window):

* knee, closed chain (foot planted, root = ankle): ``bodyweight_squat``, ``loaded_squat`` (slower, load ->
  shallower and more valgus), ``forward_lunge`` (instrumented leg in front: step out, lunge, step back),
  ``step_down`` (single-leg, from a box), ``jump_squat`` and ``drop_landing`` (flight and landing impact;
  fast *controlled* flexion on landing: negative examples for instability detection).
* knee, open chain (root = hip): ``running`` (cadence ~2.5-3 steps/s, one footstrike shock per stride of the
  instrumented leg), ``leg_swing`` (hip flexion/extension swings, knee mostly extended).
* shoulder (root = mid-hip, trunk sensor on the upper back): ``overhead_press``, ``pull_up``.

A :class:`Rep` records start, peak (extreme of the driving angle), return (end of the hold at the peak) and
end times (s), and the peak angle (degrees): knee flexion (squats, lunge, step-down, landings: the absorption
peak... see each planner), hip flexion (leg swing), shoulder elevation (press: lockout; pull-up: the top, a
minimum of elevation), running: one stride from footstrike to the next footstrike, peak = swing flexion.
Plans are deterministic in the random generator and the first reps do not depend on the session duration.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtri

from firmware_sim.body_model import (
    G_MPS2,
    AthleteProfile,
    Impact,
    Kinematics,
    PointTraj,
    Traj,
    cardan,
    side_sign,
)
from firmware_sim.knee_kinematics import knee_chain
from firmware_sim.shoulder_kinematics import shoulder_chain

SHOCK_SPAN_TAU = 30.0  # a shock is evaluated over 30 time constants
END_MARGIN_S = 0.25  # a rep counts only if it ends this long before the session end
VALGUS_BASELINE_CAP_DEG = 4.0  # natural (unlabelled) valgus stays below the default 5 deg label threshold


# ---------------------------------------------------------------- motion primitives


def min_jerk(u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-jerk step s(u) = 10u^3 - 15u^4 + 6u^5 on u in [0, 1] (clip u first) and its 1st/2nd u-derivatives.

    s' and s'' vanish at both ends: joined segments have continuous velocity and acceleration.
    """
    u2 = u * u
    s = u2 * u * (10.0 - 15.0 * u + 6.0 * u2)
    ds = 30.0 * u2 * (1.0 - 2.0 * u + u2)
    d2s = 60.0 * u * (1.0 - 3.0 * u + 2.0 * u2)
    return s, ds, d2s


def _step_integrals(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1st and 2nd integrals (in u, from -inf) of the minimum-jerk step s(u), for any u (s = 0 before, 1 after)."""
    uc = np.clip(u, 0.0, 1.0)
    s1_in = uc**4 * (2.5 - 3.0 * uc + uc * uc)
    s2_in = uc**5 * (0.5 - 0.5 * uc + uc * uc / 7.0)
    after = u > 1.0
    s1 = np.where(after, u - 0.5, s1_in)
    s2 = np.where(after, 1.0 / 7.0 + 0.5 * (u * u - u), s2_in)
    return s1, s2


@dataclass(frozen=True, eq=False)
class Keyframes:
    """Values at strictly increasing times (s), joined by minimum-jerk segments, held before/after."""

    t_s: np.ndarray
    values: np.ndarray

    @staticmethod
    def of(pairs: list[tuple[float, float]]) -> Keyframes:
        if not pairs:
            return Keyframes(np.array([0.0]), np.array([0.0]))
        arr = np.asarray(pairs, dtype=float)
        if np.any(np.diff(arr[:, 0]) <= 0.0):
            raise ValueError("keyframe times must be strictly increasing")
        return Keyframes(arr[:, 0].copy(), arr[:, 1].copy())

    def evaluate(self, t_s: np.ndarray) -> Traj:
        """Value (unit), 1st and 2nd derivatives (unit/s, unit/s^2) at times ``t_s`` (s)."""
        t = np.asarray(t_s, dtype=float)
        tk, vk = self.t_s, self.values
        if tk.size < 2:
            return Traj.const(vk[0] if vk.size else 0.0, t.shape[0])
        i = np.clip(np.searchsorted(tk, t, side="right") - 1, 0, tk.size - 2)
        T = tk[i + 1] - tk[i]
        u = np.clip((t - tk[i]) / T, 0.0, 1.0)  # before the first / after the last key: held
        s, ds, d2s = min_jerk(u)
        dv = vk[i + 1] - vk[i]
        return Traj(vk[i] + dv * s, dv * ds / T, dv * d2s / (T * T))

    def pairs(self) -> list[tuple[float, float]]:
        return [(float(a), float(b)) for a, b in zip(self.t_s, self.values, strict=True)]

    def shifted(self, after_s: float, dt_s: float) -> Keyframes:
        """Keys later than ``after_s`` moved ``dt_s`` later."""
        t = np.where(self.t_s > after_s + 1e-9, self.t_s + dt_s, self.t_s)
        return Keyframes(t, self.values.copy())

    def value_at_key(self, t_s: float) -> float:
        return float(self.values[self._index(t_s)])

    def with_value(self, t_s: float, value: float) -> Keyframes:
        """A copy with the key at time ``t_s`` set to ``value``."""
        v = self.values.copy()
        v[self._index(t_s)] = value
        return Keyframes(self.t_s.copy(), v)

    def inserted(self, pairs: list[tuple[float, float]]) -> Keyframes:
        return Keyframes.of(sorted(self.pairs() + pairs))

    def _index(self, t_s: float) -> int:
        hit = np.flatnonzero(np.abs(self.t_s - t_s) < 1e-9)
        if hit.size != 1:
            raise KeyError(f"no keyframe at {t_s} s")
        return int(hit[0])


@dataclass(frozen=True)
class VelocityStep:
    """A velocity change ``dv_mps`` along world axis ``axis`` (0 X, 1 Y, 2 Z) during [t0, t0 + T], with a smooth
    bell-shaped acceleration (peak 1.875 dv / T at t0 + T/2): take-offs, landings, gait starts."""

    axis: int
    t0_s: float
    duration_s: float
    dv_mps: float

    def evaluate(self, t_s: np.ndarray) -> Traj:
        T = self.duration_s
        u = (np.asarray(t_s, dtype=float) - self.t0_s) / T
        s, ds, _ = min_jerk(np.clip(u, 0.0, 1.0))
        s1, _ = _step_integrals(u)
        return Traj(self.dv_mps * T * s1, self.dv_mps * s, self.dv_mps * ds / T)

    @property
    def t_peak_s(self) -> float:
        return self.t0_s + 0.5 * self.duration_s

    @property
    def peak_accel_mps2(self) -> float:
        return 1.875 * self.dv_mps / self.duration_s


@dataclass(frozen=True)
class AccelWindow:
    """A constant acceleration ``accel_mps2`` along ``axis`` switched on over [t_on, t_on + edge] and off over
    [t_off, t_off + edge] with minimum-jerk edges (e.g. -g during a flight phase). Velocity change
    ``accel * (t_off - t_on)``."""

    axis: int
    t_on_s: float
    t_off_s: float
    edge_s: float
    accel_mps2: float

    def evaluate(self, t_s: np.ndarray) -> Traj:
        t = np.asarray(t_s, dtype=float)
        e, A = self.edge_s, self.accel_mps2
        u_on, u_off = (t - self.t_on_s) / e, (t - self.t_off_s) / e
        s_on, ds_on, _ = min_jerk(np.clip(u_on, 0.0, 1.0))
        s_off, ds_off, _ = min_jerk(np.clip(u_off, 0.0, 1.0))
        i1_on, i2_on = _step_integrals(u_on)
        i1_off, i2_off = _step_integrals(u_off)
        return Traj(A * e * e * (i2_on - i2_off), A * e * (i1_on - i1_off), A * (s_on - s_off))


@dataclass(frozen=True, eq=False)
class PositionKeys:
    """Root position keyframes (m) along world axis ``axis``, minimum-jerk between keys."""

    axis: int
    keys: Keyframes

    def evaluate(self, t_s: np.ndarray) -> Traj:
        return self.keys.evaluate(t_s)


RootComponent = VelocityStep | AccelWindow | PositionKeys


@functools.lru_cache(maxsize=16)
def _shock_shape(freq_hz: float, tau_s: float) -> tuple[float, float]:
    """(scale, t_peak) of the unit shock: displacement d(s) = scale * x^3 e^-x sin(2 pi f s), x = s / tau, whose
    2nd derivative peaks at +1 m/s^2 at s = t_peak (found on a 10 us grid)."""
    s = np.arange(0.0, 15.0 * tau_s, 1e-5)
    d2 = _shock_traj(s, 1.0, freq_hz, tau_s).d2
    k = int(np.argmax(np.abs(d2)))
    return 1.0 / float(d2[k]), float(s[k])


def _shock_traj(s: np.ndarray, scale: float, freq_hz: float, tau_s: float) -> Traj:
    """Damped oscillation starting smoothly at s = 0 (x^3 factor: position to jerk continuous at the onset)."""
    x = np.maximum(s, 0.0) / tau_s
    ex = np.exp(-x)
    x2 = x * x
    env = Traj(x2 * x * ex, (3.0 * x2 - x2 * x) * ex / tau_s, (6.0 * x - 6.0 * x2 + x2 * x) * ex / tau_s**2)
    w = 2.0 * np.pi * freq_hz
    ph = w * np.maximum(s, 0.0)
    osc = Traj(np.sin(ph), w * np.cos(ph), -w * w * np.sin(ph))
    out = env * osc * scale
    on = s > 0.0
    return Traj(out.v * on, out.d1 * on, out.d2 * on)


@dataclass(frozen=True)
class Shock:
    """A short vibration of both sensors along their segments' long axes: footstrike shocks, snap jerks.

    The primary sensor's (knee: shank; shoulder: upper arm) acceleration along its segment axis peaks at
    ``peak_g`` (g, without gravity) at ``t_peak_s``; the other sensor gets ``other_gain`` of it (the leg
    attenuates shock going up). The displacement is a few mm and returns to zero, so the root motion is
    unchanged. ``impact``: a footstrike/landing (listed in the session's impacts, heard by the microphones);
    False for the jerk that accompanies a snap.
    """

    t_peak_s: float
    peak_g: float
    other_gain: float = 0.35
    freq_hz: float = 32.0
    tau_s: float = 0.004
    impact: bool = True

    def evaluate(self, t_s: np.ndarray) -> Traj:
        """Displacement along the shank axis (m) and its derivatives, gain 1 (shank)."""
        scale, t_pk = _shock_shape(self.freq_hz, self.tau_s)
        s = np.asarray(t_s, dtype=float) - (self.t_peak_s - t_pk)
        near = (s > 0.0) & (s < SHOCK_SPAN_TAU * self.tau_s)  # x^3 e^-x < 1e-8 beyond: truncation invisible
        out = Traj.const(0.0, s.shape[0])
        if np.any(near):
            part = _shock_traj(s[near], scale * self.peak_g * G_MPS2, self.freq_hz, self.tau_s)
            out.v[near], out.d1[near], out.d2[near] = part.v, part.d1, part.d2
        return out

    @property
    def window_s(self) -> tuple[float, float]:
        _, t_pk = _shock_shape(self.freq_hz, self.tau_s)
        t0 = self.t_peak_s - t_pk
        return t0, t0 + 10.0 * self.tau_s


# ---------------------------------------------------------------- plans


@dataclass(frozen=True)
class Rep:
    """One repetition (stride, swing): times in seconds since session start, ``peak_deg`` in degrees.

    ``t_start_s`` movement begins; ``t_peak_s`` the driving angle reaches its extreme; ``t_return_s`` it leaves
    the extreme (end of the hold); ``t_end_s`` the rep is over. Positional order and the aliases
    ``t_bottom_s``, ``t_rise_s``, ``peak_flexion_deg`` match the first version's ``SquatRep``.
    """

    t_start_s: float
    t_peak_s: float
    t_return_s: float
    t_end_s: float
    peak_deg: float

    @property
    def t_bottom_s(self) -> float:
        return self.t_peak_s

    @property
    def t_rise_s(self) -> float:
        return self.t_return_s

    @property
    def peak_flexion_deg(self) -> float:
        return self.peak_deg


@dataclass(frozen=True)
class MotionOptions:
    """User adjustments of an exercise (the scenario's ``[motion]`` table). ``None`` = the exercise default.

    ``tempo_scale``: multiplies every movement and pause duration (< 1 = faster, e.g. 0.5 for fast but
    controlled descents). ``depth_deg``: the session's mean peak of the driving angle. ``max_reps``: stop after
    this many reps (then stand still). ``sagittal_only``: knee exercises move in the sagittal plane only (no
    abduction, rotation or toe-out; the first version's squats). ``load_kg``: barbell load (loaded squat,
    default 40 kg). ``box_height_m``: drop-landing box (default 0.35 m). ``cadence_steps_per_s``: running.
    """

    tempo_scale: float = 1.0
    depth_deg: float | None = None
    max_reps: int | None = None
    sagittal_only: bool = False
    load_kg: float | None = None
    box_height_m: float | None = None
    cadence_steps_per_s: float | None = None


@dataclass
class ExercisePlan:
    """The schedule and driving channels of one session (mutable so that events can edit it).

    ``chain``: "ankle" (knee, closed chain), "hip" (knee, open chain) or "trunk" (shoulder). ``channels``:
    keyframed driving angles in degrees ("flexion"; closed chain: "incl" = shank sagittal inclination added to
    ``ankle_share * flexion``; open chain: "hip_flexion"; shoulder: "elevation"). ``root``: root translation
    components added to ``base_position_m`` (ankle, hip or mid-hip). ``overlays``: additive event keyframes
    per channel ("flexion", "incl", "rotation", "abduction", "elevation"). ``valgus_peaks``: rep index
    (0-based) -> programmed peak knee abduction (deg). ``params``: exercise constants (see the planners).
    """

    exercise: str
    joint_kind: str
    chain: str
    duration_s: float
    stand_start_s: float
    reps: list[Rep]
    channels: dict[str, Keyframes]
    root: list[RootComponent] = field(default_factory=list)
    base_position_m: np.ndarray = field(default_factory=lambda: np.zeros(3))
    shocks: list[Shock] = field(default_factory=list)
    landings: list[VelocityStep] = field(default_factory=list)
    params: dict[str, float] = field(default_factory=dict)
    overlays: dict[str, list[Keyframes]] = field(default_factory=dict)
    valgus_peaks: dict[int, float] = field(default_factory=dict)
    all_reps: list[Rep] = field(default_factory=list)  # every planned rep (reps: those inside the session)
    continuous: bool = False  # running, leg swings: the movement goes on to the end of the session

    @property
    def main_channel(self) -> str:
        return "elevation" if self.joint_kind == "shoulder" else "flexion"

    @property
    def impacts(self) -> list[Impact]:
        """Footstrike shocks and landings inside the session, in time order."""
        out = [Impact(s.t_peak_s, s.peak_g) for s in self.shocks if s.impact]
        out += [Impact(v.t_peak_s, v.peak_accel_mps2 / G_MPS2) for v in self.landings]
        return sorted((i for i in out if 0.0 <= i.t_s < self.duration_s), key=lambda i: i.t_s)

    def impact_windows(self) -> list[tuple[float, float, float]]:
        """(t_start, t_end, peak_g) of every impact in the session, for labels."""
        out = [(*s.window_s, s.peak_g) for s in self.shocks if s.impact]
        out += [(v.t0_s, v.t0_s + v.duration_s, v.peak_accel_mps2 / G_MPS2) for v in self.landings]
        return sorted(w for w in out if 0.0 <= w[0] < self.duration_s)

    def moving_intervals(self) -> np.ndarray:
        """(k, 2) [start, end) seconds of every rep's way to the peak and back, in time order."""
        rows = [(r.t_start_s, r.t_peak_s) for r in self.reps] + [(r.t_return_s, r.t_end_s) for r in self.reps]
        return np.array(sorted(rows)).reshape(-1, 2)

    def shift_after(self, after_s: float, dt_s: float) -> None:
        """Delay everything planned after ``after_s`` by ``dt_s`` seconds (to insert a hold)."""
        eps = 1e-9
        self.channels = {k: v.shifted(after_s, dt_s) for k, v in self.channels.items()}
        self.overlays = {k: [o.shifted(after_s, dt_s) for o in v] for k, v in self.overlays.items()}
        root: list[RootComponent] = []
        for c in self.root:
            if isinstance(c, PositionKeys):
                root.append(PositionKeys(c.axis, c.keys.shifted(after_s, dt_s)))
            elif isinstance(c, VelocityStep) and c.t0_s > after_s + eps:
                root.append(dataclasses.replace(c, t0_s=c.t0_s + dt_s))
            elif isinstance(c, AccelWindow) and c.t_on_s > after_s + eps:
                root.append(dataclasses.replace(c, t_on_s=c.t_on_s + dt_s, t_off_s=c.t_off_s + dt_s))
            else:
                root.append(c)
        self.root = root
        self.shocks = [dataclasses.replace(s, t_peak_s=s.t_peak_s + dt_s) if s.t_peak_s > after_s + eps else s
                       for s in self.shocks]
        self.landings = [dataclasses.replace(v, t0_s=v.t0_s + dt_s) if v.t0_s > after_s + eps else v
                         for v in self.landings]

        def shift_rep(r: Rep) -> Rep:
            f = [x + dt_s if x > after_s + eps else x for x in (r.t_start_s, r.t_peak_s, r.t_return_s, r.t_end_s)]
            return Rep(f[0], f[1], f[2], f[3], r.peak_deg)

        self.all_reps = [shift_rep(r) for r in self.all_reps]
        self.refit_reps()

    def refit_reps(self) -> None:
        """Recompute :attr:`reps`: the reps of :attr:`all_reps` that end inside the session."""
        limit = self.duration_s - END_MARGIN_S
        self.reps = [r for r in self.all_reps if r.t_end_s <= limit]

    def fit_to_session(self, max_reps: int | None = None) -> None:
        """Perform only the reps that end inside the session (at most ``max_reps``): after the last one the
        athlete holds the end pose (stands still). Continuous exercises (running, leg swings) keep going to the
        end of the session; only whole reps are counted."""
        self.refit_reps()
        n = len(self.reps) if max_reps is None else min(len(self.reps), max_reps)
        if self.continuous or len(self.all_reps) <= n:
            return
        cut = self.all_reps[n - 1].t_end_s if n > 0 else self.stand_start_s
        self.all_reps = self.all_reps[:n]
        self.channels = {k: _truncate(v, cut) for k, v in self.channels.items()}
        self.root = [c for c in (_truncate_root(c, cut) for c in self.root) if c is not None]
        self.shocks = [s for s in self.shocks if s.t_peak_s <= cut]
        self.landings = [v for v in self.landings if v.t0_s <= cut]
        self.refit_reps()


def _finish_plan(plan: ExercisePlan, opts: MotionOptions) -> ExercisePlan:
    if opts.max_reps is not None and plan.continuous:
        raise ValueError(f"max_reps is not supported by the continuous exercise {plan.exercise!r}")
    plan.fit_to_session(opts.max_reps)
    return plan


def _truncate(k: Keyframes, cut_s: float) -> Keyframes:
    keep = k.t_s <= cut_s + 1e-9
    if not np.any(keep):
        return Keyframes(k.t_s[:1].copy(), k.values[:1].copy())
    return Keyframes(k.t_s[keep].copy(), k.values[keep].copy())


def _truncate_root(c: RootComponent, cut_s: float) -> RootComponent | None:
    if isinstance(c, PositionKeys):
        return PositionKeys(c.axis, _truncate(c.keys, cut_s))
    if isinstance(c, VelocityStep):
        return c if c.t0_s <= cut_s else None
    return c if c.t_on_s <= cut_s else None


# ---------------------------------------------------------------- planners


def _depth(opts: MotionOptions, default: float) -> float:
    return float(opts.depth_deg) if opts.depth_deg is not None else default


def _n_max(duration_s: float, min_cycle_s: float) -> int:
    return int(np.ceil(max(duration_s, 0.0) / min_cycle_s)) + 1


def _knee_params(rng: np.random.Generator, opts: MotionOptions, *, share: float, valgus_deg: float,
                 max_flexion_deg: float) -> dict[str, float]:
    """Session constants of a knee exercise: toe-out, screw-home rotation coupling, natural valgus.

    Drawn from a child generator (``spawn`` does not advance ``rng``), so the rep draws that follow are those of
    the first version's squat planner for the same seed.
    """
    child = rng.spawn(1)[0]
    heading = float(child.uniform(5.0, 15.0))  # toe-out, deg
    rot_per_deg = float(child.uniform(0.05, 0.10))  # tibial internal rotation per degree of flexion
    # Natural valgus grows with flexion^2 and stays below the label threshold even at the deepest flexion.
    cap = VALGUS_BASELINE_CAP_DEG * (100.0 / max(max_flexion_deg, 100.0)) ** 2
    base = min(valgus_deg, cap)
    if opts.sagittal_only:
        heading = rot_per_deg = base = 0.0
    return {"ankle_share": share, "heading_deg": heading, "rotation_per_deg": rot_per_deg,
            "valgus_base_deg": base, "shank_valgus_share": 0.4}


def _squat_like(
    exercise: str,
    duration_s: float,
    profile: AthleteProfile,
    rng: np.random.Generator,
    opts: MotionOptions,
    *,
    down: tuple[float, float],
    hold: tuple[float, float],
    up: tuple[float, float],
    pause: tuple[float, float],
    mean_depth: tuple[float, float],
    depth_sd: float,
    depth_clip: tuple[float, float],
    share: tuple[float, float],
    valgus_factor: float,
) -> ExercisePlan:
    """Closed-chain reps: stand, descend, hold at the bottom, ascend, pause (the first version's squat schedule)."""
    stand = float(rng.uniform(1.0, 2.0))
    ankle_share = float(rng.uniform(*share))
    mean = _depth(opts, float(rng.uniform(*mean_depth)))
    lo, hi = depth_clip
    if opts.depth_deg is not None:
        lo, hi = min(lo, mean - 10.0), max(hi, mean + 10.0)
    hi = min(hi, profile.max_knee_flexion_deg)
    params = _knee_params(rng, opts, share=ankle_share, valgus_deg=profile.valgus_tendency_deg * valgus_factor,
                          max_flexion_deg=hi)
    k = opts.tempo_scale
    n_max = _n_max(duration_s, k * (down[0] + hold[0] + up[0] + pause[0]))
    # One row of uniforms per rep: the same seed gives the same first reps for any duration.
    u = rng.random((n_max, 5))
    d = k * (down[0] + (down[1] - down[0]) * u[:, 0])
    h = k * (hold[0] + (hold[1] - hold[0]) * u[:, 1])
    a = k * (up[0] + (up[1] - up[0]) * u[:, 2])
    p = k * (pause[0] + (pause[1] - pause[0]) * u[:, 3])
    peak = np.clip(mean + depth_sd * ndtri(u[:, 4]), lo, hi)  # normal via the inverse CDF
    starts = stand + np.concatenate(([0.0], np.cumsum(d + h + a + p)[:-1]))
    keys: list[tuple[float, float]] = []
    reps: list[Rep] = []
    for s0, di, hi_, ai, pk in zip(starts, d, h, a, peak, strict=True):  # per rep, not per sample
        r = Rep(float(s0), float(s0 + di), float(s0 + di + hi_), float(s0 + di + hi_ + ai), float(pk))
        reps.append(r)
        keys += [(r.t_start_s, 0.0), (r.t_peak_s, r.peak_deg), (r.t_return_s, r.peak_deg), (r.t_end_s, 0.0)]
    plan = ExercisePlan(exercise, "knee", "ankle", float(duration_s), stand, [], {"flexion": Keyframes.of(keys)},
                        params=params, all_reps=reps)
    return _finish_plan(plan, opts)


def plan_bodyweight_squat(duration_s: float, profile: AthleteProfile, rng: np.random.Generator,
                          opts: MotionOptions) -> ExercisePlan:
    """Bodyweight squats: descent 0.8-1.2 s, bottom hold 0.1-0.4 s, ascent 0.7-1.1 s, 0.5-1.5 s standing between
    reps; depth around the profile's mean (medium: 98-108 deg, SD 4 deg per rep, clipped to 90-115 deg)."""
    lo, hi = profile.squat_depth_deg
    return _squat_like("bodyweight_squat", duration_s, profile, rng, opts, down=(0.8, 1.2), hold=(0.1, 0.4),
                       up=(0.7, 1.1), pause=(0.5, 1.5), mean_depth=(lo, hi), depth_sd=4.0,
                       depth_clip=(lo - 8.0, hi + 7.0), share=profile.ankle_share, valgus_factor=1.0)


def plan_loaded_squat(duration_s: float, profile: AthleteProfile, rng: np.random.Generator,
                      opts: MotionOptions) -> ExercisePlan:
    """Barbell squats: slower (descent 1.5-2.2 s, ascent 1.1-1.7 s, 2-3.5 s re-bracing between reps), more
    consistent depth (SD 3 deg), 0.1 deg shallower per kg of load, natural valgus growing with the load."""
    load = 40.0 if opts.load_kg is None else float(opts.load_kg)
    lo, hi = profile.squat_depth_deg
    shift = -0.1 * load
    return _squat_like("loaded_squat", duration_s, profile, rng, opts, down=(1.5, 2.2), hold=(0.2, 0.6),
                       up=(1.1, 1.7), pause=(2.0, 3.5), mean_depth=(lo + shift, hi + shift), depth_sd=3.0,
                       depth_clip=(lo + shift - 10.0, hi + shift + 8.0), share=profile.ankle_share,
                       valgus_factor=1.0 + load / 60.0)


def plan_step_down(duration_s: float, profile: AthleteProfile, rng: np.random.Generator,
                   opts: MotionOptions) -> ExercisePlan:
    """Single-leg step-downs from a box on the instrumented (stance) leg: controlled descent 1.0-1.5 s to the
    profile's depth (SD 3 deg), heel tap 0.1-0.3 s, ascent 0.8-1.2 s; the knee travels forward (shank share
    0.40-0.50) and natural valgus is larger than in squats."""
    m = profile.step_down_depth_deg
    return _squat_like("step_down", duration_s, profile, rng, opts, down=(1.0, 1.5), hold=(0.1, 0.3),
                       up=(0.8, 1.2), pause=(0.8, 1.6), mean_depth=(m - 3.0, m + 3.0), depth_sd=3.0,
                       depth_clip=(m - 12.0, m + 12.0), share=(0.40, 0.50), valgus_factor=1.8)


def plan_forward_lunge(duration_s: float, profile: AthleteProfile, rng: np.random.Generator,
                       opts: MotionOptions) -> ExercisePlan:
    """Forward lunges, instrumented leg in front: step out 0.5-0.7 s (foot lifted 6 cm, knee to ~30 deg, heel
    contact with a 1.5-3 g shock), descent 0.7-1.0 s to the profile's lunge depth (SD 4 deg), hold 0.1-0.3 s,
    push back up 0.6-0.9 s, step back 0.5-0.7 s, 1-2 s standing. Step length 0.42-0.50 x height."""
    stand = float(rng.uniform(1.0, 2.0))
    mean = _depth(opts, profile.lunge_depth_deg + float(rng.uniform(-3.0, 3.0)))
    step_len = profile.height_m * float(rng.uniform(0.42, 0.50))
    params = _knee_params(rng, opts, share=0.0, valgus_deg=profile.valgus_tendency_deg * 1.3,
                          max_flexion_deg=profile.max_knee_flexion_deg)
    params["heading_deg"] *= 0.5  # the front foot points forward in a lunge
    k = opts.tempo_scale
    n_max = _n_max(duration_s, k * 3.4)
    u = rng.random((n_max, 9))
    st = k * (0.5 + 0.2 * u[:, 0])
    desc = k * (0.7 + 0.3 * u[:, 1])
    hold = k * (0.1 + 0.2 * u[:, 2])
    asc = k * (0.6 + 0.3 * u[:, 3])
    sb = k * (0.5 + 0.2 * u[:, 4])
    pause = k * (1.0 + 1.0 * u[:, 5])
    depth = np.clip(mean + 4.0 * ndtri(u[:, 6]), 60.0, profile.max_knee_flexion_deg)
    incl_bottom = 5.0 + 7.0 * u[:, 7]
    shock = 1.5 + 1.5 * u[:, 8]
    f_keys: list[tuple[float, float]] = []
    i_keys: list[tuple[float, float]] = []
    x_keys: list[tuple[float, float]] = []
    z_keys: list[tuple[float, float]] = []
    reps: list[Rep] = []
    shocks: list[Shock] = []
    t = stand
    for j in range(n_max):  # per rep
        t0, tm, tc = t, t + 0.5 * st[j], t + st[j]
        tb = tc + desc[j]
        tr = tb + hold[j]
        tu = tr + asc[j]
        tm2, te = tu + 0.5 * sb[j], tu + sb[j]
        f_keys += [(t0, 0.0), (tm, 30.0), (tc, 10.0), (tb, depth[j]), (tr, depth[j]), (tu, 10.0), (tm2, 30.0),
                   (te, 0.0)]
        # Shank inclination: leaning back at heel contact (foot ahead of the knee), forward at the bottom.
        i_keys += [(t0, 0.0), (tm, -6.0), (tc, -14.0), (tb, incl_bottom[j]), (tr, incl_bottom[j]), (tu, -14.0),
                   (tm2, -6.0), (te, 0.0)]
        x_keys += [(t0, 0.0), (tc, step_len), (tu, step_len), (te, 0.0)]
        z_keys += [(t0, 0.0), (tm, 0.06), (tc, 0.0), (tu, 0.0), (tm2, 0.06), (te, 0.0)]
        shocks.append(Shock(tc + 0.01, float(shock[j])))
        reps.append(Rep(t0, tb, tr, te, float(depth[j])))
        t = te + pause[j]
    plan = ExercisePlan("forward_lunge", "knee", "ankle", float(duration_s), stand, [],
                        {"flexion": Keyframes.of(f_keys), "incl": Keyframes.of(i_keys)},
                        root=[PositionKeys(0, Keyframes.of(x_keys)), PositionKeys(2, Keyframes.of(z_keys))],
                        shocks=shocks, params=params, all_reps=reps)
    return _finish_plan(plan, opts)


def _solve_ballistic(components: Callable[[float], list[RootComponent]], t_far: float, target_dz: float) -> float:
    """The take-off velocity v0 (m/s) such that the vertical root displacement at ``t_far`` is ``target_dz``
    (the displacement is affine in v0: solve from two evaluations)."""

    def dz(v0: float) -> float:
        t = np.array([t_far])
        return float(sum(c.evaluate(t).v[0] for c in components(v0)))

    z0, z1 = dz(0.0), dz(1.0)
    return (target_dz - z0) / (z1 - z0)


def _flight(t_push_end: float, t_contact: float, land_T: float, target_dz: float) -> list[RootComponent]:
    """Vertical root motion of one flight: push (velocity step ending at ``t_push_end``), -1 g while airborne,
    landing deceleration over ``land_T`` from ``t_contact``; net displacement ``target_dz`` (m), net velocity 0."""
    t_on, t_off, edge = t_push_end - 0.03, t_contact - 0.02, 0.03

    def comps(v0: float) -> list[RootComponent]:
        dv_land = G_MPS2 * (t_off - t_on) - v0  # the landing cancels whatever velocity is left
        return [VelocityStep(2, t_push_end - 0.09, 0.09, v0), AccelWindow(2, t_on, t_off, edge, -G_MPS2),
                VelocityStep(2, t_contact - 0.004, land_T, dv_land)]

    v0 = _solve_ballistic(comps, t_contact + land_T + 1.0, target_dz)
    return comps(v0)


def plan_jump_squat(duration_s: float, profile: AthleteProfile, rng: np.random.Generator,
                    opts: MotionOptions) -> ExercisePlan:
    """Countermovement jump squats: fast descent 0.45-0.65 s to 70-90 deg, push 0.22-0.32 s, flight 0.30-0.45 s
    (free fall: the accelerometers read ~0 g), landing impact (velocity stopped in 25-40 ms: ~8-13 g), then a
    fast but controlled absorption to 40-65 deg in 0.20-0.30 s, stand up, 1.5-3 s rest. Negative example for
    instability detection: fast flexion and an acceleration drop without giving way."""
    stand = float(rng.uniform(1.0, 2.0))
    ankle_share = float(rng.uniform(*profile.ankle_share))
    mean = _depth(opts, 80.0 * profile.squat_depth_deg[0] / 98.0)
    params = _knee_params(rng, opts, share=ankle_share, valgus_deg=profile.valgus_tendency_deg,
                          max_flexion_deg=profile.max_knee_flexion_deg)
    k = opts.tempo_scale
    n_max = _n_max(duration_s, k * 3.5)
    u = rng.random((n_max, 11))
    cm = k * (0.45 + 0.2 * u[:, 0])
    bottom = k * (0.05 + 0.07 * u[:, 1])
    push = k * (0.22 + 0.10 * u[:, 2])
    flight = 0.30 + 0.15 * u[:, 3]  # physics, not tempo
    absorb = k * (0.20 + 0.10 * u[:, 4])
    ahold = k * (0.10 + 0.15 * u[:, 5])
    stand_up = k * (0.6 + 0.3 * u[:, 6])
    pause = k * (1.5 + 1.5 * u[:, 7])
    depth = np.clip(mean + 5.0 * ndtri(u[:, 8]), 50.0, profile.max_knee_flexion_deg)
    absorb_depth = 40.0 + 25.0 * u[:, 9]
    land_T = 0.025 + 0.015 * u[:, 10]  # forefoot-first landing: softer than a drop landing
    f_keys: list[tuple[float, float]] = []
    root: list[RootComponent] = []
    landings: list[VelocityStep] = []
    reps: list[Rep] = []
    t = stand
    for j in range(n_max):
        tb = t + cm[j]
        tr = tb + bottom[j]
        tto = tr + push[j]
        tland = tto + flight[j]
        tab = tland + absorb[j]
        th = tab + ahold[j]
        te = th + stand_up[j]
        f_keys += [(t, 0.0), (tb, depth[j]), (tr, depth[j]), (tto, 4.0), (tland, 10.0), (tab, absorb_depth[j]),
                   (th, absorb_depth[j]), (te, 0.0)]
        comps = _flight(tto, tland, float(land_T[j]), 0.0)
        root += comps
        landings.append(comps[-1])  # type: ignore[arg-type]
        reps.append(Rep(t, tb, tr, te, float(depth[j])))
        t = te + pause[j]
    plan = ExercisePlan("jump_squat", "knee", "ankle", float(duration_s), stand, [], {"flexion": Keyframes.of(f_keys)},
                        root=root, landings=landings, params=params, all_reps=reps)
    return _finish_plan(plan, opts)


def plan_drop_landing(duration_s: float, profile: AthleteProfile, rng: np.random.Generator,
                      opts: MotionOptions) -> ExercisePlan:
    """Drop landings from a box (default 0.35 m): lift the foot, fall (~0 g), land with the velocity stopped in
    15-25 ms (> 16 g from 0.35 m: the accelerometer saturates), absorb fast to 55-80 deg in 0.22-0.32 s, stand
    up, then step back onto the box (0.9-1.2 s) and stand 1.5-2.5 s. Rep = lift to standing after the landing."""
    box = 0.35 if opts.box_height_m is None else float(opts.box_height_m)
    stand = float(rng.uniform(1.0, 2.0))
    ankle_share = float(rng.uniform(*profile.ankle_share))
    params = _knee_params(rng, opts, share=ankle_share, valgus_deg=profile.valgus_tendency_deg * 1.5,
                          max_flexion_deg=profile.max_knee_flexion_deg)
    k = opts.tempo_scale
    n_max = _n_max(duration_s, k * 5.0)
    u = rng.random((n_max, 9))
    lift = k * (0.25 + 0.10 * u[:, 0])
    t_fall = np.sqrt(2.0 * box / G_MPS2) * (1.05 + 0.10 * u[:, 1])
    land_T = 0.015 + 0.010 * u[:, 2]
    absorb = k * (0.22 + 0.10 * u[:, 3])
    ahold = k * (0.15 + 0.15 * u[:, 4])
    stand_up = k * (0.8 + 0.3 * u[:, 5])
    walk = k * (1.0 + 0.5 * u[:, 6])
    step_up = k * (0.9 + 0.3 * u[:, 7])
    depth = np.clip(_depth(opts, 67.0) + 6.0 * ndtri(u[:, 8]), 45.0, profile.max_knee_flexion_deg)
    f_keys: list[tuple[float, float]] = []
    x_keys: list[tuple[float, float]] = [(0.0, 0.0)]
    z_keys: list[tuple[float, float]] = [(0.0, 0.0)]
    root: list[RootComponent] = []
    landings: list[VelocityStep] = []
    reps: list[Rep] = []
    t = stand
    for j in range(n_max):
        t_off_box = t + lift[j]
        tland = t_off_box + t_fall[j]
        tab = tland + absorb[j]
        th = tab + ahold[j]
        te = th + stand_up[j]
        tsu = te + walk[j]
        tsu_end = tsu + step_up[j]
        f_keys += [(t, 0.0), (t_off_box, 25.0), (tland, 10.0), (tab, depth[j]), (th, depth[j]), (te, 0.0),
                   (tsu, 0.0), (tsu + 0.5 * step_up[j], 65.0), (tsu_end, 0.0)]
        z_keys += [(tsu, box * j), (tsu_end, box * (j + 1))]  # cumulative: each step-up undoes one drop
        comps = _flight(t_off_box, tland, float(land_T[j]), -box)
        # Forward: ~0.25 m; the velocity is gained on the box and kept in flight (ballistic), stopped on landing.
        land = comps[-1]
        assert isinstance(land, VelocityStep)
        dx_per_v = (land.t0_s + 0.5 * land.duration_s) - (t + 0.5 * lift[j])
        vx = 0.25 / dx_per_v
        root += [*comps, VelocityStep(0, t, float(lift[j]), vx), VelocityStep(0, land.t0_s, land.duration_s, -vx)]
        x_keys += [(tsu, -0.25 * j), (tsu_end, -0.25 * (j + 1))]  # walking back undoes it
        landings.append(land)
        reps.append(Rep(t, tab, th, te, float(depth[j])))
        t = tsu_end + k * 2.0
    plan = ExercisePlan("drop_landing", "knee", "ankle", float(duration_s), stand, [],
                        {"flexion": Keyframes.of(f_keys)},
                        root=[PositionKeys(0, Keyframes.of(x_keys)), PositionKeys(2, Keyframes.of(z_keys)), *root],
                        base_position_m=np.array([0.0, 0.0, box]), landings=landings, params=params, all_reps=reps)
    return _finish_plan(plan, opts)


def plan_running(duration_s: float, profile: AthleteProfile, rng: np.random.Generator,
                 opts: MotionOptions) -> ExercisePlan:
    """Running from a standstill: the hip (root) accelerates to running speed over two strides while the stride
    pattern grows to full amplitude (40 %, 70 %, 100 %). Cadence ~2.5-3 steps/s (profile, +-5 %), i.e. the
    instrumented leg's stride lasts 2 / cadence (+-3 % per stride). Knee: stance peak 35-45 deg, toe-off
    15-20, swing peak 90-115, terminal swing 3-8; hip flexion +30..40 / extension -12..-20 deg; pelvis bob
    +-3.5 cm. Each footstrike of the instrumented leg: a 4-9 g shock along the shank. Rep = stride."""
    stand = float(rng.uniform(1.0, 2.0))
    cadence = opts.cadence_steps_per_s or profile.cadence_steps_per_s * float(rng.uniform(0.95, 1.05))
    t_mean = 2.0 / cadence
    stride_len = profile.height_m * float(rng.uniform(1.25, 1.45))
    params = _knee_params(rng, opts, share=0.0, valgus_deg=profile.valgus_tendency_deg * 0.5,
                          max_flexion_deg=130.0)
    params["heading_deg"] *= 0.5
    swing_mean = _depth(opts, 100.0)
    n_max = _n_max(duration_s + 2.0, 0.9 * t_mean) + 2
    u = rng.random((n_max, 9))
    period = t_mean * (1.0 + 0.03 * np.clip(ndtri(u[:, 0]), -2.5, 2.5))
    stance_pk = 35.0 + 10.0 * u[:, 1]
    toe_off = 15.0 + 5.0 * u[:, 2]
    swing_pk = np.clip(swing_mean + 6.0 * ndtri(u[:, 3]), 70.0, 130.0)
    term = 3.0 + 5.0 * u[:, 4]
    hip_ext = 12.0 + 8.0 * u[:, 5]
    hip_flex = 30.0 + 10.0 * u[:, 6]
    shock = 4.0 + 5.0 * u[:, 7]
    f_keys, h_keys, z_keys = [(stand, 0.0)], [(stand, 0.0)], [(stand, 0.0)]
    reps: list[Rep] = []
    shocks: list[Shock] = []
    fs = stand + 0.35 * period[0]
    strikes = []
    for j in range(n_max):  # per stride
        T, a = period[j], min(1.0, 0.4 + 0.3 * j)
        f_keys += [(fs + 0.13 * T, a * stance_pk[j]), (fs + 0.38 * T, a * toe_off[j]), (fs + 0.64 * T, a * swing_pk[j]),
                   (fs + 0.94 * T, a * term[j])]
        h_keys += [(fs + 0.42 * T, -a * hip_ext[j]), (fs + 0.87 * T, a * hip_flex[j])]
        z_keys += [(fs + 0.15 * T, -0.035 * a), (fs + 0.40 * T, 0.035 * a), (fs + 0.65 * T, -0.035 * a),
                   (fs + 0.90 * T, 0.035 * a)]
        if j >= 1:  # the first "footstrike" is the standing foot starting to move
            shocks.append(Shock(fs + 0.012, float(a * shock[j])))
        strikes.append((fs, fs + 0.64 * T, a * swing_pk[j]))
        fs += T
    for j in range(len(strikes) - 1):
        f0, tp, pk = strikes[j]
        reps.append(Rep(f0, tp, tp, strikes[j + 1][0], float(pk)))
    v_run = stride_len / t_mean
    root: list[RootComponent] = [VelocityStep(0, stand, 2.0 * t_mean, v_run), PositionKeys(2, Keyframes.of(z_keys))]
    plan = ExercisePlan("running", "knee", "hip", float(duration_s), stand, [],
                        {"flexion": Keyframes.of(f_keys), "hip_flexion": Keyframes.of(h_keys)}, root=root,
                        base_position_m=np.array([0.0, 0.0, profile.hip_height_m]), shocks=shocks, params=params,
                        all_reps=reps, continuous=True)
    plan.params["speed_mps"] = v_run
    return _finish_plan(plan, opts)


def plan_leg_swing(duration_s: float, profile: AthleteProfile, rng: np.random.Generator,
                   opts: MotionOptions) -> ExercisePlan:
    """Front-to-back leg swings on the instrumented leg (standing on the other leg; hip = root, fixed): sets of
    8-12 swings, half-period 0.5-0.65 s (x sqrt(height / 1.75 m), +-8 % per swing), forward hip flexion around
    the profile's value (SD 5 deg), backward extension (SD 3 deg); the knee stays almost straight forward
    (3-8 deg) and bends 20-35 deg on the back swing. 2.5-4 s rest between sets. Rep = one swing from the back
    extreme (or the set start) through the forward peak to the next back extreme; ``peak_deg`` = hip flexion."""
    stand = float(rng.uniform(1.0, 2.0))
    half = float(rng.uniform(0.5, 0.65)) * np.sqrt(profile.height_m / 1.75) * opts.tempo_scale
    fwd_mean = _depth(opts, profile.hip_swing_deg[0])
    params = _knee_params(rng, opts, share=0.0, valgus_deg=0.0, max_flexion_deg=100.0)
    params["heading_deg"] *= 0.3
    n_max = _n_max(duration_s, 2.0 * half * 0.9) + 1
    u = rng.random((n_max, 6))
    fwd = np.clip(fwd_mean + 5.0 * ndtri(u[:, 0]), 20.0, 110.0)
    back = np.clip(profile.hip_swing_deg[1] + 3.0 * ndtri(u[:, 1]), 5.0, 45.0)
    hp = half * (1.0 + 0.08 * (2.0 * u[:, 2] - 1.0))
    k_fwd = 3.0 + 5.0 * u[:, 3]
    k_back = 20.0 + 15.0 * u[:, 4]
    set_sizes = rng.integers(8, 13, size=n_max)
    rests = opts.tempo_scale * rng.uniform(2.5, 4.0, size=n_max)
    h_keys: list[tuple[float, float]] = [(stand, 0.0)]
    f_keys: list[tuple[float, float]] = [(stand, 0.0)]
    reps: list[Rep] = []
    t, j, s_idx = stand, 0, 0
    while j < n_max and t < duration_s + 2.0:  # per swing
        n_set = int(set_sizes[s_idx])
        start = t
        for i in range(n_set):
            if j >= n_max:
                break
            t_f = t + (0.6 if i == 0 else 1.0) * hp[j]
            h_keys.append((t_f, fwd[j]))
            f_keys.append((t_f, k_fwd[j]))
            last = i == n_set - 1 or j == n_max - 1
            t_b = t_f + (0.7 if last else 1.0) * hp[j]
            h_keys.append((t_b, 0.0 if last else -back[j]))
            f_keys.append((t_b, 0.0 if last else k_back[j]))
            reps.append(Rep(start if i == 0 else t, t_f, t_f, t_b, float(fwd[j])))
            t = t_b
            j += 1
        t += rests[s_idx]
        s_idx += 1
        h_keys.append((t, 0.0))
        f_keys.append((t, 0.0))
    plan = ExercisePlan("leg_swing", "knee", "hip", float(duration_s), stand, [],
                        {"flexion": Keyframes.of(f_keys), "hip_flexion": Keyframes.of(h_keys)},
                        base_position_m=np.array([0.0, 0.0, profile.hip_height_m]), params=params, all_reps=reps,
                        continuous=True)
    return _finish_plan(plan, opts)


def _shoulder_reps(
    duration_s: float, rng: np.random.Generator, opts: MotionOptions, *, rest: float, peak_mean: float,
    peak_sd: float, peak_clip: tuple[float, float], go: tuple[float, float], hold: tuple[float, float],
    back: tuple[float, float], pause: tuple[float, float], stand: float,
) -> tuple[list[tuple[float, float]], list[Rep]]:
    k = opts.tempo_scale
    n_max = _n_max(duration_s, k * (go[0] + hold[0] + back[0] + pause[0]))
    u = rng.random((n_max, 5))
    g = k * (go[0] + (go[1] - go[0]) * u[:, 0])
    h = k * (hold[0] + (hold[1] - hold[0]) * u[:, 1])
    b = k * (back[0] + (back[1] - back[0]) * u[:, 2])
    p = k * (pause[0] + (pause[1] - pause[0]) * u[:, 3])
    peak = np.clip(peak_mean + peak_sd * ndtri(u[:, 4]), *peak_clip)
    starts = stand + np.concatenate(([0.0], np.cumsum(g + h + b + p)[:-1]))
    keys: list[tuple[float, float]] = [(0.0, rest)]
    reps = []
    for s0, gi, hi, bi, pk in zip(starts, g, h, b, peak, strict=True):
        r = Rep(float(s0), float(s0 + gi), float(s0 + gi + hi), float(s0 + gi + hi + bi), float(pk))
        reps.append(r)
        keys += [(r.t_start_s, rest), (r.t_peak_s, r.peak_deg), (r.t_return_s, r.peak_deg), (r.t_end_s, rest)]
    return keys, reps


def plan_overhead_press(duration_s: float, profile: AthleteProfile, rng: np.random.Generator,
                        opts: MotionOptions) -> ExercisePlan:
    """Standing overhead press from the front rack (elevation 70-80 deg, plane 70-80 deg, i.e. elbows forward,
    externally rotated) to lockout near the profile's maximum elevation (SD 3 deg per rep) in the scapular
    plane (30-45 deg); press 0.8-1.3 s, lockout 0.2-0.6 s, lowering 1.0-1.6 s, 0.8-2 s in the rack. The trunk
    leans back 3-6 deg at lockout. Plane, rotation and lean follow the elevation linearly."""
    stand = float(rng.uniform(1.0, 2.0))
    e_rack = float(rng.uniform(70.0, 80.0))
    top = _depth(opts, min(profile.shoulder_max_elevation_deg, 172.0) - float(rng.uniform(4.0, 10.0)))
    plane_rack, plane_top = float(rng.uniform(70.0, 80.0)), float(rng.uniform(30.0, 45.0))
    rot_rack, rot_top = float(rng.uniform(-35.0, -25.0)), float(rng.uniform(-15.0, -5.0))
    lean_top = -float(rng.uniform(3.0, 6.0))
    keys, reps = _shoulder_reps(duration_s, rng, opts, rest=e_rack, peak_mean=top, peak_sd=3.0,
                                peak_clip=(e_rack + 40.0, profile.shoulder_max_elevation_deg), go=(0.8, 1.3),
                                hold=(0.2, 0.6), back=(1.0, 1.6), pause=(0.8, 2.0), stand=stand)
    span = top - e_rack
    params = {"elevation0_deg": e_rack, "plane0_deg": plane_rack, "plane_per_deg": (plane_top - plane_rack) / span,
              "rotation0_deg": rot_rack, "rotation_per_deg": (rot_top - rot_rack) / span,
              "lean_per_deg": lean_top / span, "rise_m_per_deg": 0.0}
    plan = ExercisePlan("overhead_press", "shoulder", "trunk", float(duration_s), stand, [],
                        {"elevation": Keyframes.of(keys)}, base_position_m=np.array([0.0, 0.0, profile.hip_height_m]),
                        params=params, all_reps=reps)
    return _finish_plan(plan, opts)


def plan_pull_up(duration_s: float, profile: AthleteProfile, rng: np.random.Generator,
                 opts: MotionOptions) -> ExercisePlan:
    """Pull-ups from a still dead hang (elevation near the profile's maximum, plane 15-25 deg: wide grip) to the
    top (elevation 35-55 deg, SD 4 deg per rep; the body rises ~0.45-0.55 m and the trunk leans back ~8 deg):
    pull 0.7-1.2 s, top 0.1-0.4 s, lowering 1.2-2.0 s, 0.5-1.5 s hanging. ``peak_deg`` = elevation at the top."""
    stand = float(rng.uniform(1.0, 2.0))
    e_hang = profile.shoulder_max_elevation_deg - float(rng.uniform(0.0, 6.0))
    top = _depth(opts, float(rng.uniform(35.0, 55.0)))
    plane_hang, plane_top = float(rng.uniform(15.0, 25.0)), float(rng.uniform(5.0, 15.0))
    rot_hang, rot_top = float(rng.uniform(0.0, 10.0)), float(rng.uniform(-20.0, -10.0))
    lean_top = -float(rng.uniform(6.0, 10.0))
    rise = float(rng.uniform(0.45, 0.55)) * profile.height_m / 1.75
    keys, reps = _shoulder_reps(duration_s, rng, opts, rest=e_hang, peak_mean=top, peak_sd=4.0,
                                peak_clip=(20.0, e_hang - 40.0), go=(0.7, 1.2), hold=(0.1, 0.4), back=(1.2, 2.0),
                                pause=(0.5, 1.5), stand=stand)
    span = top - e_hang  # negative: elevation decreases as the body rises
    params = {"elevation0_deg": e_hang, "plane0_deg": plane_hang, "plane_per_deg": (plane_top - plane_hang) / span,
              "rotation0_deg": rot_hang, "rotation_per_deg": (rot_top - rot_hang) / span,
              "lean_per_deg": lean_top / span, "rise_m_per_deg": rise / span}
    plan = ExercisePlan("pull_up", "shoulder", "trunk", float(duration_s), stand, [], {"elevation": Keyframes.of(keys)},
                        base_position_m=np.array([0.0, 0.0, profile.hip_height_m]), params=params, all_reps=reps)
    return _finish_plan(plan, opts)


Planner = Callable[[float, AthleteProfile, np.random.Generator, MotionOptions], ExercisePlan]


@dataclass(frozen=True)
class ExerciseInfo:
    """Registry entry: the planner, the joint it instruments, and which kinematic events it supports."""

    planner: Planner
    joint_kind: str  # "knee" | "shoulder"
    events: frozenset[str]  # of "valgus", "instability", "locking"
    locking_modes: frozenset[str] = frozenset()


_CLOSED = frozenset({"valgus", "instability", "locking"})
EXERCISES: dict[str, ExerciseInfo] = {
    "bodyweight_squat": ExerciseInfo(plan_bodyweight_squat, "knee", _CLOSED, frozenset({"extension", "range"})),
    "loaded_squat": ExerciseInfo(plan_loaded_squat, "knee", _CLOSED, frozenset({"extension", "range"})),
    "forward_lunge": ExerciseInfo(plan_forward_lunge, "knee", _CLOSED, frozenset({"extension", "range"})),
    "step_down": ExerciseInfo(plan_step_down, "knee", _CLOSED, frozenset({"extension", "range"})),
    "jump_squat": ExerciseInfo(plan_jump_squat, "knee", frozenset({"valgus", "instability"})),
    "drop_landing": ExerciseInfo(plan_drop_landing, "knee", frozenset({"valgus", "instability"})),
    "running": ExerciseInfo(plan_running, "knee", frozenset()),
    "leg_swing": ExerciseInfo(plan_leg_swing, "knee", frozenset()),
    "overhead_press": ExerciseInfo(plan_overhead_press, "shoulder", frozenset({"locking"}), frozenset({"range"})),
    "pull_up": ExerciseInfo(plan_pull_up, "shoulder", frozenset({"locking"}), frozenset({"range"})),
}


def plan_exercise(
    exercise: str, duration_s: float, profile: AthleteProfile, rng: np.random.Generator,
    options: MotionOptions | None = None,
) -> ExercisePlan:
    """Plan ``duration_s`` seconds of ``exercise`` (a key of :data:`EXERCISES`) for ``profile``."""
    if duration_s <= 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    try:
        info = EXERCISES[exercise]
    except KeyError:
        raise ValueError(f"unknown exercise {exercise!r} (known: {', '.join(sorted(EXERCISES))})") from None
    return info.planner(float(duration_s), profile, rng, options or MotionOptions())


# ---------------------------------------------------------------- plan -> kinematics


def _channel(plan: ExercisePlan, name: str, t: np.ndarray, *, overlays: bool = True) -> Traj:
    ch = plan.channels.get(name)
    out = ch.evaluate(t) if ch is not None else Traj.const(0.0, t.shape[0])
    if overlays:
        for o in plan.overlays.get(name, []):
            out = out + o.evaluate(t)
    return out


def _root(plan: ExercisePlan, t: np.ndarray) -> PointTraj:
    n = t.shape[0]
    p = np.broadcast_to(plan.base_position_m, (n, 3)).copy()
    v = np.zeros((n, 3))
    a = np.zeros((n, 3))
    for c in plan.root:
        tr = c.evaluate(t)
        p[:, c.axis] += tr.v
        v[:, c.axis] += tr.d1
        a[:, c.axis] += tr.d2
    return PointTraj(p, v, a)


def valgus_coefficient(plan: ExercisePlan, t: np.ndarray) -> np.ndarray:
    """Abduction per squared degree of planned flexion (deg / deg^2), per sample.

    Natural valgus ``valgus_base_deg * (flexion / 100)^2``; on a rep with a programmed valgus peak m the rep's
    flexion maps to ``m * (flexion / peak)^2``. The factor switches at rep starts, where the knee is straight and
    still, so the abduction stays smooth (C2).
    """
    coef = np.full(t.shape[0], plan.params.get("valgus_base_deg", 0.0) / 100.0**2)
    starts = [r.t_start_s for r in plan.all_reps]
    for i, m in plan.valgus_peaks.items():
        r = plan.all_reps[i]
        end = starts[i + 1] if i + 1 < len(starts) else np.inf
        coef[(t >= r.t_start_s) & (t < end)] = m / r.peak_deg**2
    return coef


def _shock_offsets(plan: ExercisePlan, t: np.ndarray, primary: str, other: str) -> dict[str, Traj]:
    """Summed shock displacements (m, along each segment's axis) of the primary and the other sensor."""
    if not plan.shocks:
        return {}
    first = Traj.const(0.0, t.shape[0])
    second = Traj.const(0.0, t.shape[0])
    for sh in plan.shocks:  # a few per second at most, each evaluated only near its time
        x = sh.evaluate(t)
        first = first + x
        second = second + x * sh.other_gain
    return {primary: first, other: second}


def plan_kinematics(plan: ExercisePlan, t_s: np.ndarray, profile: AthleteProfile, side: str) -> Kinematics:
    """Evaluate the plan at times ``t_s`` (s) into segment and sensor motion (see :class:`Kinematics`)."""
    t = np.asarray(t_s, dtype=float)
    s = side_sign(side)
    root = _root(plan, t)
    if plan.joint_kind == "shoulder":
        p = plan.params
        e = _channel(plan, "elevation", t)
        de = e - p["elevation0_deg"]
        plane = de * p["plane_per_deg"] + p["plane0_deg"]
        rot = de * p["rotation_per_deg"] + p["rotation0_deg"] + _channel(plan, "rotation", t)
        lean = de * p["lean_per_deg"]
        rise = (de * p["rise_m_per_deg"])
        root = PointTraj(root.p + np.outer(rise.v, [0, 0, 1.0]), root.v + np.outer(rise.d1, [0, 0, 1.0]),
                         root.a + np.outer(rise.d2, [0, 0, 1.0]))
        trunk = cardan("y", [lean.radians()])
        return shoulder_chain(t, side=side, profile=profile, root=root, trunk_rotation=trunk, elevation_deg=e,
                              plane_deg=plane, rotation_deg=rot,
                              shocks_m=_shock_offsets(plan, t, "upper_arm", "trunk"))
    p = plan.params
    shocks = _shock_offsets(plan, t, "shank", "thigh")
    f_plan = _channel(plan, "flexion", t, overlays=False)
    f = _channel(plan, "flexion", t)
    abd = f_plan * f_plan * valgus_coefficient(plan, t) + _channel(plan, "abduction", t, overlays=True)
    rot = f * p["rotation_per_deg"] + _channel(plan, "rotation", t)
    heading = Traj.const(s * p["heading_deg"], t.shape[0])
    if plan.chain == "ankle":
        incl = f_plan * p["ankle_share"] + _channel(plan, "incl", t)
        frontal = abd * (s * p["shank_valgus_share"])  # the knee moves medially: the shank tilts in
        # "shank_rotation" overlay: internal rotation of the shank in the world (the foot pivots), deg.
        heading = heading - _channel(plan, "shank_rotation", t) * s
        shank = cardan("zyx", [heading.radians(), incl.radians(), frontal.radians()])
        return knee_chain(t, side=side, profile=profile, root=root, root_segment="shank", root_rotation=shank,
                          flexion_deg=f, abduction_deg=abd, rotation_deg=rot, shocks_m=shocks)
    hip = _channel(plan, "hip_flexion", t)
    thigh = cardan("zy", [heading.radians(), (-hip).radians()])
    return knee_chain(t, side=side, profile=profile, root=root, root_segment="thigh", root_rotation=thigh,
                      flexion_deg=f, abduction_deg=abd, rotation_deg=rot, shocks_m=shocks)
