"""The InfluxDB writer's on-disk spool: a bounded, ordered queue of line-protocol batches that survives a restart.

While InfluxDB is unreachable, :class:`~analysis.influx_writer.InfluxWriter` appends each batch here
instead of holding it in memory; when the server answers again it replays the spool oldest first,
deleting a batch only once the server has accepted it. A process that stops (or crashes) during an
outage finds the spool at its next start and replays it then.

Storage: one SQLite file (WAL) per destination, rows ``(id, points, payload)`` with the payload the
batch's lines, zlib-compressed (a joint_angle line of ~180 B takes ~40 B: the bound holds 4-5x more).
Same technique as the gateway's store-and-forward queue (:mod:`sensor_gateway.disk_queue`), not that
class itself: this one needs a point count per row that is summed without reading payloads (the
counters at start), drop accounting in points, and its own rate-limited warning.

Bound: ``max_bytes`` of compressed payload. When a new batch does not fit, the OLDEST batches are
dropped, counted (``points_dropped``, ``batches_dropped``) and logged: during a long outage the most
recent data is the most useful. A batch larger than the bound by itself is dropped whole.

One process at a time: the spool holds an exclusive lock (``flock``) on ``<file>.lock``; a second
writer to the same destination and directory gets a :class:`ConfigError` instead of sharing rows.
Durability: ``synchronous=NORMAL`` survives a crash of the process (the case this is for); a power
cut may lose the last commits.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import sqlite3
import threading
import zlib
from collections import Counter
from pathlib import Path

from jointmon.errors import ConfigError
from jointmon.ratelimit import RateLimitedLog

log = logging.getLogger("jointmon.influx.spool")

# 256 MiB compressed: ~6.5 M points (~40 B each), ~36 h of one knee's 50 Hz angles.
DEFAULT_SPOOL_MAX_BYTES = 256 * 1024 * 1024
ZLIB_LEVEL = 1  # fastest: line protocol compresses well even so


def spool_name(url: str, api: str, database: str) -> str:
    """A file name for the spool of one destination: readable, and unique per (url, api, database)."""
    digest = hashlib.sha256(f"{api}\n{url}\n{database}".encode()).hexdigest()[:10]
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{url.split('://', 1)[-1]}_{database}").strip("_")[:60]
    return f"influx-{api}-{readable}-{digest}.spool"


class InfluxSpool:
    """Bounded FIFO of line-protocol batches in ``path`` (SQLite). Thread-safe; one process per file.

    ``counters``: ``points_dropped`` / ``batches_dropped`` (full), ``points_resumed`` /
    ``batches_resumed`` (found at open). ``points`` / ``size_bytes``: what it holds now.
    """

    def __init__(self, path: str | Path, max_bytes: int = DEFAULT_SPOOL_MAX_BYTES) -> None:
        if max_bytes <= 0:
            raise ConfigError(f"influx spool max_bytes = {max_bytes}: must be > 0")
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.counters: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._warn = RateLimitedLog(log)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot create the InfluxDB spool: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise ConfigError(f"{self.path}: the InfluxDB spool is in use by another process (one writer per "
                              "destination and spool directory)") from None
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # AUTOINCREMENT: ids never reused, so the order survives the spool running empty and a restart.
            self._db.execute("CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                             "points INTEGER NOT NULL, payload BLOB NOT NULL)")
            n, points, size = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(points), 0), COALESCE(SUM(LENGTH(payload)), 0) FROM spool").fetchone()
        except sqlite3.Error as exc:
            self._release()
            raise ConfigError(f"{self.path}: cannot open the InfluxDB spool: {exc}") from None
        self._batches, self._points, self._bytes = int(n), int(points), int(size)
        if n:
            self.counters["batches_resumed"] += self._batches
            self.counters["points_resumed"] += self._points
            log.info("%s: %d points (%d batches, %.1f MB) from an earlier run, replayed when InfluxDB answers",
                     self.path, self._points, self._batches, self._bytes / 1e6)

    @property
    def points(self) -> int:
        """Points held."""
        return self._points

    @property
    def batches(self) -> int:
        return self._batches

    @property
    def size_bytes(self) -> int:
        """Compressed payload bytes held (the bound applies to this)."""
        return self._bytes

    def __len__(self) -> int:
        return self._batches

    def put(self, lines: list[str]) -> int:
        """Append one batch (at the end: newest). Returns the points dropped to make room (oldest first;
        the batch itself when it alone is over the bound)."""
        if not lines:
            return 0
        payload = zlib.compress("\n".join(lines).encode("utf-8"), ZLIB_LEVEL)
        with self._lock:
            if len(payload) > self.max_bytes:
                self._count_drop(1, len(lines), "a batch larger than the whole spool")
                return len(lines)
            dropped = self._make_room(len(payload))
            self._db.execute("INSERT INTO spool (points, payload) VALUES (?, ?)", (len(lines), payload))
            self._batches += 1
            self._points += len(lines)
            self._bytes += len(payload)
            return dropped

    def _make_room(self, incoming: int) -> int:
        excess = self._bytes + incoming - self.max_bytes
        if excess <= 0:
            return 0
        freed, batches, points, last = 0, 0, 0, 0
        for row_id, size, n in self._db.execute("SELECT id, LENGTH(payload), points FROM spool ORDER BY id"):
            if freed >= excess:
                break
            freed, batches, points, last = freed + size, batches + 1, points + n, row_id
        if batches:
            self._db.execute("DELETE FROM spool WHERE id <= ?", (last,))
            self._batches -= batches
            self._points -= points
            self._bytes -= freed
            self._count_drop(batches, points, "the oldest batches")
        return points

    def _count_drop(self, batches: int, points: int, what: str) -> None:
        self.counters["batches_dropped"] += batches
        self.counters["points_dropped"] += points
        self._warn.warning("full", "InfluxDB spool %s full (%d bytes max): dropped %s, %d points (%d points "
                           "dropped so far)", self.path, self.max_bytes, what, points, self.counters["points_dropped"])

    def peek(self, max_points: int) -> tuple[list[int], list[str]]:
        """The oldest batches, whole, up to ``max_points`` points (at least one batch): (row ids, lines)."""
        ids: list[int] = []
        lines: list[str] = []
        with self._lock:
            cur = self._db.execute("SELECT id, points, payload FROM spool ORDER BY id")
            for row_id, n, payload in cur:
                if ids and len(lines) + n > max_points:
                    break
                ids.append(int(row_id))
                lines.extend(zlib.decompress(payload).decode("utf-8").split("\n"))
            cur.close()
        return ids, lines

    def remove(self, row_ids: list[int]) -> int:
        """Delete replayed (or given-up) batches; returns their points."""
        if not row_ids:
            return 0
        removed = 0
        with self._lock:
            self._db.execute("BEGIN")
            for row_id in row_ids:
                row = self._db.execute("DELETE FROM spool WHERE id = ? RETURNING points, LENGTH(payload)",
                                       (row_id,)).fetchone()
                if row is not None:  # already dropped for room: nothing to account
                    removed += int(row[0])
                    self._batches -= 1
                    self._points -= int(row[0])
                    self._bytes -= int(row[1])
            self._db.execute("COMMIT")
        return removed

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._release()

    def _release(self) -> None:
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        finally:
            os.close(self._lock_fd)
