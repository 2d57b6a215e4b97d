"""Writes InfluxDB line protocol to InfluxDB 1.x (``/write``) or 2.x (``/api/v2/write``).

:class:`InfluxWriter` buffers lines in memory and one background thread sends them in batches
(``settings.batch_size`` lines, or whatever has waited ``settings.flush_interval_s``), retrying
with exponential backoff while the server is unreachable or overloaded. Every point is accounted
for in :attr:`InfluxWriter.counters`: written, failed (given up or rejected), dropped because the
buffer was full, or still pending.

Why not influxdb-client's own batching ``WriteApi``: it reports failures only through an error
callback on its own thread, so a caller cannot ``flush()`` and learn whether the points arrived,
and it speaks only the 2.x API (InfluxDB 1.6 answers 404 on ``/api/v2/write``). So we batch and
retry ourselves, and use influxdb-client's SYNCHRONOUS API for 2.x and a plain urllib3 POST for
1.x: every failure surfaces as an exception (or status) that we count, log and retry.

:func:`line` and :func:`lines_from_arrays` build line-protocol text (timestamps in Unix ns).
"""

from __future__ import annotations

import collections
import json
import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Self
from urllib.parse import urlencode

import numpy as np
import urllib3
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from jointmon.config import InfluxSettings
from jointmon.errors import ConfigError
from jointmon.ratelimit import RateLimitedLog

log = logging.getLogger("jointmon.influx")

MAX_BACKOFF_S = 30.0  # cap of the exponential backoff between attempts of one batch

# --- line protocol ---------------------------------------------------------------------------------
# Same escaping as influxdb_client.Point (its tables are private, so they are repeated here).
_ESC_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_ESC_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
# Line protocol cannot carry a newline, even in a quoted string (InfluxDB 2.x and VictoriaMetrics split the
# line there; Point writes it raw): written as the two characters backslash-n, and read back that way.
_ESC_STRING = str.maketrans({'"': r"\"", "\\": "\\\\", "\n": r"\n", "\r": r"\r"})

FieldValue = float | int | str | bool


def _series_key(measurement: str, tags: Mapping[str, str]) -> str:
    """``measurement,tag=value,...`` with tags sorted by key (InfluxDB's preferred order)."""
    if not measurement:
        raise ValueError("measurement must not be empty")
    parts = [str(measurement).translate(_ESC_MEASUREMENT)]
    for key, value in sorted(tags.items()):
        if value is None:
            continue
        k = str(key).translate(_ESC_KEY)
        v = str(value).translate(_ESC_KEY)
        if v.endswith("\\"):
            v += " "  # as Point does: a trailing backslash would otherwise escape the separator
        # Empty tag keys/values are invalid line protocol; InfluxDB's convention is "tag absent".
        if k and v:
            parts.append(f"{k}={v}")
    return ",".join(parts)


def _float_str(x: float) -> str:
    s = repr(x)  # shortest text that round-trips the float64
    return s[:-2] if s.endswith(".0") else s  # "2" not "2.0", as Point and other encoders do


def _field(key: str, value: object) -> str | None:
    """``key=value`` for one field (``key`` already escaped); None if the value cannot be stored."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):  # before int: bool is an int subclass
        return f"{key}={'true' if value else 'false'}"
    if isinstance(value, int | np.integer):
        return f"{key}={int(value)}i"
    if isinstance(value, float | np.floating):
        f = float(value)
        # InfluxDB has no NaN/inf: such a field is left out of the line (as Point does).
        return f"{key}={_float_str(f)}" if math.isfinite(f) else None
    if isinstance(value, str):
        return f'{key}="{value.translate(_ESC_STRING)}"'
    raise TypeError(f"field {key!r}: unsupported type {type(value).__name__}")


def line(measurement: str, tags: Mapping[str, str], fields: Mapping[str, FieldValue], t_ns: int) -> str:
    """One line of InfluxDB line protocol, escaped, fields and tags sorted; ``t_ns`` in Unix ns.

    ints get the ``i`` suffix, bools are ``true``/``false``, strings are quoted. Tags with an
    empty value and float fields that are NaN/inf are left out (InfluxDB cannot store them);
    ValueError if no field is left. Same text as ``influxdb_client.Point`` for the same data.
    """
    if isinstance(t_ns, bool) or not isinstance(t_ns, int | np.integer):
        raise TypeError(f"t_ns must be an int (Unix ns), not {type(t_ns).__name__}: a float cannot hold ns")
    parts = [p for k, v in sorted(fields.items()) if (p := _field(str(k).translate(_ESC_KEY), v)) is not None]
    if not parts:
        raise ValueError(f"{measurement}: no field with a value InfluxDB can store in {dict(fields)!r}")
    return f"{_series_key(measurement, tags)} {','.join(parts)} {int(t_ns)}"


def _column(key: str, values: np.ndarray) -> list[str | None]:
    """``key=value`` texts for one field array (None where a value cannot be stored)."""
    kind = values.dtype.kind
    if kind == "b":
        yes, no = f"{key}=true", f"{key}=false"
        return [yes if v else no for v in values.tolist()]
    if kind in "iu":
        return [f"{key}={v}i" for v in values.tolist()]
    if kind == "f":
        finite = np.isfinite(values)
        as_float = values.astype(np.float64, copy=False).tolist()
        if finite.all():
            return [f"{key}={_float_str(v)}" for v in as_float]
        return [f"{key}={_float_str(v)}" if ok else None for v, ok in zip(as_float, finite.tolist(), strict=True)]
    if kind in "UO":
        return [_field(key, v) for v in values.tolist()]
    raise TypeError(f"field {key!r}: unsupported array dtype {values.dtype}")


def lines_from_arrays(measurement: str, tags: Mapping[str, str], fields: Mapping[str, np.ndarray],
                      t_ns: np.ndarray) -> list[str]:
    """Many lines of one series at once: row ``i`` holds ``fields[k][i]`` at ``t_ns[i]`` (Unix ns).

    For sample series (e.g. 50 Hz knee angles): the series key is escaped once and each column
    formatted in one pass. ``t_ns`` must be an integer array (float64 cannot hold ns). Values
    that cannot be stored (NaN/inf, None) are left out of their line, and a row with no field
    left is left out entirely, so the result may be shorter than ``t_ns``. Each line equals
    :func:`line` of the same row.
    """
    t = np.asarray(t_ns)
    if t.ndim != 1 or t.dtype.kind not in "iu":
        raise TypeError(f"t_ns must be a 1-D integer array of Unix ns, got {t.dtype} with shape {t.shape}")
    if not fields:
        raise ValueError(f"{measurement}: no fields")
    prefix = _series_key(measurement, tags)
    cols = []
    for key in sorted(fields):
        values = np.asarray(fields[key])
        if values.shape != t.shape:
            raise ValueError(f"field {key!r} has shape {values.shape}, t_ns has {t.shape}")
        cols.append(_column(str(key).translate(_ESC_KEY), values))
    times = t.tolist()
    if not any(None in c for c in cols):  # the common case: one join per row, no filtering
        field_sets = cols[0] if len(cols) == 1 else [",".join(row) for row in zip(*cols, strict=True)]
        return [f"{prefix} {fs} {ts}" for fs, ts in zip(field_sets, times, strict=True)]
    out = []
    for *row, ts in zip(*cols, times, strict=True):
        present = [p for p in row if p is not None]
        if present:
            out.append(f"{prefix} {','.join(present)} {ts}")
    return out


# --- transports --------------------------------------------------------------------------------
class _TransientError(Exception):
    """Worth retrying: no connection, timeout, 5xx, 429. ``retry_after_s`` from the server, if any."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class _RejectedError(Exception):
    """The server refused the batch (4xx: bad line protocol, missing database, auth): do not retry."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def _server_message(body: bytes | str | None) -> str:
    """The error text of an InfluxDB error body (1.x ``{"error"}``, 2.x ``{"message"}``)."""
    if not body:
        return "(empty body)"
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    try:
        doc = json.loads(text)
        return str(doc.get("error") or doc.get("message") or text)[:1000]
    except (ValueError, AttributeError):
        return text.strip()[:1000]


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None  # an HTTP date: rare, our own backoff will do


def _check(status: int, body: bytes | str | None, retry_after: str | None = None) -> None:
    if 200 <= status < 300:
        return
    if status == 429 or status >= 500:
        raise _TransientError(f"HTTP {status}: {_server_message(body)}", _retry_after(retry_after))
    raise _RejectedError(status, _server_message(body))


class _V1Transport:
    """InfluxDB 1.x ``POST /write?db=...&precision=ns``; 204 is success."""

    def __init__(self, settings: InfluxSettings, timeout_s: float) -> None:
        self._http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=timeout_s))
        self._url = f"{settings.url.rstrip('/')}/write?{urlencode({'db': settings.database, 'precision': 'ns'})}"
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if settings.username:
            # Basic auth rather than u=/p= in the query string, which would end up in access logs.
            self._headers.update(urllib3.make_headers(basic_auth=f"{settings.username}:{settings.password or ''}"))

    def send(self, lines: list[str]) -> None:
        try:
            resp = self._http.request("POST", self._url, body="\n".join(lines).encode("utf-8"), headers=self._headers)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _TransientError(f"{type(exc).__name__}: {exc}") from exc
        _check(resp.status, resp.data, resp.headers.get("Retry-After"))

    def close(self) -> None:
        self._http.clear()


class _V2Transport:
    """InfluxDB 2.x ``/api/v2/write`` (also InfluxDB 1.8+, VictoriaMetrics) via influxdb-client."""

    def __init__(self, settings: InfluxSettings, timeout_s: float) -> None:
        self._bucket, self._org = settings.database, settings.org
        # InfluxDB 1.8's 2.x-compatible API takes "user:password" as the token.
        token = settings.token or (f"{settings.username}:{settings.password or ''}" if settings.username else None)
        self._client = InfluxDBClient(url=settings.url, token=token, org=settings.org, timeout=int(timeout_s * 1000))
        self._api = self._client.write_api(write_options=SYNCHRONOUS)

    def send(self, lines: list[str]) -> None:
        try:
            self._api.write(bucket=self._bucket, org=self._org, record=lines, write_precision=WritePrecision.NS)
        except ApiException as exc:
            if exc.status is None:
                raise _TransientError(f"no HTTP status: {exc}") from exc
            _check(exc.status, exc.body or getattr(exc, "message", None), getattr(exc, "retry_after", None))
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _TransientError(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self._api.close()
        self._client.close()


# --- the writer --------------------------------------------------------------------------------
class InfluxWriter:
    """Batched, retried, counted line-protocol writes to InfluxDB (``settings.api`` ``"v1"`` or ``"v2"``).

    ``write()`` only appends to an in-memory buffer (at most ``max_buffer_points`` lines; beyond
    that new lines are dropped and counted), so it never blocks on the network. A background
    thread sends batches of up to ``settings.batch_size`` lines as soon as a batch is full or its
    oldest line has waited ``settings.flush_interval_s`` seconds. A batch that fails with a
    connection error, timeout, 5xx or 429 is retried up to ``max_retries`` times, waiting
    ``retry_backoff_s * 2**attempt`` seconds (capped at 30 s; the server's Retry-After wins); a
    4xx (bad line protocol, missing database, auth) is not retried. Points of a batch given up
    or rejected count as failed. (InfluxDB 1.x may still have stored the valid lines of a
    rejected "partial write" batch: points_failed is an upper bound of what was lost.)

    Counters add up: ``points_received == points_written + points_failed +
    points_dropped_buffer_full + points_pending``.
    """

    def __init__(self, settings: InfluxSettings, *, max_retries: int = 5, retry_backoff_s: float = 0.5,
                 max_buffer_points: int = 1_000_000, request_timeout_s: float = 10.0) -> None:
        """``request_timeout_s``: per HTTP request (connect + response), seconds."""
        if max_retries < 0 or retry_backoff_s < 0 or max_buffer_points < 1 or request_timeout_s <= 0:
            raise ConfigError(f"InfluxWriter: need max_retries >= 0 (got {max_retries}), retry_backoff_s >= 0 "
                              f"({retry_backoff_s}), max_buffer_points >= 1 ({max_buffer_points}), "
                              f"request_timeout_s > 0 ({request_timeout_s})")
        self.settings = settings
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self.max_buffer_points = max_buffer_points
        self._endpoint = f"{settings.url} ({settings.api}, {'db' if settings.api == 'v1' else 'bucket'} " \
                         f"{settings.database!r})"
        transport_cls = _V1Transport if settings.api == "v1" else _V2Transport
        self._transport: _V1Transport | _V2Transport = transport_cls(settings, request_timeout_s)
        self._warn = RateLimitedLog(log)  # a dead server must not flood the log

        # Everything below is guarded by _cond. Points are numbered in order of acceptance:
        # _taken of them have left the buffer for the sender, _done of those are written or failed.
        self._cond = threading.Condition()
        self._buf: collections.deque[str] = collections.deque()
        self._arrivals: collections.deque[tuple[int, float]] = collections.deque()  # (accepted total, monotonic t)
        self._accepted = self._taken = self._done = 0
        self._flush_target = 0  # send partial batches until _taken reaches this
        self._bad_reported = 0  # points_failed + points_dropped_buffer_full already reported by flush()
        self._closing = False  # no more writes; send everything now
        self._abort = False  # stop retrying: fail what is left
        self._counters = dict.fromkeys(
            ("points_received", "points_written", "points_failed", "points_dropped_buffer_full",
             "batches_written", "batches_failed", "batches_failed_attempts"), 0)
        self._thread = threading.Thread(target=self._run, name="jointmon-influx-writer", daemon=True)
        self._thread.start()

    # --- public API -------------------------------------------------------------------------
    def write(self, lines: Iterable[str]) -> None:
        """Enqueue line-protocol lines (one point each, ns timestamps). Returns at once.

        RuntimeError after :meth:`close`. Lines beyond ``max_buffer_points`` are dropped and counted.
        """
        if isinstance(lines, str):
            raise TypeError("write() takes an iterable of lines, not a str (it would iterate over characters)")
        batch = lines if isinstance(lines, list) else list(lines)
        if not batch:
            return
        with self._cond:
            if self._closing:
                raise RuntimeError("InfluxWriter.write() after close()")
            self._counters["points_received"] += len(batch)
            room = self.max_buffer_points - len(self._buf)
            accepted = batch if len(batch) <= room else batch[:max(room, 0)]
            dropped = len(batch) - len(accepted)
            self._counters["points_dropped_buffer_full"] += dropped
            if accepted:
                was_empty = not self._buf
                self._buf.extend(accepted)
                self._accepted += len(accepted)
                self._arrivals.append((self._accepted, time.monotonic()))
                # Wake the sender only when it has something new to decide: a first line (start the
                # flush_interval clock) or a full batch.
                if was_empty or len(self._buf) >= self.settings.batch_size:
                    self._cond.notify_all()
        if dropped:
            self._warn.warning("buffer_full", "InfluxDB write buffer full (%d points): dropped %d points; "
                               "is %s reachable?", self.max_buffer_points, dropped, self._endpoint)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Send everything enqueued so far now and wait until it is written or given up (seconds).

        True if all of it was written and no point failed or was dropped since the previous
        flush() (so a failure is reported once, by the flush after it). False on timeout; the
        writer keeps retrying in the background.
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            target = self._accepted
            self._flush_target = max(self._flush_target, target)
            self._cond.notify_all()
            while self._done < target and self._thread.is_alive():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            bad = self._counters["points_failed"] + self._counters["points_dropped_buffer_full"]
            ok = self._done >= target and bad == self._bad_reported
            self._bad_reported = bad
            return ok

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush (up to ``timeout_s`` seconds), then stop the thread; what is left counts as failed."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self.flush(timeout_s)
        with self._cond:
            self._abort = True  # stop backoff waits and retries: give up the rest
            self._cond.notify_all()
        # A request in progress can take up to request_timeout_s; do not wait past the deadline.
        self._thread.join(max(deadline - time.monotonic(), 0.1))
        if self._thread.is_alive():
            log.warning("InfluxDB writer to %s: a request still in progress after close(); %d points pending",
                        self._endpoint, self.counters["points_pending"])

    @property
    def counters(self) -> dict[str, int]:
        """Snapshot: points_received/written/failed/dropped_buffer_full/pending, batches_written,
        batches_failed (given up or rejected), batches_failed_attempts (every failed request)."""
        with self._cond:
            return {**self._counters, "points_pending": self._accepted - self._done}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- background thread --------------------------------------------------------------------
    def _next_batch(self) -> list[str] | None:
        """Wait until a batch is due and take it from the buffer; None when the thread must end."""
        size, interval = self.settings.batch_size, self.settings.flush_interval_s
        with self._cond:
            while not self._abort:
                n = len(self._buf)
                if n >= size or (n and (self._closing or self._flush_target > self._taken)):
                    break
                if n:
                    # _arrivals[0] is the write() call that brought the oldest line still buffered
                    wait = self._arrivals[0][1] + interval - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                elif self._closing:
                    return None
                else:
                    self._cond.wait()
            if self._abort:
                self._fail_locked(len(self._buf), batches=0)
                self._buf.clear()
                self._arrivals.clear()
                self._taken = self._accepted
                return None
            batch = [self._buf.popleft() for _ in range(min(size, len(self._buf)))]
            self._taken += len(batch)
            while self._arrivals and self._arrivals[0][0] <= self._taken:
                self._arrivals.popleft()
            return batch

    def _run(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                self._send(batch)
        finally:
            self._transport.close()

    def _send(self, batch: list[str]) -> None:
        """Send one batch, retrying transient failures; counts the outcome."""
        attempt = 0
        while True:
            try:
                self._transport.send(batch)
            except _RejectedError as exc:
                with self._cond:
                    self._counters["batches_failed_attempts"] += 1
                    self._fail_locked(len(batch))
                self._warn.warning("rejected", "InfluxDB %s rejected %d points (not retried): %s",
                                   self._endpoint, len(batch), exc)
                log.debug("first lines of the rejected batch:\n%s", "\n".join(batch[:3]))
                return
            except _TransientError as exc:
                with self._cond:
                    self._counters["batches_failed_attempts"] += 1
                    give_up = attempt >= self.max_retries or self._abort
                    if give_up:
                        self._fail_locked(len(batch))
                if give_up:
                    self._warn.warning("gave_up", "InfluxDB write to %s failed %d times, gave up on %d points: %s",
                                       self._endpoint, attempt + 1, len(batch), exc)
                    return
                delay = min(self.retry_backoff_s * 2**attempt, MAX_BACKOFF_S)
                if exc.retry_after_s is not None:
                    delay = min(exc.retry_after_s, MAX_BACKOFF_S)
                attempt += 1
                self._warn.warning("retry", "InfluxDB write to %s failed (%s); retry %d/%d in %.1f s",
                                   self._endpoint, exc, attempt, self.max_retries, delay)
                with self._cond:
                    self._cond.wait_for(lambda: self._abort, timeout=delay)  # close() cuts the wait short
                continue
            except Exception:  # a library surprise: count and log it, and keep the thread alive
                with self._cond:
                    self._counters["batches_failed_attempts"] += 1
                    self._fail_locked(len(batch))
                log.exception("InfluxDB write to %s: unexpected error, %d points failed", self._endpoint, len(batch))
                return
            with self._cond:
                self._counters["points_written"] += len(batch)
                self._counters["batches_written"] += 1
                self._done += len(batch)
                self._cond.notify_all()
            if attempt:
                log.info("InfluxDB write to %s succeeded after %d retries", self._endpoint, attempt)
            return

    def _fail_locked(self, n_points: int, batches: int = 1) -> None:
        """Count ``n_points`` as failed and done (caller holds ``_cond``)."""
        self._counters["points_failed"] += n_points
        self._counters["batches_failed"] += batches
        self._done += n_points
        self._cond.notify_all()
