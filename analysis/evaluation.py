"""The evaluation harness behind ``jointmon eval DATASET``: analyse labelled sessions offline and score them.

A dataset is a ``.jmrec`` recording, a session folder (with ``labels.csv``), or a folder holding any
number of either. Each session goes through :func:`analysis.offline.analyze_path` (the live analysis
code), and its events and knee angles are scored against the labels and, where the recording carries
it, the true joint angles (:mod:`analysis.evaluation_metrics`). Sessions are independent, so they are
analysed in parallel worker processes.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analysis.evaluation_metrics import (
    DEFAULT_TOLERANCE_S,
    EVENT_TYPES,
    JOINT_ANGLES,
    Score,
    format_table,
    joint_kind,
    score_session,
)
from analysis.offline import RECORDING_SUFFIX, OfflineResult, analyze_path
from analysis.session_folder import SESSION_FILE
from jointmon.errors import JointmonError

JSON_FORMAT = "jointmon-eval"
JSON_VERSION = 1


@dataclass
class SessionEvaluation:
    """One session's score and what it was: ``meta`` holds the recording's notes (exercise, seed, ...)."""

    name: str
    path: str
    score: Score
    labels: Counter[str]
    detected: Counter[str]
    meta: dict[str, Any] = field(default_factory=dict)
    problems: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "meta": self.meta, "labels": dict(self.labels),
                "detected": dict(self.detected), "problems": self.problems, "score": self.score.as_dict()}


@dataclass
class DatasetEvaluation:
    dataset: str
    tolerance_s: dict[str, float]
    sessions: list[SessionEvaluation]

    @property
    def total(self) -> Score:
        total = Score()
        for s in self.sessions:
            total.add(s.score)
        return total

    def table(self) -> str:
        return format_table(self.total, self.tolerance_s)

    def as_dict(self) -> dict[str, Any]:
        return {"format": JSON_FORMAT, "version": JSON_VERSION, "dataset": self.dataset,
                "tolerance_s": self.tolerance_s, "total": self.total.as_dict(),
                "sessions": [s.as_dict() for s in self.sessions]}


def dataset_sessions(path: str | Path) -> list[Path]:
    """The sessions of a dataset, sorted by name: the path itself if it is one session, else every
    ``.jmrec`` file and session folder directly inside it."""
    p = Path(path)
    if not p.exists():
        raise JointmonError(f"{p}: no such file or folder")
    if p.is_file() and p.suffix == RECORDING_SUFFIX or p.is_dir() and (p / SESSION_FILE).is_file():
        return [p]
    if not p.is_dir():
        raise JointmonError(f"{p}: not a dataset (a {RECORDING_SUFFIX} recording, a session folder, or a folder "
                            f"of them)")
    found = sorted(c for c in p.iterdir()
                   if c.is_file() and c.suffix == RECORDING_SUFFIX or c.is_dir() and (c / SESSION_FILE).is_file())
    if not found:
        raise JointmonError(f"{p}: no {RECORDING_SUFFIX} recordings or session folders (with {SESSION_FILE}) in it")
    return found


def _plain(label: Any) -> dict[str, Any]:
    return asdict(label) if is_dataclass(label) else dict(label)


def labels_and_truth(result: OfflineResult) -> tuple[list[dict[str, Any]], dict[str, np.ndarray],
                                                                    dict[str, Any]]:
    rec = result.extra.get("recording")
    if rec is None:  # session folder: labels.csv, no angle truth
        return [_plain(lb) for lb in result.extra.get("labels", [])], {}, {}
    meta = {k: v for k, v in rec.meta.items() if isinstance(v, str | int | float) and k != "t0_wall_ns"}
    return [dict(lb) for lb in rec.labels], rec.truth, meta


def score_joint(result: OfflineResult, joint: str, labels: list[dict[str, Any]], truth: dict[str, np.ndarray],
                meta: dict[str, Any], events: list[dict[str, Any]],
                tolerance_s: dict[str, float] | None = None) -> Score:
    """One joint's score: its labels against its events (``result.event_record`` dicts), its angles against
    the truth; counted as part of one session (``sessions`` and ``duration_s`` 0, added by the caller)."""
    est_t = est = None
    series = [v for (_, j), v in result.angles.items() if j == joint]
    if series:
        t_ns, named = series[0]
        est_t, est = (t_ns - result.origin_ns) / 1e9, named
    # The simulator's truth angles belong to the session's one joint; only that joint kind's angles count.
    scored = JOINT_ANGLES.get(joint_kind(joint), ())
    joint_truth = {a: truth[a] for a in scored if a in truth} if meta.get("joint") == joint else {}
    part = score_session([lb for lb in labels if lb["joint"] == joint],
                         [e for e in events if e["joint"] == joint], result.duration_s,
                         truth.get("t_s") if joint_truth else None, joint_truth, est_t, est, tolerance_s)
    part.sessions, part.duration_s = 0, 0.0  # one session, whatever its number of joints
    return part


def evaluate_session(path: str | Path, tolerance_s: dict[str, float] | None = None) -> SessionEvaluation:
    """Analyse one session and score it, joint by joint (a label only matches events of its own joint)."""
    p = Path(path)
    result = analyze_path(p)
    labels, truth, meta = labels_and_truth(result)
    events = [result.event_record(e) for e in result.events]
    joints = sorted({lb["joint"] for lb in labels} | {e["joint"] for e in events}
                    | {joint for _, joint in result.angles})
    score = Score(sessions=1, duration_s=result.duration_s)
    for joint in joints:
        score.add(score_joint(result, joint, labels, truth, meta, events, tolerance_s))
    problems = {k: v for k, v in result.counters.items() if (k.startswith("dropped") or k == "frames_missing") and v}
    return SessionEvaluation(p.stem if p.is_file() else p.name, str(p), score,
                             Counter(lb["type"] for lb in labels), result.counts_by_type(), meta, problems)


def _evaluate_quietly(path: Path, tolerance_s: dict[str, float] | None) -> SessionEvaluation:
    """Worker entry point: per-packet warnings of 48 sessions would bury the table; counters keep them."""
    import logging

    logging.getLogger().setLevel(logging.ERROR)
    return evaluate_session(path, tolerance_s)


def evaluate_dataset(path: str | Path, *, tolerance_s: dict[str, float] | None = None, jobs: int = 1,
                     on_session: Callable[[SessionEvaluation], None] | None = None) -> DatasetEvaluation:
    """Score every session of a dataset; ``jobs`` worker processes (1: in this process)."""
    paths = dataset_sessions(path)
    tol = {**DEFAULT_TOLERANCE_S, **(tolerance_s or {})}
    results: list[SessionEvaluation] = []
    if jobs <= 1 or len(paths) == 1:
        for p in paths:
            results.append(evaluate_session(p, tol))
            if on_session:
                on_session(results[-1])
    else:
        with ProcessPoolExecutor(max_workers=min(jobs, len(paths))) as pool:
            for r in pool.map(_evaluate_quietly, paths, [tol] * len(paths)):
                results.append(r)
                if on_session:
                    on_session(r)
    return DatasetEvaluation(str(path), tol, results)


def parse_tolerances(items: Iterable[str]) -> dict[str, float]:
    """``["click=10", "valgus=800"]`` (milliseconds) -> ``{"click": 0.01, "valgus": 0.8}`` (seconds)."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in EVENT_TYPES:
            raise JointmonError(f"--tolerance {item!r}: expected TYPE=MS with TYPE one of {', '.join(EVENT_TYPES)}")
        try:
            ms = float(value)
        except ValueError:
            raise JointmonError(f"--tolerance {item!r}: {value!r} is not a number of milliseconds") from None
        if not ms > 0:
            raise JointmonError(f"--tolerance {item!r}: must be positive")
        out[name] = ms / 1e3
    return out


def default_jobs() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def write_json(evaluation: DatasetEvaluation, out: str | Path) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(evaluation.as_dict(), indent=1) + "\n", encoding="utf-8")
