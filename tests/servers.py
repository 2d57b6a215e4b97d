"""Real servers for tests and benchmarks: mosquitto, InfluxDB 1.x (influxd) and VictoriaMetrics.

Each class starts its server as a child process on a free loopback port, with its own config and
data directory, waits until it answers, and stops it cleanly. ``stop()`` + ``start()`` restarts
it on the SAME port and data directory (to test what clients do while a server is down);
``kill()`` simulates a crash. They are plain context managers, usable outside pytest::

    with InfluxDB1Server(database="bench") as influx:
        ...  # influx.url, influx.query("SELECT ...")

A missing binary raises :class:`ServerNotInstalledError`, which names the Debian package to install.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Self

from jointmon.embedded_broker import MOSQUITTO_MAX_QUEUED_MESSAGES, mosquitto_config
from jointmon.processes import LOOPBACK, SBIN_DIRS, find_program, free_port


class ServerNotInstalledError(RuntimeError):
    """The server's binary is not installed; ``apt_package`` says what to install."""

    def __init__(self, binary: str, apt_package: str) -> None:
        self.binary = binary
        self.apt_package = apt_package
        super().__init__(f"{binary} not found on PATH or in {', '.join(SBIN_DIRS)}: "
                         f"install it with `apt-get install {apt_package}` (or `make servers`)")


class ServerStartError(RuntimeError):
    """The server exited or did not answer in time; the message ends with its log tail."""


def find_binary(name: str, apt_package: str) -> str:
    """Absolute path of executable ``name`` (PATH, then the sbin directories)."""
    found = find_program(name)
    if found is None:
        raise ServerNotInstalledError(name, apt_package)
    return found


# Loaded here, not in the forked child, where dlopen() could deadlock on a lock another thread held.
_LIBC: ctypes.CDLL | None = None
if sys.platform == "linux":
    with contextlib.suppress(OSError):
        _LIBC = ctypes.CDLL("libc.so.6", use_errno=True)


def _die_with_parent() -> None:
    """Runs in the child before exec: have the kernel SIGKILL it when its parent dies.

    Why: a test runner killed by a hard timeout would otherwise leave servers running forever.
    """
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def http_get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    """GET ``url``; (status, body) also for HTTP error statuses."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_post(url: str, data: bytes | dict[str, str], timeout_s: float = 5.0) -> tuple[int, bytes]:
    """POST a body (bytes) or a form (dict); (status, body) also for HTTP error statuses."""
    body = urllib.parse.urlencode(data).encode() if isinstance(data, dict) else data
    req = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class ServerProcess:
    """Common lifecycle: config files, child process, readiness polling, stop/kill/restart."""

    name = "server"
    binary_name = ""
    apt_package = ""

    def __init__(self, *, workdir: str | Path | None = None, port: int | None = None,
                 start_timeout_s: float = 15.0) -> None:
        """``workdir``: config, data and logs (a fresh temp dir if None, then removed by close());
        ``port``: fixed port (default: a free one); ``start_timeout_s``: readiness wait, seconds."""
        self.binary = find_binary(self.binary_name, self.apt_package)
        self.host = LOOPBACK
        self.port = port or free_port()
        self.start_timeout_s = start_timeout_s
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"jointmon-{self.name}-")) if workdir is None else Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{self.name}.log"  # the child's stdout + stderr
        self.proc: subprocess.Popen[bytes] | None = None

    # --- to override ------------------------------------------------------------------------
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        """True once the server answers requests."""
        raise NotImplementedError

    def _after_start(self) -> None:
        """Hook run once the server is ready (e.g. create a database)."""

    def _extra_log_paths(self) -> list[Path]:
        return []

    # --- lifecycle ----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> Self:
        """Start (or restart) on ``self.port`` with the same data directory; wait until ready."""
        if self.running:
            return self
        cmd = self._command()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.workdir,
                                         preexec_fn=_die_with_parent if _LIBC is not None else None)
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise ServerStartError(f"{self.name} exited with code {code} at start "
                                       f"({' '.join(cmd)})\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if self._ready():
                    break
            if time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(f"{self.name} did not answer on {self.host}:{self.port} within "
                                       f"{self.start_timeout_s:.0f} s\n{self.log_tail()}")
            time.sleep(0.02)
        self._after_start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Graceful stop (SIGTERM), then SIGKILL after ``timeout_s``. Data stays for a restart."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """Crash the server (SIGKILL): whatever it had not saved is lost."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        """Stop, and delete the work directory if this object created it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of each log file, for error messages."""
        out = []
        for path in [self.log_path, *self._extra_log_paths()]:
            try:
                text = path.read_text(errors="replace").splitlines()[-lines:]
            except FileNotFoundError:
                continue
            out.append(f"--- {path} (last {len(text)} lines) ---\n" + "\n".join(text))
        return "\n".join(out) or f"(no log files in {self.workdir})"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.host}:{self.port} {'running' if self.running else 'stopped'}>"


class MosquittoServer(ServerProcess):
    """mosquitto 2.x on ``mqtt://127.0.0.1:PORT``, anonymous, with persistence in the work dir."""

    name = "mosquitto"
    binary_name = "mosquitto"
    apt_package = "mosquitto"

    def __init__(self, *, max_queued_messages: int = MOSQUITTO_MAX_QUEUED_MESSAGES, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_queued_messages = max_queued_messages
        self.config_path = self.workdir / "mosquitto.conf"
        self.broker_log_path = self.workdir / "mosquitto-broker.log"

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def _command(self) -> list[str]:
        self.config_path.write_text(mosquitto_config(self.port, self.workdir, self.host,
                                                     max_queued_messages=self.max_queued_messages,
                                                     log_path=self.broker_log_path))
        return [self.binary, "-c", str(self.config_path)]

    def _extra_log_paths(self) -> list[Path]:
        return [self.broker_log_path]

    def _ready(self) -> bool:
        # A real MQTT 3.1.1 CONNECT (clean session, empty client id) answered by CONNACK "accepted":
        # an open TCP port alone does not prove the broker serves MQTT yet.
        connect = bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 0x02, 0, 10, 0, 0])
        with socket.create_connection((self.host, self.port), timeout=1.0) as s:
            s.sendall(connect)
            ack = s.recv(4)
            s.sendall(bytes([0xE0, 0]))  # DISCONNECT
        return ack == bytes([0x20, 2, 0, 0])


class InfluxDB1Server(ServerProcess):
    """InfluxDB 1.x (``influxd``; Debian's 1.6) serving the v1 HTTP API on ``http://127.0.0.1:PORT``.

    ``database``: created at every start (``CREATE DATABASE`` is idempotent), kept in ``.database``.
    """

    name = "influxd"
    binary_name = "influxd"
    apt_package = "influxdb"

    def __init__(self, *, database: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.database = database
        self.rpc_port = free_port()  # the backup/restore RPC service, 8088 by default: must not clash
        self.config_path = self.workdir / "influxdb.conf"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _command(self) -> list[str]:
        d = self.workdir
        # Keys checked against `influxd config` of 1.6.7. influxd silently ignores unknown keys, and
        # Debian's build renamed upstream's `reporting-disabled = true` to `reporting-enabled = false`,
        # so both are written: each build reads its own and ignores the other.
        self.config_path.write_text(f"""\
reporting-enabled = false
reporting-disabled = true
bind-address = "{self.host}:{self.rpc_port}"

[meta]
  dir = "{d}/meta"
  logging-enabled = false

[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false

[monitor]
  # no _internal database: nothing but our writes in the data dir
  store-enabled = false

[http]
  enabled = true
  bind-address = "{self.host}:{self.port}"
  auth-enabled = false
  log-enabled = false

[logging]
  level = "warn"
  suppress-logo = true

[continuous_queries]
  log-enabled = false
""")
        return [self.binary, "run", "-config", str(self.config_path)]

    def _ready(self) -> bool:
        status, _ = http_get(f"{self.url}/ping", timeout_s=1.0)
        return status == 204

    def _after_start(self) -> None:
        if self.database:
            self.create_database(self.database)

    def create_database(self, name: str) -> None:
        """``CREATE DATABASE name`` (idempotent); sets ``.database`` if it was unset."""
        self.query(f'CREATE DATABASE "{_quote_ident(name)}"', method="POST")
        if self.database is None:
            self.database = name

    def query(self, influxql: str, db: str | None = None, *, method: str = "GET") -> dict[str, Any]:
        """Run InfluxQL; the parsed JSON, timestamps as integer Unix ns (``epoch=ns``).

        Raises RuntimeError on an HTTP error or a statement error, so a typo does not look like
        an empty result.
        """
        params = {"q": influxql, "epoch": "ns"}
        if db or self.database:
            params["db"] = db or self.database or ""
        if method == "POST":
            status, body = http_post(f"{self.url}/query", params)
        else:
            status, body = http_get(f"{self.url}/query?{urllib.parse.urlencode(params)}")
        result: dict[str, Any] = json.loads(body or b"{}")
        errors = [result.get("error")] + [r.get("error") for r in result.get("results", [])]
        if status != 200 or any(errors):
            raise RuntimeError(f"influxd query {influxql!r}: HTTP {status}: {body[:500]!r}")
        return result

    def rows(self, influxql: str, db: str | None = None) -> list[dict[str, Any]]:
        """The rows of a single-statement query as dicts (column -> value), all series together."""
        out: list[dict[str, Any]] = []
        for series in self.query(influxql, db)["results"][0].get("series", []):
            for values in series["values"]:
                row = dict(zip(series["columns"], values, strict=True))
                row.update(series.get("tags") or {})
                out.append(row)
        return out


class VictoriaMetricsServer(ServerProcess):
    """VictoriaMetrics (single node) on ``http://127.0.0.1:PORT``: accepts InfluxDB line protocol.

    How line protocol lands in VictoriaMetrics (checked with Debian's victoria-metrics package):

    - ``measurement,tag=v field=1.5`` becomes the series ``measurement_field{tag="v"}``
      (``-influxMeasurementFieldSeparator``, default ``_``); tags become labels, unescaped.
    - Via ``/api/v2/write?bucket=B&org=O`` the bucket and org are NOT stored as labels; via the 1.x
      ``/write?db=D`` the database becomes the label ``db="D"`` (``-influxDBLabel``).
    - Values are float64: ``true``/``false`` -> 1/0, ``3i`` -> 3; string fields are not stored as
      text (this version stores them as 0), so do not assert on them.
    - Timestamps are truncated to milliseconds (``t_ns // 1_000_000``).
    - Floats keep 12 significant decimal digits (38.574914724974356 -> 38.574914725), and the
      values of one storage block share a decimal exponent: 1e-300 stored next to 1e300 in the
      same series reads back as 0.
    - The default retention of 1 month silently drops older samples (and the write still answers
      204), so we start it with ``-retentionPeriod=100y``.
    - Read-after-write: even after ``/internal/force_flush``, new series become visible to
      ``/api/v1/export`` only after ~1 s, so :meth:`export` can poll for a minimum sample count.
    """

    name = "victoria-metrics"
    binary_name = "victoria-metrics"
    apt_package = "victoria-metrics"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _command(self) -> list[str]:
        return [self.binary,
                f"-storageDataPath={self.workdir / 'data'}",
                f"-httpListenAddr={self.host}:{self.port}",
                "-retentionPeriod=100y",   # accept old test timestamps (see class docstring)
                "-search.latencyOffset=0s",  # queries would hide the last 30 s of samples otherwise
                "-search.disableCache",      # no cached query results between writes in a test
                "-loggerLevel=WARN"]

    def _ready(self) -> bool:
        status, body = http_get(f"{self.url}/health", timeout_s=1.0)
        return status == 200 and body.strip() == b"OK"

    def force_flush(self) -> None:
        """Make written samples searchable now rather than within ~1 s (in principle: see class doc)."""
        status, body = http_get(f"{self.url}/internal/force_flush")
        if status != 200:
            raise RuntimeError(f"victoria-metrics force_flush: HTTP {status}: {body[:300]!r}")

    def export(self, match: str, *, min_samples: int = 0, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Series matching the selector ``match`` (e.g. ``'{__name__=~"knee_.*"}'``) from /api/v1/export.

        Each item is ``{"metric": {"__name__": ..., label: value}, "values": [...],
        "timestamps": [Unix ms, ...]}``. Polls until the series hold at least ``min_samples``
        samples in total or ``timeout_s`` passes (then returns what there is).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            self.force_flush()
            status, body = http_get(f"{self.url}/api/v1/export?{urllib.parse.urlencode({'match[]': match})}")
            if status != 200:
                raise RuntimeError(f"victoria-metrics export {match!r}: HTTP {status}: {body[:300]!r}")
            series = [json.loads(ln) for ln in body.splitlines() if ln.strip()]
            if sum(len(s["values"]) for s in series) >= min_samples or time.monotonic() > deadline:
                return series
            time.sleep(0.05)


def _quote_ident(name: str) -> str:
    """Escape an InfluxQL double-quoted identifier."""
    return name.replace("\\", "\\\\").replace('"', '\\"')
