"""Store-and-forward: a bounded, ordered, on-disk queue of MQTT messages (SQLite, WAL).

Every frame is written here before it is handed to the MQTT client and deleted only when the
broker has acknowledged it (QoS 1 PUBACK). So a broker outage fills the queue instead of memory,
and a gateway that crashes or restarts sends what it still holds, in order, when it starts again.

Why SQLite from the standard library and not a queue package: ``persist-queue`` (SQLiteAckQueue)
has acknowledgements but no byte bound with drop-oldest, and ``diskcache.Deque`` has ``maxlen`` but
no way to read a window of items without popping them (its indexing is O(n) per item). Both would
need a wrapper bigger than the few SQL statements below, and neither counts what it drops.

When the queue is over ``max_bytes`` the OLDEST rows not yet handed to the MQTT client are dropped,
and counted (frames and samples): rows already in flight stay, because the client will deliver
them anyway and counting them as dropped would be a lie.

Durability: WAL with ``synchronous=NORMAL`` survives a crash of the gateway process (the case this
is for); a power cut may lose the last commits, which is the price of not fsyncing 600 frames/s.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from jointmon.errors import ConfigError

log = logging.getLogger("jointmon.gateway.queue")

# 256 MiB: ~40 min of 8 knee sensors (16 kHz PCM mic + 200 Hz IMU, ~110 kB/s in total) on an
# SD card that has room for it; a session rarely outlasts a broker outage longer than that.
DEFAULT_QUEUE_MAX_BYTES = 256 * 1024 * 1024
MEMORY = ":memory:"  # a queue that does not survive a restart (tests, one-shot runs)


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """One queued message: ``row_id`` orders the queue (ascending = oldest first)."""

    row_id: int
    topic: str
    payload: bytes
    samples: int  # samples the frame carries (for drop accounting), 0 for non-data messages


class DiskQueue:
    """Bounded FIFO of (topic, payload, samples) in a SQLite file; thread-safe.

    ``handed_upto``: the highest row id handed to the MQTT client (set by the sender); rows at or
    below it are never dropped for space. ``counters``: ``queue_dropped_frames`` and
    ``queue_dropped_samples`` (full queue), and ``queue_resumed_frames`` (found at open).
    """

    def __init__(self, path: str | Path = MEMORY, max_bytes: int = DEFAULT_QUEUE_MAX_BYTES) -> None:
        if max_bytes <= 0:
            raise ConfigError(f"queue max_bytes = {max_bytes}: must be > 0")
        self.path = str(path)
        self.max_bytes = int(max_bytes)
        self.counters: Counter[str] = Counter()
        self.handed_upto = 0
        self._lock = threading.Lock()
        if self.path != MEMORY:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # AUTOINCREMENT: ids never reused, so order survives the queue running empty and a restart.
            self._db.execute("CREATE TABLE IF NOT EXISTS queue (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                             "topic TEXT NOT NULL, payload BLOB NOT NULL, samples INTEGER NOT NULL)")
            n, size = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM queue").fetchone()
        except sqlite3.Error as exc:
            raise ConfigError(f"{self.path}: cannot open the store-and-forward queue: {exc}") from None
        self._frames, self._bytes = int(n), int(size)
        if n:
            self.counters["queue_resumed_frames"] += n
            log.info("%s: resuming %d queued frames (%.1f MB)", self.path, n, size / 1e6)

    def __len__(self) -> int:
        return self._frames

    @property
    def size_bytes(self) -> int:
        """Payload bytes queued (the bound applies to this)."""
        return self._bytes

    def put(self, topic: str, payload: bytes, samples: int = 0) -> int:
        """Append a message; returns its row id. Makes room first by dropping the oldest rows not in flight."""
        with self._lock:
            self._make_room(len(payload))
            cur = self._db.execute("INSERT INTO queue (topic, payload, samples) VALUES (?, ?, ?)",
                                   (topic, payload, samples))
            self._frames += 1
            self._bytes += len(payload)
            return int(cur.lastrowid or 0)

    def _make_room(self, incoming: int) -> None:
        excess = self._bytes + incoming - self.max_bytes
        if excess <= 0:
            return
        freed, frames, samples, last = 0, 0, 0, self.handed_upto
        # Oldest first, skipping what the client already holds; a few rows usually free enough.
        for row_id, size, n in self._db.execute(
                "SELECT id, LENGTH(payload), samples FROM queue WHERE id > ? ORDER BY id", (self.handed_upto,)):
            if freed >= excess:
                break
            freed += size
            frames += 1
            samples += n
            last = row_id
        if frames:
            self._db.execute("DELETE FROM queue WHERE id > ? AND id <= ?", (self.handed_upto, last))
            self._frames -= frames
            self._bytes -= freed
            self.counters["queue_dropped_frames"] += frames
            self.counters["queue_dropped_samples"] += samples
            log.warning("store-and-forward queue full (%d bytes max): dropped the %d oldest frames "
                        "(%d samples; %d frames dropped so far)", self.max_bytes, frames, samples,
                        self.counters["queue_dropped_frames"])

    def peek(self, after_id: int, limit: int) -> list[QueuedMessage]:
        """Up to ``limit`` messages with row id > ``after_id``, oldest first (not removed)."""
        with self._lock:
            rows = self._db.execute("SELECT id, topic, payload, samples FROM queue WHERE id > ? ORDER BY id LIMIT ?",
                                    (after_id, limit)).fetchall()
        return [QueuedMessage(int(r[0]), str(r[1]), bytes(r[2]), int(r[3])) for r in rows]

    def remove(self, row_ids: list[int]) -> None:
        """Delete acknowledged messages."""
        if not row_ids:
            return
        with self._lock:
            self._db.execute("BEGIN")  # one commit for the batch, not one per row
            for row_id in row_ids:
                row = self._db.execute("DELETE FROM queue WHERE id = ? RETURNING LENGTH(payload)", (row_id,)).fetchone()
                if row is not None:  # already dropped: nothing to account
                    self._frames -= 1
                    self._bytes -= int(row[0])
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()
