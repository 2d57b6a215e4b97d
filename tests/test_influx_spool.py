"""The InfluxDB writer's on-disk spool (analysis/influx_spool.py) and the writer in spool mode, against a real
influxd: outages, restarts, a full spool, an unreachable server at start, rejected credentials, secrets files."""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from servers import InfluxDB1Server, VictoriaMetricsServer, free_port, http_post

from analysis.influx_sink import InfluxSink
from analysis.influx_spool import InfluxSpool, spool_name
from analysis.influx_writer import InfluxWriter, line
from jointmon.config import (
    ENV_INFLUX_PASSWORD,
    ENV_INFLUX_PASSWORD_FILE,
    ENV_INFLUX_SPOOL_DIR,
    ENV_INFLUX_TOKEN,
    ENV_INFLUX_TOKEN_FILE,
    InfluxSettings,
)
from jointmon.errors import ConfigError

T0 = time.time_ns() - 120_000_000_000  # two minutes ago: inside every retention window


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (ENV_INFLUX_TOKEN, ENV_INFLUX_PASSWORD, ENV_INFLUX_TOKEN_FILE, ENV_INFLUX_PASSWORD_FILE,
                 ENV_INFLUX_SPOOL_DIR):
        monkeypatch.delenv(name, raising=False)


def points(start: int, n: int, series: str = "a") -> list[str]:
    """``n`` points of one series, 20 ms apart (50 Hz), field ``seq`` = their index from ``start``."""
    return [line("m", {"s": series}, {"seq": i, "deg": i * 0.5}, T0 + i * 20_000_000) for i in range(start, start + n)]


def settings(url: str, spool_dir: Path | None, **kw: Any) -> InfluxSettings:
    kw.setdefault("database", "jointmon_test")
    return InfluxSettings(url=url, api="v1", batch_size=kw.pop("batch_size", 100), flush_interval_s=0.05,
                          spool_dir=str(spool_dir) if spool_dir else None, **kw)


def adds_up(c: dict[str, int]) -> bool:
    return c["points_received"] + c["points_resumed"] == (
        c["points_written"] + c["points_failed"] + c["points_dropped_buffer_full"] + c["points_dropped_spool_full"]
        + c["points_pending"])


def seqs(influx: InfluxDB1Server, series: str = "a") -> list[int]:
    return [r["seq"] for r in influx.rows(f"SELECT seq FROM m WHERE s = '{series}'")]


# --- the spool alone ------------------------------------------------------------------------
def test_spool_keeps_order_bound_and_survives_reopen(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s.spool"
    sp = InfluxSpool(path, max_bytes=10**6)
    for k in range(5):
        assert sp.put(points(k * 10, 10)) == 0
    assert (sp.points, sp.batches) == (50, 5)
    ids, lines = sp.peek(25)  # whole batches only, at most 25 points
    assert len(ids) == 2 and lines == points(0, 20)
    assert sp.peek(1)[1] == points(0, 10)  # at least one batch
    assert sp.remove(ids) == 20 and sp.points == 30
    with pytest.raises(ConfigError, match="in use by another process"):
        InfluxSpool(path)
    sp.close()

    sp = InfluxSpool(path, max_bytes=10**6)  # a restart: what was left, in order
    assert sp.counters["points_resumed"] == 30 and sp.counters["batches_resumed"] == 3
    assert sp.peek(1000)[1] == points(20, 30)
    # Full: the oldest batches go first, counted and logged.
    size = sp.size_bytes // sp.batches
    sp.close()
    sp = InfluxSpool(path, max_bytes=int(size * 3.5))
    caplog.set_level(logging.WARNING, logger="jointmon.influx.spool")
    dropped = sp.put(points(50, 10))
    assert dropped == 10 and sp.counters["points_dropped"] == 10 and sp.counters["batches_dropped"] == 1
    assert sp.peek(1000)[1] == points(30, 30)
    assert any("spool" in r.getMessage() and "full" in r.getMessage() and "10 points" in r.getMessage()
               for r in caplog.records)
    assert sp.put(points(0, 100_000)) == 100_000  # larger than the whole spool: dropped itself, counted
    assert sp.counters["points_dropped"] == 100_010 and sp.points == 30
    sp.close()


def test_spool_name_is_per_destination() -> None:
    a = spool_name("http://h:8086", "v1", "db")
    assert a != spool_name("http://h:8086", "v2", "db") != spool_name("http://h:8087", "v1", "db")
    assert re.fullmatch(r"influx-v1-h_8086_db-[0-9a-f]{10}\.spool", a)


# --- the writer with a spool, against influxd ------------------------------------------------
def test_outage_spooled_and_replayed_in_order(influxdb1: InfluxDB1Server, tmp_path: Path) -> None:
    """Server down mid-stream: batches go to the spool; back up: replayed oldest first (a later write of the
    same point wins, so the order shows in what is stored), nothing lost."""
    w = InfluxWriter(settings(influxdb1.url, tmp_path), retry_backoff_s=0.05, max_backoff_s=0.2)
    try:
        w.write(points(0, 500))
        assert w.flush(10)
        influxdb1.stop()
        for k in range(10):  # 10 x 100 points while the server is down ...
            w.write(points(500 + k * 100, 100))
            time.sleep(0.02)
        # ... and the same timestamps again with another series value: replayed in order, the last write wins
        w.write([ln.replace("seq=", "seq=1").replace("i,", "i,", 1) for ln in points(500, 100)])
        deadline = time.monotonic() + 10
        while w.counters["points_spooled"] < 1100 and time.monotonic() < deadline:
            time.sleep(0.02)
        c = w.counters
        assert c["points_spooled"] == 1100 and c["spool_points"] == 1100 and c["points_written"] == 500, c
        assert c["batches_failed_attempts"] >= 1 and adds_up(c)
        influxdb1.start()
        t = time.monotonic()
        assert w.flush(15)
        replay_s = time.monotonic() - t
        c = w.counters
    finally:
        w.close()
    assert (c["points_written"], c["points_replayed"], c["points_pending"], c["spool_points"]) == (1600, 1100, 0, 0)
    assert c["points_failed"] == c["points_dropped"] == 0 and adds_up(c)
    got = seqs(influxdb1)
    assert len(got) == 1500  # 1600 written, 100 of them rewrote points
    assert got[:500] == list(range(500)) and got[600:] == list(range(600, 1500))
    assert got[500:600] == [int(f"1{i}") for i in range(500, 600)]  # the rewrite came last
    assert replay_s < 5


def test_v2_outage_spooled_and_replayed(victoria_metrics: VictoriaMetricsServer, tmp_path: Path) -> None:
    """The same through the 2.x write API (influxdb-client): VictoriaMetrics down, then back."""
    s = InfluxSettings(url=victoria_metrics.url, api="v2", database="jointmon", token="t", batch_size=100,
                       flush_interval_s=0.05, spool_dir=str(tmp_path))
    w = InfluxWriter(s, retry_backoff_s=0.05, max_backoff_s=0.2)
    try:
        w.write(points(0, 300))
        assert w.flush(10)
        victoria_metrics.stop()
        w.write(points(300, 700))
        assert w.flush(1) is False
        assert w.counters["spool_points"] == 700
        victoria_metrics.start()
        assert w.flush(15)
        c = w.counters
    finally:
        w.close()
    assert (c["points_written"], c["points_replayed"], c["points_failed"], c["points_pending"]) == (1000, 700, 0, 0)
    series = victoria_metrics.export('{__name__="m_seq"}', min_samples=1000)
    assert sorted(int(v) for s_ in series for v in s_["values"]) == list(range(1000))


def test_close_in_outage_keeps_the_spool_for_the_next_start(influxdb1: InfluxDB1Server, tmp_path: Path) -> None:
    influxdb1.stop()
    s = settings(influxdb1.url, tmp_path)
    w = InfluxWriter(s, retry_backoff_s=0.05, max_backoff_s=0.2)
    w.write(points(0, 250))
    t = time.monotonic()
    w.close(timeout_s=10)
    assert time.monotonic() - t < 3  # does not wait out the outage
    c = w.counters
    assert (c["points_pending"], c["points_failed"], c["spool_points"]) == (250, 0, 250) and adds_up(c)

    influxdb1.start()
    w2 = InfluxWriter(s, retry_backoff_s=0.05)  # "the process restarted"
    try:
        assert w2.counters["points_resumed"] == 250 and w2.counters["points_pending"] == 250
        w2.write(points(250, 50))
        assert w2.flush(10)
        c = w2.counters
    finally:
        w2.close()
    # The new points queued behind the resumed ones (through the spool: order is kept).
    assert (c["points_written"], c["points_replayed"], c["points_pending"]) == (300, 300, 0) and adds_up(c)
    assert seqs(influxdb1) == list(range(300))  # resumed first, then the new points


def test_full_spool_drops_the_oldest_counted_and_logged(influxdb1: InfluxDB1Server, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    influxdb1.stop()
    sp = InfluxSpool(tmp_path / "small.spool", max_bytes=6000)  # ~ a few hundred points compressed
    w = InfluxWriter(settings(influxdb1.url, None), spool=sp, retry_backoff_s=0.05, max_backoff_s=0.2)
    try:
        for k in range(40):
            w.write(points(k * 100, 100))
            time.sleep(0.01)
        deadline = time.monotonic() + 10
        while w.counters["points_spooled"] < 4000 and time.monotonic() < deadline:
            time.sleep(0.02)
        c = w.counters
        assert c["points_spooled"] == 4000 and c["points_dropped_spool_full"] > 0 and adds_up(c)
        assert c["spool_bytes"] <= 6000
        kept = c["spool_points"]
        assert kept + c["points_dropped_spool_full"] == 4000
        influxdb1.start()
        assert w.flush(10) is False  # False: points were dropped since the last flush
        c = w.counters
    finally:
        w.close()
    assert c["points_written"] == kept and c["points_pending"] == 0 and adds_up(c)
    assert seqs(influxdb1) == list(range(4000 - kept, 4000))  # the newest kept, in order
    assert any("spool" in r.getMessage() and "full" in r.getMessage() and "dropped" in r.getMessage()
               for r in caplog.records)


def test_unreachable_at_start_then_up(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """No server at start: the sink starts anyway (logged), points wait in the spool; the server comes up
    on that port later and gets all of them."""
    caplog.set_level(logging.WARNING, logger="jointmon.influx")
    port = free_port()
    s = settings(f"http://127.0.0.1:{port}", tmp_path)
    sink = InfluxSink(s, InfluxWriter(s, retry_backoff_s=0.05, max_backoff_s=0.3))
    assert any("does not answer" in r.getMessage() and "spool" in r.getMessage() for r in caplog.records)
    sink.writer.write(points(0, 300))
    with InfluxDB1Server(port=port, workdir=tmp_path / "influxd", database="jointmon_test") as influx:
        assert sink.writer.flush(10)
        c = sink.writer.counters
        sink.close()
        assert c["points_written"] == 300 and c["points_spooled"] > 0 and c["points_failed"] == 0
        assert seqs(influx) == list(range(300))


def test_missing_database_kept_until_created(influxdb1: InfluxDB1Server, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """With a spool, 404 (no such database: not created yet) keeps the points and retries (without one it
    fails them: test_influx_writer); the start-up check says so clearly."""
    caplog.set_level(logging.WARNING, logger="jointmon.influx")
    s = settings(influxdb1.url, tmp_path, database="created_late")
    with pytest.raises(ConfigError, match="database not found.*check the database name"):
        InfluxSink(s)
    w = InfluxWriter(s, retry_backoff_s=0.05, max_backoff_s=0.2)
    try:
        w.write(points(0, 120))
        assert w.flush(1) is False
        c = w.counters
        assert (c["points_failed"], c["spool_points"], c["points_written"]) == (0, 120, 0)
        influxdb1.create_database("created_late")
        assert w.flush(10)
    finally:
        w.close()
    assert w.counters["points_written"] == 120
    assert [r["seq"] for r in influxdb1.rows("SELECT seq FROM m", db="created_late")] == list(range(120))
    assert any("kept in the spool" in r.getMessage() and "create the database" in r.getMessage()
               for r in caplog.records)


class _AuthInfluxDB(InfluxDB1Server):
    """influxd with authentication on and one admin user (created before any other, as influxd requires)."""

    user, password = "jm_admin", "right-pw"

    def _command(self) -> list[str]:
        cmd = super()._command()
        self.config_path.write_text(self.config_path.read_text().replace("auth-enabled = false",
                                                                          "auth-enabled = true"))
        return cmd

    def _after_start(self) -> None:
        q = f"CREATE USER {self.user} WITH PASSWORD '{self.password}' WITH ALL PRIVILEGES"
        status, body = http_post(f"{self.url}/query", {"q": q})
        assert status == 200 or b"already exists" in body, body
        status, body = http_post(self._authed("/query"), {"q": "CREATE DATABASE jointmon_test"})
        assert status == 200, body

    def _authed(self, path: str) -> str:
        return f"{self.url}{path}?{urllib.parse.urlencode({'u': self.user, 'p': self.password})}"

    def count(self) -> int:
        status, body = http_post(self._authed("/query"), {"q": "SELECT count(seq) FROM m", "db": "jointmon_test"})
        assert status == 200, body
        series = json.loads(body)["results"][0].get("series")
        return series[0]["values"][0][1] if series else 0


def test_bad_credentials_clear_error_and_spool_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    try:
        server = _AuthInfluxDB(workdir=tmp_path / "influxd")
    except Exception as exc:  # noqa: BLE001 - influxd not installed: as the fixtures do
        pytest.skip(str(exc))
    with server:
        secret = tmp_path / "influx_password"
        secret.write_text("wrong-pw\n")
        monkeypatch.setenv(ENV_INFLUX_PASSWORD_FILE, str(secret))
        s = InfluxSettings.from_env(url=server.url, api="v1", database="jointmon_test", username=server.user,
                                    batch_size=100, flush_interval_s=0.05, spool_dir=str(tmp_path / "spool"))
        assert "wrong-pw" not in repr(s)
        # At start: a clear error naming what to check, not the secret.
        with pytest.raises(ConfigError, match=r"refused the credentials \(HTTP 401.*JOINTMON_INFLUX_PASSWORD") as err:
            InfluxSink(s)
        assert "wrong-pw" not in str(err.value)
        # A writer already running when the credentials stop working: an error logged, points kept.
        caplog.set_level(logging.ERROR, logger="jointmon.influx")
        w = InfluxWriter(s, retry_backoff_s=0.05, max_backoff_s=0.2)
        w.write(points(0, 200))
        assert w.flush(2) is False
        w.close(timeout_s=5)
        c = w.counters
        assert c["auth_failures"] >= 1 and c["points_failed"] == 0 and c["spool_points"] == 200
        assert w.auth_error and "JOINTMON_INFLUX_PASSWORD" in w.auth_error
        assert any(r.levelno == logging.ERROR and "refused the credentials" in r.getMessage() for r in caplog.records)
        # Fixed secret, restart: the spool is replayed.
        secret.write_text("right-pw\n")
        s2 = InfluxSettings.from_env(url=server.url, api="v1", database="jointmon_test", username=server.user,
                                     batch_size=100, flush_interval_s=0.05, spool_dir=str(tmp_path / "spool"))
        sink = InfluxSink(s2)
        assert sink.writer.flush(10)
        sink.close()
        assert sink.writer.counters["points_replayed"] == 200 and server.count() == 200


# --- secrets and spool settings from the environment ---------------------------------------------
def test_secrets_from_env_or_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "token"
    token.write_text("tok-from-file\n")
    monkeypatch.setenv(ENV_INFLUX_TOKEN_FILE, str(token))
    monkeypatch.setenv(ENV_INFLUX_SPOOL_DIR, str(tmp_path / "spool"))
    s = InfluxSettings.from_env()
    assert s.token == "tok-from-file" and s.spool_dir == str(tmp_path / "spool")
    assert "tok-from-file" not in repr(s)
    monkeypatch.setenv(ENV_INFLUX_TOKEN, "tok-env")
    with pytest.raises(ConfigError, match="both"):
        InfluxSettings.from_env()
    monkeypatch.delenv(ENV_INFLUX_TOKEN_FILE)
    assert InfluxSettings.from_env().token == "tok-env"
    monkeypatch.setenv(ENV_INFLUX_PASSWORD_FILE, str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="JOINTMON_INFLUX_PASSWORD_FILE.*cannot read"):
        InfluxSettings.from_env()
    (tmp_path / "empty").write_text("\n")
    monkeypatch.setenv(ENV_INFLUX_PASSWORD_FILE, str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="empty"):
        InfluxSettings.from_env()
    with pytest.raises(ConfigError, match="no credentials in the URL"):
        InfluxSettings(url="http://user:pw@host:8086")
