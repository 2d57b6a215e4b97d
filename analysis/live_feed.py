"""What the live web view shows, kept in memory: decimated angles, recent events, grades, statuses, check-ins.

The analysis worker thread writes (``add_angles``, ``add_event``: cheap appends under a lock, never
blocked by a browser); ``flush()`` (the web view's pump thread, ~10 times a second) turns the pending
angle samples into one message per joint. Every message gets a sequence number in a bounded log that
the server-push clients read from their own cursor; a client that fell behind the log gets a fresh
snapshot instead (no per-client queues to overflow, nothing blocks the analysis).

Times in messages are Unix seconds (what the chart library plots); angles are degrees rounded to
0.01 deg, with None where the analysis does not know them (NaN, e.g. abduction before calibration).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

import numpy as np

from analysis.checkin import CheckIn
from analysis.result_sink import JointKey
from jointmon.messages import JointEvent, JointGrade, Status

# The series the page draws per joint kind (the others, e.g. rotation, stay out of the browser).
SHOWN_ANGLES = {"knee": ("flexion_deg", "abduction_deg"), "shoulder": ("elevation_deg",)}
SOUND_TYPES = ("click", "snap", "crepitus")
ALERT_TYPES = ("valgus", "instability", "locking")


def joint_kind(joint: str) -> str:
    """``left_knee`` -> ``knee`` (the part after the last underscore)."""
    return joint.rsplit("_", 1)[-1]


class AngleDecimator:
    """Keeps the first sample of each ``1/rate_hz`` time bucket, carrying the last bucket across chunks,
    so any chunking of a stream keeps the same samples (chunk in, state carried, chunk out)."""

    def __init__(self, rate_hz: float) -> None:
        if not rate_hz > 0:
            raise ValueError(f"rate_hz = {rate_hz}: must be positive")
        self.period_ns = round(1e9 / rate_hz)
        self._last_bucket: int | None = None

    def keep(self, t_ns: np.ndarray) -> np.ndarray:
        """Boolean mask over ``t_ns`` (Unix ns, int64, non-decreasing) of the samples to keep."""
        if t_ns.size == 0:
            return np.zeros(0, dtype=bool)
        bucket = np.asarray(t_ns, dtype=np.int64) // self.period_ns
        prev = np.empty_like(bucket)
        prev[0] = bucket[0] - 1 if self._last_bucket is None else self._last_bucket
        prev[1:] = bucket[:-1]
        self._last_bucket = int(bucket[-1])
        return bucket > prev


def _degrees(values: np.ndarray) -> list[float | None]:
    """Degrees rounded to 0.01 as JSON-ready floats, None for NaN/inf."""
    rounded = np.round(np.asarray(values, dtype=np.float64), 2)
    return [None if not np.isfinite(v) else float(v) for v in rounded]


class _JointSeries:
    """Bounded recent history of one joint's decimated angles (for a newly opened page)."""

    def __init__(self, key: JointKey, rate_hz: float, history_s: float) -> None:
        self.key = key
        self.names = SHOWN_ANGLES.get(joint_kind(key.joint), ())
        self.decimator = AngleDecimator(rate_hz)
        maxlen = max(1, round(history_s * rate_hz))
        self.t: deque[float] = deque(maxlen=maxlen)
        self.values: dict[str, deque[float | None]] = {n: deque(maxlen=maxlen) for n in self.names}
        self.pending_t: list[float] = []
        self.pending: dict[str, list[float | None]] = {n: [] for n in self.names}
        self.counts: Counter[str] = Counter()  # events per type

    def add(self, t_ns: np.ndarray, angles: Mapping[str, np.ndarray]) -> None:
        keep = self.decimator.keep(t_ns)
        if not keep.any():
            return
        self.pending_t.extend((np.asarray(t_ns)[keep] / 1e9).round(3).tolist())
        n = int(keep.sum())
        for name in self.names:
            series = angles.get(name)
            self.pending[name].extend(_degrees(np.asarray(series)[keep]) if series is not None else [None] * n)

    def take_pending(self) -> dict[str, Any] | None:
        if not self.pending_t:
            return None
        msg = {"athlete": self.key.athlete, "joint": self.key.joint, "t": self.pending_t,
               "series": self.pending}
        self.t.extend(self.pending_t)
        for name, vals in self.pending.items():
            self.values[name].extend(vals)
        self.pending_t, self.pending = [], {n: [] for n in self.names}
        return msg

    def snapshot(self) -> dict[str, Any]:
        return {"athlete": self.key.athlete, "joint": self.key.joint, "kind": joint_kind(self.key.joint),
                "names": list(self.names), "t": list(self.t),
                "series": {n: list(v) for n, v in self.values.items()}, "counts": dict(self.counts)}


def _finite(value: Any) -> Any:
    """``value`` with NaN/inf floats (anywhere in dicts/lists) as None: JSON.parse rejects NaN."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def to_json(data: Any) -> str:
    """Strict JSON (no NaN tokens, which browsers reject); odd objects (numpy scalars) as their str."""
    try:
        return json.dumps(data, separators=(",", ":"), allow_nan=False, default=_plain)
    except ValueError:  # a NaN somewhere, e.g. in an event's details
        return json.dumps(_finite(data), separators=(",", ":"), allow_nan=False, default=_plain)


def _plain(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return _finite(obj.item())
    return str(obj)


def event_message(event: JointEvent) -> dict[str, Any]:
    """An event as the page gets it: the event's fields plus ``t`` (Unix s of its onset)."""
    return {**asdict(event), "t": round(event.t_ns / 1e9, 3)}


class LiveFeed:
    """Thread-safe store + message log of the live view (see the module doc).

    ``rate_hz``: angle samples per second per joint sent to the browser; ``history_s``: seconds of
    angles kept for a newly opened page; ``max_events``: recent events kept; ``log_size``: messages a
    slow client may lag behind before it is sent a fresh snapshot instead.
    """

    def __init__(self, session: str, *, rate_hz: float = 20.0, history_s: float = 120.0, max_events: int = 500,
                 log_size: int = 2000) -> None:
        self.session = session
        self.rate_hz = rate_hz
        self.history_s = history_s
        self.started_ns = time.time_ns()
        self.cond = threading.Condition()
        self._joints: dict[tuple[str, str], _JointSeries] = {}
        self._events: deque[dict[str, Any]] = deque(maxlen=max_events)
        self._grades: dict[tuple[str, str], dict[str, Any]] = {}
        self._status: dict[tuple[str, str], dict[str, Any]] = {}
        self._checkins: dict[tuple[str, str], dict[str, CheckIn]] = {}
        self._log: deque[tuple[int, str, str]] = deque(maxlen=log_size)  # (seq, event name, JSON data)
        self.seq = 0
        self.ended = False
        self.counters: Counter[str] = Counter()

    # --- writers ---------------------------------------------------------------------------------
    def add_angles(self, key: JointKey, t_ns: np.ndarray, angles: Mapping[str, np.ndarray]) -> None:
        with self.cond:
            series = self._joints.get((key.athlete, key.joint))
            if series is None:
                series = self._joints[(key.athlete, key.joint)] = _JointSeries(key, self.rate_hz, self.history_s)
                self._append("joint", {"athlete": key.athlete, "joint": key.joint, "kind": joint_kind(key.joint),
                                       "names": list(series.names)})
            series.add(t_ns, angles)

    def add_event(self, event: JointEvent) -> None:
        msg = event_message(event)
        with self.cond:
            self._events.append(msg)
            series = self._joints.get((event.athlete, event.joint))
            if series is not None:
                series.counts[event.type] += 1
            self._append("event", msg)

    def set_grade(self, grade: JointGrade) -> None:
        if grade.session != self.session:  # retained grades of earlier sessions stay off this page
            self.counters["grades_other_session"] += 1
            return
        msg = asdict(grade)
        with self.cond:
            self._grades[(grade.athlete, grade.joint)] = msg
            self._append("grade", msg)

    def set_status(self, status: Status) -> None:
        msg = asdict(status)
        with self.cond:
            self._status[(status.component, status.component_id)] = msg
            self._append("status", msg)

    def add_checkin(self, checkin: CheckIn) -> dict[str, CheckIn]:
        """Keeps the check-in (replacing an earlier one of the same phase); returns the joint's check-ins."""
        with self.cond:
            phases = self._checkins.setdefault((checkin.athlete, checkin.joint), {})
            phases[checkin.phase] = checkin
            self._append("checkin", checkin.as_dict())
            return dict(phases)

    def end(self) -> None:
        """The session is over: the last angles go out, then an ``end`` message."""
        self.flush()
        with self.cond:
            if not self.ended:
                self._append("end", {"session": self.session, "t": time.time()})
                self.ended = True

    def flush(self) -> None:
        """Pending angle samples -> one ``angles`` message per joint (called ~10 times a second)."""
        with self.cond:
            for series in self._joints.values():
                msg = series.take_pending()
                if msg is not None:
                    self._append("angles", msg)

    def _append(self, name: str, data: dict[str, Any]) -> None:
        """Caller holds the lock. After ``end`` the stream is closed: later updates (e.g. components going
        offline) still change the state a page gets on opening, but are not pushed (the page stopped listening)."""
        if self.ended:
            self.counters["messages_after_end"] += 1
            return
        self.seq += 1
        self._log.append((self.seq, name, to_json(data)))
        self.cond.notify_all()

    # --- readers ---------------------------------------------------------------------------------
    def snapshot(self) -> tuple[int, dict[str, Any]]:
        """(sequence number it is current to, everything the page needs to start)."""
        with self.cond:
            return self.seq, self._snapshot_locked()

    def _snapshot_locked(self) -> dict[str, Any]:
        return {
            "session": self.session, "started": round(self.started_ns / 1e9, 3), "ended": self.ended,
            "rate_hz": self.rate_hz, "history_s": self.history_s,
            "joints": [s.snapshot() for s in self._joints.values()],
            "events": list(self._events), "grades": list(self._grades.values()),
            "status": list(self._status.values()),
            "checkins": [c.as_dict() for phases in self._checkins.values() for c in phases.values()],
        }

    def since(self, cursor: int, timeout_s: float) -> tuple[int, list[tuple[str, str]] | None]:
        """Messages after ``cursor`` as (event name, JSON) pairs, waiting up to ``timeout_s`` for one;
        None instead of a list when the client lagged past the log (it needs a new snapshot)."""
        with self.cond:
            if self.seq == cursor:
                self.cond.wait(timeout_s)
            if self.seq == cursor:
                return cursor, []
            if not self._log or self._log[0][0] > cursor + 1:
                self.counters["client_resyncs"] += 1
                return self.seq, None
            return self.seq, [(name, data) for seq, name, data in self._log if seq > cursor]

    def wake(self) -> None:
        """Wake every waiting client (shutdown)."""
        with self.cond:
            self.cond.notify_all()

    def final_grades_in(self) -> bool:
        """True once every joint with angles or check-ins has its final grade of this session."""
        with self.cond:
            graded = {k for k, g in self._grades.items() if g.get("final")}
            return set(self._joints) | set(self._checkins) <= graded

    def athletes_joints(self) -> Iterable[tuple[str, str]]:
        with self.cond:
            return list(self._joints)
