"""Writes InfluxDB line protocol to InfluxDB 1.x (``/write``) or 2.x (``/api/v2/write``).

:class:`InfluxWriter` buffers lines in memory and one background thread sends them in batches
(``settings.batch_size`` lines, or whatever has waited ``settings.flush_interval_s``), retrying
with exponential backoff while the server is unreachable or overloaded, and with a spool
directory keeping what it cannot send on disk (:mod:`analysis.influx_spool`) and replaying it in
order when the server is back, also after a restart. Every point is accounted for in
:attr:`InfluxWriter.counters`: written, failed (given up or rejected), dropped (memory buffer or
spool full), or still pending (in memory, in flight or in the spool).

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
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlencode

import numpy as np
import urllib3
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from analysis.influx_spool import InfluxSpool, spool_name
from jointmon.config import ENV_INFLUX_PASSWORD, ENV_INFLUX_TOKEN, InfluxSettings
from jointmon.const import WARN_INTERVAL_S
from jointmon.errors import ConfigError
from jointmon.ratelimit import RateLimitedLog

log = logging.getLogger("jointmon.influx")

# Default cap of the exponential backoff between attempts (s): a LAN InfluxDB that restarts is back in
# seconds, and with a spool this bounds how long the data waits on disk after it is back.
MAX_BACKOFF_S = 10.0

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


class _AuthError(_RejectedError):
    """401 / 403: wrong credentials, or no write permission on the database / bucket."""


# Refusals a spool waits out (kept, retried with backoff, logged) instead of failing the points: the
# credentials (401/403) or the database/bucket (404, e.g. not created yet while the server initialises)
# are configuration the operator fixes, after which the data is still wanted.
KEPT_STATUSES = (401, 403, 404)


def _kept(exc: Exception) -> bool:
    return isinstance(exc, _TransientError) or isinstance(exc, _RejectedError) and exc.status in KEPT_STATUSES


CREDENTIALS_HINT = (f"check ${ENV_INFLUX_TOKEN} / ${ENV_INFLUX_PASSWORD} (or ${ENV_INFLUX_TOKEN}_FILE / "
                    f"${ENV_INFLUX_PASSWORD}_FILE), the user name and org, and the write permission")


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
    if status in (401, 403):
        raise _AuthError(status, _server_message(body))
    raise _RejectedError(status, _server_message(body))


def _post(http: urllib3.PoolManager, url: str, body: bytes, headers: Mapping[str, str]) -> None:
    """POST and raise as :func:`_check` does; connection errors and timeouts are transient."""
    try:
        resp = http.request("POST", url, body=body, headers=dict(headers))
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise _TransientError(f"{type(exc).__name__}: {exc}") from exc
    _check(resp.status, resp.data, resp.headers.get("Retry-After"))


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
        _post(self._http, self._url, "\n".join(lines).encode("utf-8"), self._headers)

    def probe(self) -> None:
        """An empty write: checks reachability, credentials and the database without writing anything."""
        _post(self._http, self._url, b"", self._headers)

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
        # The probe goes around the client, which sends nothing for an empty record list.
        self._http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=timeout_s))
        self._probe_url = (f"{settings.url.rstrip('/')}/api/v2/write?"
                           f"{urlencode({'org': settings.org, 'bucket': settings.database, 'precision': 'ns'})}")
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if token:
            self._headers["Authorization"] = f"Token {token}"

    def send(self, lines: list[str]) -> None:
        try:
            self._api.write(bucket=self._bucket, org=self._org, record=lines, write_precision=WritePrecision.NS)
        except ApiException as exc:
            if exc.status is None:
                raise _TransientError(f"no HTTP status: {exc}") from exc
            _check(exc.status, exc.body or getattr(exc, "message", None), getattr(exc, "retry_after", None))
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _TransientError(f"{type(exc).__name__}: {exc}") from exc

    def probe(self) -> None:
        """An empty write (InfluxDB 2.x checks the token and bucket first; before 2.0.9 it then answers
        400 "writing requires points", which is a yes here)."""
        try:
            _post(self._http, self._probe_url, b"", self._headers)
        except _AuthError:
            raise
        except _RejectedError as exc:
            if exc.status != 400:
                raise

    def close(self) -> None:
        self._api.close()
        self._client.close()
        self._http.clear()


# --- the writer --------------------------------------------------------------------------------
class InfluxWriter:
    """Batched, retried, counted line-protocol writes to InfluxDB (``settings.api`` ``"v1"`` or ``"v2"``),
    with an optional on-disk spool for outages.

    ``write()`` only appends to an in-memory buffer (at most ``max_buffer_points`` lines; beyond
    that new lines are dropped and counted), so it never blocks on the network. A background
    thread sends batches of up to ``settings.batch_size`` lines as soon as a batch is full or its
    oldest line has waited ``settings.flush_interval_s`` seconds.

    Without a spool, a batch that fails with a connection error, timeout, 5xx or 429 is retried up
    to ``max_retries`` times, waiting ``retry_backoff_s * 2**attempt`` seconds (capped at
    ``max_backoff_s``; the server's Retry-After wins), then given up (failed).

    With a spool (``settings.spool_dir``, or ``spool``: :class:`~analysis.influx_spool.InfluxSpool`),
    a batch that fails so goes to the spool on disk, and while the spool holds anything every new
    batch goes there too (order is kept). The thread replays the spool oldest first, a request of
    up to ``batch_size`` points at a time, retrying with the same backoff for as long as it takes;
    a replayed batch leaves the disk only once the server took it. A full spool drops its oldest
    batches (counted in ``points_dropped_spool_full``, logged). :meth:`close` during an outage
    leaves what is unsent in the spool (still ``points_pending``) for the next start, which
    resumes it (``points_resumed``). Rejected credentials (401/403) and a missing database / bucket
    (404) are kept too, logged (credentials as an error): fix the setting and restart, the spool
    replays (a bucket created late is found by the next attempt).

    Any other 4xx (bad line protocol, ...) is not retried: failed; without a spool, 401/403/404 too. (InfluxDB
    1.x may still have stored the valid lines of a rejected "partial write" batch: points_failed is
    an upper bound of what was lost.)

    Counters add up: ``points_received + points_resumed == points_written + points_failed +
    points_dropped_buffer_full + points_dropped_spool_full + points_pending``.
    """

    def __init__(self, settings: InfluxSettings, *, max_retries: int = 5, retry_backoff_s: float = 0.5,
                 max_buffer_points: int = 1_000_000, request_timeout_s: float = 10.0,
                 max_backoff_s: float = MAX_BACKOFF_S, spool: InfluxSpool | None = None) -> None:
        """``request_timeout_s``: per HTTP request (connect + response), seconds."""
        if max_retries < 0 or retry_backoff_s < 0 or max_buffer_points < 1 or request_timeout_s <= 0 \
                or max_backoff_s < retry_backoff_s:
            raise ConfigError(f"InfluxWriter: need max_retries >= 0 (got {max_retries}), retry_backoff_s >= 0 "
                              f"({retry_backoff_s}), max_buffer_points >= 1 ({max_buffer_points}), "
                              f"request_timeout_s > 0 ({request_timeout_s}), max_backoff_s >= retry_backoff_s "
                              f"({max_backoff_s})")
        self.settings = settings
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_buffer_points = max_buffer_points
        self._endpoint = f"{settings.url} ({settings.api}, {'db' if settings.api == 'v1' else 'bucket'} " \
                         f"{settings.database!r})"
        if spool is None and settings.spool_dir:
            spool = InfluxSpool(Path(settings.spool_dir) / spool_name(settings.url, settings.api, settings.database),
                                settings.spool_max_bytes)
        self.spool = spool
        transport_cls = _V1Transport if settings.api == "v1" else _V2Transport
        try:
            self._transport: _V1Transport | _V2Transport = transport_cls(settings, request_timeout_s)
        except Exception:
            if spool is not None:
                spool.close()  # release its lock: the caller may retry with other settings
            raise
        self._warn = RateLimitedLog(log)  # a dead server must not flood the log
        self.auth_error: str | None = None  # the last credentials error, for callers that want to show it
        self._auth_logged = -math.inf  # monotonic time the credentials error was last logged

        # Everything below is guarded by _cond. Points are numbered in order of acceptance:
        # _taken of them have left the buffer for the sender, _done of those are written, failed or
        # dropped from a full spool. Points found in the spool at start count as accepted and taken.
        self._cond = threading.Condition()
        self._buf: collections.deque[str] = collections.deque()
        self._arrivals: collections.deque[tuple[int, float]] = collections.deque()  # (accepted total, monotonic t)
        resumed = spool.points if spool is not None else 0
        self._accepted = self._taken = resumed
        self._done = 0
        self._flush_target = 0  # send partial batches until _taken reaches this
        self._bad_reported = 0  # points failed or dropped already reported by flush()
        self._closing = False  # no more writes; send everything now
        self._abort = False  # stop retrying: fail (no spool) or spool what is left
        self._retry_at = 0.0  # monotonic time of the next spool replay attempt
        self._failures = 0  # consecutive failed attempts (spool mode)
        self._try_now = False  # flush() asked for a replay attempt now
        self._outage_since: float | None = None  # monotonic start of the current outage (spool mode)
        self._counters = dict.fromkeys(
            ("points_received", "points_written", "points_failed", "points_dropped_buffer_full",
             "points_dropped_spool_full", "points_spooled", "points_replayed", "points_resumed",
             "batches_written", "batches_failed", "batches_failed_attempts", "auth_failures"), 0)
        self._counters["points_resumed"] = resumed
        if resumed:
            self._outage_since = time.monotonic()
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

    def check(self) -> bool:
        """Ask the server now, with an empty write (nothing is stored): True if it takes writes; False if
        it cannot be reached (logged: the writer keeps retrying, or spooling); :class:`ConfigError` with
        a clear message if it refuses the credentials (401/403) or has no such database / bucket (404)."""
        try:
            self._transport.probe()
        except _TransientError as exc:
            log.warning("InfluxDB at %s does not answer (%s): %s", self._endpoint, exc,
                        f"points go to the spool {self.spool.path} until it does" if self.spool is not None
                        else "points wait in memory and are retried")
            return False
        except _AuthError as exc:
            raise ConfigError(f"InfluxDB at {self._endpoint} refused the credentials ({exc}): "
                              f"{CREDENTIALS_HINT}") from None
        except _RejectedError as exc:
            raise ConfigError(f"InfluxDB at {self._endpoint} refused a write ({exc}): check the "
                              f"{'database' if self.settings.api == 'v1' else 'bucket and org'} name") from None
        return True

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Send everything enqueued so far now and wait until it is written or given up (seconds).

        With a spool, also try a replay now. True if all of it was written and no point failed or
        was dropped since the previous flush() (so a failure is reported once, by the flush after
        it). False on timeout; the writer keeps retrying in the background.
        """
        return self._wait(time.monotonic() + timeout_s, stop_in_outage=False)

    def _wait(self, deadline: float, stop_in_outage: bool) -> bool:
        with self._cond:
            target = self._accepted
            self._flush_target = max(self._flush_target, target)
            self._try_now = True
            self._cond.notify_all()
            while self._done < target and self._thread.is_alive():
                if stop_in_outage and self._failures and not self._try_now:
                    break  # the server still does not answer: what is left stays in the spool
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            bad = self._counters["points_failed"] + self._counters["points_dropped_buffer_full"] \
                + self._counters["points_dropped_spool_full"]
            ok = self._done >= target and bad == self._bad_reported
            self._bad_reported = bad
            return ok

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush (up to ``timeout_s`` seconds), then stop the thread. Without a spool what is left counts
        as failed; with one it stays in the spool for the next start (and close() does not wait out
        an outage: it returns after one more failed attempt)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._wait(deadline, stop_in_outage=self.spool is not None)
        with self._cond:
            self._abort = True  # stop backoff waits and retries: give up (or spool) the rest
            self._cond.notify_all()
        # A request in progress can take up to request_timeout_s; do not wait past the deadline.
        self._thread.join(max(deadline - time.monotonic(), 0.1))
        if self._thread.is_alive():
            log.warning("InfluxDB writer to %s: a request still in progress after close(); %d points pending",
                        self._endpoint, self.counters["points_pending"])
        elif self.spool is not None:
            if len(self.spool):
                log.warning("InfluxDB writer to %s closed with %d points in the spool %s: sent at the next start",
                            self._endpoint, self.spool.points, self.spool.path)
            self.spool.close()

    @property
    def counters(self) -> dict[str, int]:
        """Snapshot: points_received/written/failed/pending, points_dropped (= _buffer_full + _spool_full),
        points_spooled (ever put in the spool), points_replayed (written from the spool), points_resumed
        (in the spool at start), spool_points / spool_bytes (now), batches_written, batches_failed (given
        up or rejected), batches_failed_attempts (every failed request), auth_failures (401/403)."""
        with self._cond:
            c = {**self._counters, "points_pending": self._accepted - self._done}
        c["points_dropped"] = c["points_dropped_buffer_full"] + c["points_dropped_spool_full"]
        if self.spool is not None:
            c["spool_points"], c["spool_bytes"] = self.spool.points, self.spool.size_bytes
        return c

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- background thread --------------------------------------------------------------------
    def _take_locked(self, n: int) -> list[str]:
        batch = [self._buf.popleft() for _ in range(n)]
        self._taken += len(batch)
        while self._arrivals and self._arrivals[0][0] <= self._taken:
            self._arrivals.popleft()
        return batch

    def _next_action(self) -> tuple[str, list[str]]:
        """Wait until there is something to do: ("send" | "spool", batch), ("replay", []), ("abort", rest) or
        ("exit", [])."""
        size, interval = self.settings.batch_size, self.settings.flush_interval_s
        with self._cond:
            while True:
                n = len(self._buf)
                if self._abort:
                    return "abort", self._take_locked(n)
                now = time.monotonic()
                spooling = self.spool is not None and len(self.spool) > 0
                # _arrivals[0] is the write() call that brought the oldest line still buffered
                due_at = self._arrivals[0][1] + interval if n else math.inf
                if n >= size or (n and (self._closing or self._flush_target > self._taken or now >= due_at)):
                    return ("spool" if spooling else "send"), self._take_locked(min(size, n))
                if spooling:
                    if self._try_now or now >= self._retry_at:
                        return "replay", []
                    wake = min(self._retry_at, due_at)
                elif n == 0 and self._closing:
                    return "exit", []
                else:
                    wake = due_at
                self._cond.wait(None if wake == math.inf else max(wake - now, 0.001))

    def _run(self) -> None:
        try:
            while True:
                action, batch = self._next_action()
                if action == "exit":
                    return
                if action == "abort":
                    if batch and self.spool is not None:
                        self._to_spool(batch)
                    elif batch:
                        with self._cond:
                            self._fail_locked(len(batch), batches=0)
                    return
                if action == "spool":
                    self._to_spool(batch)
                elif action == "replay":
                    self._replay()
                elif self.spool is not None:
                    self._send_or_spool(batch)
                else:
                    self._send(batch)
        finally:
            self._transport.close()

    def _send(self, batch: list[str]) -> None:
        """Send one batch, retrying transient failures; counts the outcome (no spool)."""
        attempt = 0
        while True:
            try:
                self._transport.send(batch)
            except _RejectedError as exc:
                with self._cond:
                    self._counters["batches_failed_attempts"] += 1
                    self._fail_locked(len(batch))
                self._log_rejected(exc, len(batch))
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
                delay = self._backoff(attempt, exc.retry_after_s)
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
                self._written_locked(len(batch))
            if attempt:
                log.info("InfluxDB write to %s succeeded after %d retries", self._endpoint, attempt)
            return

    def _backoff(self, attempt: int, retry_after_s: float | None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (the server's Retry-After wins), capped."""
        delay = self.retry_backoff_s * 2 ** min(attempt, 32)
        if retry_after_s is not None:
            delay = retry_after_s
        return min(delay, self.max_backoff_s)

    def _log_rejected(self, exc: _RejectedError, n: int, kept: bool = False) -> None:
        if isinstance(exc, _AuthError):
            self.auth_error = f"InfluxDB at {self._endpoint} refused the credentials ({exc}): {CREDENTIALS_HINT}"
            now = time.monotonic()
            if now - self._auth_logged >= WARN_INTERVAL_S:  # an error, not a warning: the operator must act
                self._auth_logged = now
                log.error("%s; %d points %s", self.auth_error, n, "kept in the spool" if kept else "failed")
        else:
            self._warn.warning("rejected", "InfluxDB %s rejected %d points (not retried): %s",
                               self._endpoint, n, exc)

    # --- spool mode ---------------------------------------------------------------------------
    def _send_or_spool(self, batch: list[str]) -> None:
        """One attempt; on a transient failure (or a refusal in KEPT_STATUSES) the batch goes to the spool."""
        try:
            self._transport.send(batch)
        except (_TransientError, _RejectedError) as exc:
            if _kept(exc):
                self._attempt_failed(exc, len(batch))
                self._to_spool(batch)
                return
            assert isinstance(exc, _RejectedError)
            with self._cond:
                self._counters["batches_failed_attempts"] += 1
                self._fail_locked(len(batch))
            self._log_rejected(exc, len(batch))
            log.debug("first lines of the rejected batch:\n%s", "\n".join(batch[:3]))
            return
        except Exception:
            with self._cond:
                self._counters["batches_failed_attempts"] += 1
                self._fail_locked(len(batch))
            log.exception("InfluxDB write to %s: unexpected error, %d points failed", self._endpoint, len(batch))
            return
        with self._cond:
            self._written_locked(len(batch))
            self._failures = 0

    def _to_spool(self, batch: list[str]) -> None:
        assert self.spool is not None
        dropped = self.spool.put(batch)  # the bound may drop the oldest batches: those points are lost, and done
        with self._cond:
            self._counters["points_spooled"] += len(batch)
            self._counters["points_dropped_spool_full"] += dropped
            self._done += dropped
            if self._outage_since is None:
                self._outage_since = time.monotonic()
            self._cond.notify_all()

    def _attempt_failed(self, exc: Exception, n: int) -> None:
        """Count a failed attempt in spool mode and schedule the next replay with backoff."""
        with self._cond:
            self._counters["batches_failed_attempts"] += 1
            self._try_now = False
            delay = self._backoff(self._failures, getattr(exc, "retry_after_s", None))
            self._failures += 1
            self._retry_at = time.monotonic() + delay
            if isinstance(exc, _AuthError):
                self._counters["auth_failures"] += 1
            self._cond.notify_all()
        if isinstance(exc, _AuthError):
            self._log_rejected(exc, n, kept=True)
        elif isinstance(exc, _RejectedError):
            self._warn.warning("kept_404", "InfluxDB at %s refused the write (%s): kept in the spool and retried; "
                               "create the %s or fix its name", self._endpoint, exc,
                               "database" if self.settings.api == "v1" else "bucket (and org)")
        else:
            assert self.spool is not None  # spool mode only
            self._warn.warning("spooling", "InfluxDB write to %s failed (%s): %d points in the spool %s, next "
                               "attempt in %.1f s", self._endpoint, exc, self.spool.points + n, self.spool.path, delay)

    def _replay(self) -> None:
        """Send the spool's oldest batches (up to batch_size points) in one request."""
        assert self.spool is not None
        ids, lines = self.spool.peek(self.settings.batch_size)
        if not ids:
            return
        try:
            self._transport.send(lines)
        except (_TransientError, _RejectedError) as exc:
            if _kept(exc):
                self._attempt_failed(exc, 0)
                return
            assert isinstance(exc, _RejectedError)
            n = self.spool.remove(ids)
            with self._cond:
                self._counters["batches_failed_attempts"] += 1
                self._fail_locked(n)
            self._log_rejected(exc, n)
            log.debug("first lines of the rejected batch:\n%s", "\n".join(lines[:3]))
            return
        except Exception:
            n = self.spool.remove(ids)  # a batch the library cannot send would block the spool forever
            with self._cond:
                self._counters["batches_failed_attempts"] += 1
                self._fail_locked(n)
            log.exception("InfluxDB write to %s: unexpected error replaying the spool, %d points failed",
                          self._endpoint, n)
            return
        n = self.spool.remove(ids)
        with self._cond:
            self._written_locked(n)
            self._counters["points_replayed"] += n
            self._failures = 0
            self._try_now = False
            self._retry_at = 0.0
            outage = self._outage_since
            if not len(self.spool):
                self._outage_since = None
        if not len(self.spool) and outage is not None:
            log.info("InfluxDB at %s takes writes again: the spool is replayed (outage of %.1f s, %d points "
                     "replayed so far)", self._endpoint, time.monotonic() - outage, self._counters["points_replayed"])

    def _written_locked(self, n: int) -> None:
        self._counters["points_written"] += n
        self._counters["batches_written"] += 1
        self._done += n
        self._cond.notify_all()

    def _fail_locked(self, n_points: int, batches: int = 1) -> None:
        """Count ``n_points`` as failed and done (caller holds ``_cond``)."""
        self._counters["points_failed"] += n_points
        self._counters["batches_failed"] += batches
        self._done += n_points
        self._cond.notify_all()
