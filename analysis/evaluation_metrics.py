"""Scores of the analysis against ground truth: per event type, sound classification, angles.

Pure functions over plain data, so the harness (``jointmon eval``) and the tests share them.
Times are session seconds (sample 0 of the session = 0 s).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.event_matching import match_events

SOUND_TYPES = ("click", "snap", "crepitus")
KINEMATIC_TYPES = ("valgus", "instability", "locking")
EVENT_TYPES = SOUND_TYPES + KINEMATIC_TYPES
# Matching tolerances (s). Sounds: 20 ms (the sound-detection target's tolerance). Kinematic
# events are episodes lasting 0.2-2 s: a detection anywhere inside the labelled interval, or
# this close to it, counts.
DEFAULT_TOLERANCE_S = {"click": 0.02, "snap": 0.02, "crepitus": 0.02, "valgus": 0.5, "instability": 0.3,
                       "locking": 1.0}
ANGLES = ("flexion_deg", "abduction_deg", "elevation_deg")
# Which scored angles belong to which joint kind (a shoulder recording's truth also carries a
# "flexion_deg" key, its main angle: it must not be scored as knee flexion).
JOINT_ANGLES = {"knee": ("flexion_deg", "abduction_deg"), "shoulder": ("elevation_deg",)}


def joint_kind(joint: str) -> str:
    """"knee" or "shoulder" from a joint name like "left_knee"; "" for anything else."""
    return next((k for k in JOINT_ANGLES if joint.endswith(k)), "")


@dataclass
class TypeScore:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    errors_s: list[float] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def f1(self) -> float:
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d else float("nan")

    def add(self, other: TypeScore) -> None:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.errors_s += other.errors_s

    def as_dict(self) -> dict[str, Any]:
        err_ms = np.abs(np.array(self.errors_s)) * 1e3
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": _num(self.precision),
                "recall": _num(self.recall), "f1": _num(self.f1),
                "timing_error_ms_mean": _num(err_ms.mean()) if err_ms.size else None,
                "timing_error_ms_p95": _num(np.percentile(err_ms, 95)) if err_ms.size else None}


@dataclass
class Score:
    """Scores of one session, or summed over many (``add``)."""

    sessions: int = 0
    duration_s: float = 0.0
    by_type: dict[str, TypeScore] = field(default_factory=lambda: {t: TypeScore() for t in EVENT_TYPES})
    sound_detection: TypeScore = field(default_factory=TypeScore)  # click/snap/crepitus as one class
    confusion: Counter[tuple[str, str]] = field(default_factory=Counter)  # (truth, detected); "none"/"missed"
    angle_sq_sum: dict[str, float] = field(default_factory=lambda: dict.fromkeys(ANGLES, 0.0))
    angle_n: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ANGLES, 0))

    def add(self, other: Score) -> None:
        self.sessions += other.sessions
        self.duration_s += other.duration_s
        for t in EVENT_TYPES:
            self.by_type[t].add(other.by_type[t])
        self.sound_detection.add(other.sound_detection)
        self.confusion.update(other.confusion)
        for a in ANGLES:
            self.angle_sq_sum[a] += other.angle_sq_sum[a]
            self.angle_n[a] += other.angle_n[a]

    @property
    def classification_accuracy(self) -> float:
        matched = sum(n for (t, d), n in self.confusion.items() if t in SOUND_TYPES and d in SOUND_TYPES)
        right = sum(n for (t, d), n in self.confusion.items() if t == d and t in SOUND_TYPES)
        return right / matched if matched else float("nan")

    def angle_rmse(self, name: str) -> float:
        n = self.angle_n[name]
        return float(np.sqrt(self.angle_sq_sum[name] / n)) if n else float("nan")

    def false_alarms_per_10min(self, event_type: str) -> float:
        return self.by_type[event_type].fp / (self.duration_s / 600.0) if self.duration_s else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions, "duration_s": round(self.duration_s, 3),
            "events": {t: {**s.as_dict(), "false_alarms_per_10min": _num(self.false_alarms_per_10min(t))}
                       for t, s in self.by_type.items()},
            "sound_detection": self.sound_detection.as_dict(),
            "sound_classification_accuracy": _num(self.classification_accuracy),
            "sound_confusion": {f"{t}->{d}": n for (t, d), n in sorted(self.confusion.items())},
            "angle_rmse_deg": {a: _num(self.angle_rmse(a)) for a in ANGLES},
            "angle_samples": dict(self.angle_n),
        }


def _num(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 4)


def score_session(labels: list[dict[str, Any]], events: list[dict[str, Any]], duration_s: float,
                  truth_t_s: np.ndarray | None = None, truth_angles: dict[str, np.ndarray] | None = None,
                  est_t_s: np.ndarray | None = None, est_angles: dict[str, np.ndarray] | None = None,
                  tolerance_s: dict[str, float] | None = None) -> Score:
    """Score one session. ``labels``: dicts with type, t_start_s, t_end_s; ``events``: dicts with
    type and t_s. Angles (degrees) are compared where both truth and estimate exist, the truth
    interpolated at the estimate's times."""
    tol = {**DEFAULT_TOLERANCE_S, **(tolerance_s or {})}
    score = Score(sessions=1, duration_s=duration_s)
    for t in EVENT_TYPES:
        lab = [lb for lb in labels if lb["type"] == t]
        det = [e for e in events if e["type"] == t]
        m = match_events(np.array([e["t_s"] for e in det]), np.array([lb["t_start_s"] for lb in lab]), tol[t],
                         np.array([lb["t_end_s"] for lb in lab]))
        score.by_type[t] = TypeScore(len(m.pairs), len(m.false_positives), len(m.missed), m.errors_s.tolist())

    lab = [lb for lb in labels if lb["type"] in SOUND_TYPES]
    det = [e for e in events if e["type"] in SOUND_TYPES]
    m = match_events(np.array([e["t_s"] for e in det]), np.array([lb["t_start_s"] for lb in lab]),
                     max(tol[t] for t in SOUND_TYPES), np.array([lb["t_end_s"] for lb in lab]))
    score.sound_detection = TypeScore(len(m.pairs), len(m.false_positives), len(m.missed), m.errors_s.tolist())
    for i, j in m.pairs:
        score.confusion[(lab[j]["type"], det[i]["type"])] += 1
    for j in m.missed:
        score.confusion[(lab[j]["type"], "missed")] += 1
    for i in m.false_positives:
        score.confusion[("none", det[i]["type"])] += 1

    if truth_t_s is not None and truth_angles and est_t_s is not None and est_angles:
        inside = (est_t_s >= truth_t_s[0]) & (est_t_s <= truth_t_s[-1])
        for a in ANGLES:
            if a in truth_angles and a in est_angles:
                err = est_angles[a][inside] - np.interp(est_t_s[inside], truth_t_s, truth_angles[a])
                err = err[np.isfinite(err)]
                score.angle_sq_sum[a] = float(np.sum(err**2))
                score.angle_n[a] = int(err.size)
    return score


def format_table(score: Score, tolerance_s: dict[str, float] | None = None) -> str:
    """The harness's printed table: one row per event type, then sound classification and angles."""
    tol = {**DEFAULT_TOLERANCE_S, **(tolerance_s or {})}

    def f(x: float) -> str:
        return "   -" if x is None or not np.isfinite(x) else f"{x:5.3f}"

    rows = [f"{score.sessions} sessions, {score.duration_s / 60:.1f} min",
            "",
            f"{'event':<12}{'tol ms':>7}{'TP':>6}{'FP':>6}{'FN':>6}{'precision':>11}{'recall':>8}{'F1':>7}"
            f"{'|err| ms mean':>15}{'p95':>7}{'FA/10min':>10}"]
    for name, s, t in [*((t, score.by_type[t], tol[t]) for t in EVENT_TYPES),
                       ("sound (any)", score.sound_detection, max(tol[t] for t in SOUND_TYPES))]:
        d = s.as_dict()
        mean = "-" if d["timing_error_ms_mean"] is None else f"{d['timing_error_ms_mean']:.1f}"
        p95 = "-" if d["timing_error_ms_p95"] is None else f"{d['timing_error_ms_p95']:.1f}"
        fa = score.false_alarms_per_10min(name) if name in score.by_type else float("nan")
        rows.append(f"{name:<12}{t * 1e3:>7.0f}{s.tp:>6}{s.fp:>6}{s.fn:>6}{f(s.precision):>11}{f(s.recall):>8}"
                    f"{f(s.f1):>7}{mean:>15}{p95:>7}{f(fa):>10}")
    rows += ["", f"sound classification accuracy (matched sounds): {f(score.classification_accuracy)}",
             "confusion (rows truth, columns detected):"]
    cols = [*SOUND_TYPES, "missed"]
    rows.append(f"{'':<12}" + "".join(f"{c:>10}" for c in cols))
    for t in [*SOUND_TYPES, "none"]:
        rows.append(f"{t:<12}" + "".join(f"{score.confusion.get((t, c), 0):>10}" for c in cols))
    rows.append("")
    for a in ANGLES:
        rmse = score.angle_rmse(a)
        rows.append(f"{a.replace('_deg', '')} RMSE: " + ("n/a (not estimated)" if not np.isfinite(rmse)
                                                         else f"{rmse:.2f} deg over {score.angle_n[a]} samples"))
    return "\n".join(rows)
