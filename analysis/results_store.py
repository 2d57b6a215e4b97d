"""Local results file (SQLite): the embedded default when no InfluxDB runs (``jointmon demo``)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from analysis.result_sink import JointKey
from jointmon.messages import JointEvent

SCHEMA = """
CREATE TABLE IF NOT EXISTS joint_angle (
    athlete TEXT, joint TEXT, session TEXT, t_ns INTEGER, flexion_deg REAL, abduction_deg REAL,
    rotation_deg REAL, elevation_deg REAL, plane_deg REAL);
CREATE TABLE IF NOT EXISTS joint_event (
    athlete TEXT, joint TEXT, session TEXT, t_ns INTEGER, type TEXT, sensor TEXT,
    stream_t_s REAL, confidence REAL, magnitude REAL, json TEXT);
CREATE INDEX IF NOT EXISTS angle_time ON joint_angle (session, t_ns);
CREATE INDEX IF NOT EXISTS event_time ON joint_event (session, t_ns);
"""


# The angle columns of joint_angle (NULL where a joint has no such angle or it is not known yet).
ANGLE_COLUMNS = ("flexion_deg", "abduction_deg", "rotation_deg", "elevation_deg", "plane_deg")


class SqliteResults:
    """Writes angles and events to one SQLite file; readable with any SQLite tool."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def angles(self, key: JointKey, t_ns: np.ndarray, angles: Mapping[str, np.ndarray]) -> None:
        n = len(t_ns)
        cols = [np.asarray(angles[c], float) if c in angles else np.full(n, np.nan) for c in ANGLE_COLUMNS]
        values = np.column_stack(cols).astype(object)
        values[~np.isfinite(np.column_stack(cols))] = None  # NaN -> NULL
        rows = [(key.athlete, key.joint, key.session, int(t), *v) for t, v in zip(t_ns, values.tolist(), strict=True)]
        with self._lock:
            self._db.executemany(f"INSERT INTO joint_angle VALUES (?, ?, ?, ?{', ?' * len(ANGLE_COLUMNS)})", rows)

    def event(self, e: JointEvent) -> None:
        with self._lock:
            self._db.execute("INSERT INTO joint_event VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (e.athlete, e.joint, e.session, e.t_ns, e.type, e.sensor, e.stream_t_s, e.confidence,
                              e.magnitude, e.to_json().decode()))

    def events(self, session: str, type_: str | None = None) -> list[JointEvent]:
        q = "SELECT json FROM joint_event WHERE session = ?" + (" AND type = ?" if type_ else "") + " ORDER BY t_ns"
        with self._lock:
            rows = self._db.execute(q, (session, type_) if type_ else (session,)).fetchall()
        return [JointEvent.from_json(r[0]) for r in rows]

    def angle_series(self, session: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(t_ns, {column: degrees}) of a session; NULL reads as NaN."""
        with self._lock:
            rows = self._db.execute(f"SELECT t_ns, {', '.join(ANGLE_COLUMNS)} FROM joint_angle WHERE session = ? "
                                    "ORDER BY t_ns", (session,)).fetchall()
        arr = np.array(rows, dtype=float).reshape(-1, 1 + len(ANGLE_COLUMNS))
        return arr[:, 0].astype(np.int64), {c: arr[:, i + 1] for i, c in enumerate(ANGLE_COLUMNS)}

    def close(self) -> None:
        with self._lock:
            self._db.commit()
            self._db.close()
