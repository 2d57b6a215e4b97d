"""InfluxWriter against real servers: influxd 1.x (v1 API) and VictoriaMetrics (2.x write API)."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable

import numpy as np
import pytest
from influxdb_client import Point, WritePrecision
from servers import InfluxDB1Server, VictoriaMetricsServer, free_port

from analysis.influx_writer import InfluxWriter, line, lines_from_arrays
from jointmon.config import InfluxSettings

# A few seconds before now: inside every retention window, and distinct from other tests' points.
T0 = time.time_ns() - 60_000_000_000

TAGS = {"athlete": "ath 001", "joint": "knee,left", "site": "a=b"}  # space, comma, equals: all need escaping
STRINGS = ['plain', 'say "hi"', r"back\slash", "comma, space=eq", ""]


def settings(url: str, api: str, database: str = "jointmon_test", **kw: object) -> InfluxSettings:
    kw.setdefault("flush_interval_s", 0.05)
    return InfluxSettings(url=url, api=api, database=database, org="jointmon", token="any", **kw)  # type: ignore[arg-type]


def assert_adds_up(c: dict[str, int]) -> None:
    assert c["points_received"] == (c["points_written"] + c["points_failed"] + c["points_dropped_buffer_full"]
                                    + c["points_pending"]), c


def wait_until(cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def sample_points(n: int, extremes: bool = True) -> list[tuple[str, dict[str, str], dict[str, object], int]]:
    """n points over three measurements (two with escaping), every field type, 1 ms apart + odd ns."""
    rng = random.Random(7)
    energies = [0.0, 1e-300, 1e300, -2.5] if extremes else [0.0, 1e-3, 1e6, -2.5]
    out = []
    for i in range(n):
        t = T0 + i * 1_000_000 + 123_457  # sub-ms part checks ns precision (v1) and ms truncation (VM)
        kind = i % 3
        if kind == 0:
            out.append(("knee_flexion", TAGS, {"deg": rng.uniform(-10, 140), "n": i}, t))
        elif kind == 1:
            out.append(("joint click", {**TAGS, "sensor": "shank"},
                        {"energy": rng.choice([*energies, rng.random()]), "count": -i * 10**12,
                         "ok": i % 2 == 0, "note": STRINGS[i % len(STRINGS)]}, t))
        else:
            out.append(("rep,count", {"athlete": "ath-002"}, {"reps": i, "valid": i % 4 == 1, "rom": float(i)}, t))
    return out


# --- line formatting ---------------------------------------------------------------------------
def test_line_matches_influxdb_client_point() -> None:
    fields = {"f": 1.25, "whole": 2.0, "i": -7, "b": True, "s": 'q"uo\\te, x=y', "odd key,=": 3}
    tags = {"b tag": "v,=x", "a": "1", "empty": ""}
    p = Point("m ,x").time(T0, WritePrecision.NS)
    for k, v in tags.items():
        p.tag(k, v)
    for k, v in fields.items():
        p.field(k, v)
    assert line("m ,x", tags, fields, T0) == p.to_line_protocol()
    assert line("m", {}, {"v": 1, "w": np.float64(0.5), "z": np.int32(3)}, T0) == f"m v=1i,w=0.5,z=3i {T0}"
    assert line("m", {}, {"v": math.nan, "w": 1.0}, T0) == f"m w=1 {T0}"  # NaN cannot be stored: left out
    with pytest.raises(ValueError, match="no field"):
        line("m", {}, {"v": math.inf}, T0)
    with pytest.raises(TypeError, match="t_ns"):
        line("m", {}, {"v": 1.0}, 1.7e18)  # type: ignore[arg-type]


def test_lines_from_arrays_matches_line() -> None:
    t = T0 + np.arange(6, dtype=np.int64) * 20_000_000  # 50 Hz
    deg = np.array([1.5, np.nan, -3.0, 1e-7, np.nan, 90.0])
    quality = np.array([np.nan, np.nan, 1.0, 2.0, np.nan, 3.0])
    fields = {"deg": deg, "quality": quality, "n": np.arange(6), "ok": np.arange(6) % 2 == 0}
    got = lines_from_arrays("knee flex", TAGS, fields, t)
    expected = [line("knee flex", TAGS, {k: v[i] for k, v in fields.items()}, int(t[i])) for i in range(6)]
    assert got == expected
    # Row 4: both floats NaN, but ints and bools remain, so every row is kept; only float-only rows vanish.
    assert len(lines_from_arrays("m", {}, {"deg": deg}, t)) == 4
    assert lines_from_arrays("m", {}, {"deg": deg[:1]}, t[:1]) == [f"m deg=1.5 {T0}"]
    with pytest.raises(TypeError, match="integer"):
        lines_from_arrays("m", {}, {"deg": deg}, t.astype(np.float64))
    with pytest.raises(ValueError, match="shape"):
        lines_from_arrays("m", {}, {"deg": deg[:3]}, t)


# --- v1: influxd ---------------------------------------------------------------------------------
def test_v1_roundtrip_exact_values(influxdb1: InfluxDB1Server) -> None:
    points = sample_points(300)
    with InfluxWriter(settings(influxdb1.url, "v1", batch_size=64)) as w:
        w.write(line(*p) for p in points)
        assert w.flush(10)
        c = w.counters
    assert c["points_written"] == 300 and c["points_failed"] == 0 and c["points_pending"] == 0
    assert c["batches_written"] == math.ceil(300 / 64)
    assert_adds_up(c)

    for measurement in ("knee_flexion", "joint click", "rep,count"):
        want = {(t, tuple(sorted(tags.items()))): fields for m, tags, fields, t in points if m == measurement}
        rows = influxdb1.rows(f'SELECT * FROM "{measurement}"')
        assert len(rows) == len(want) == 100
        for row in rows:
            tags = {k: row[k] for k in ("athlete", "joint", "site", "sensor") if row.get(k) is not None}
            fields = want[(row["time"], tuple(sorted(tags.items())))]  # exact ns timestamp and tags
            got = {k: row[k] for k in fields}
            assert got == fields
            # 1 == 1.0 == True in Python: check bools, ints and strings kept their types.
            assert {k: type(v) for k, v in got.items() if not isinstance(fields[k], float)} == \
                   {k: type(v) for k, v in fields.items() if not isinstance(v, float)}


def test_v1_server_down_then_up(influxdb1: InfluxDB1Server) -> None:
    influxdb1.stop()
    w = InfluxWriter(settings(influxdb1.url, "v1"), max_retries=10, retry_backoff_s=0.1)
    try:
        w.write(line("m", {"k": "v"}, {"v": i}, T0 + i) for i in range(200))
        wait_until(lambda: w.counters["batches_failed_attempts"] >= 1)
        assert w.counters["points_written"] == 0
        influxdb1.start()  # same port, same data directory
        assert w.flush(15)
        c = w.counters
    finally:
        w.close()
    assert c["points_written"] == 200 and c["points_failed"] == 0 and c["batches_failed_attempts"] >= 1
    assert_adds_up(c)
    assert influxdb1.rows('SELECT count("v") FROM "m"')[0]["count"] == 200


def test_v1_missing_database_is_rejected_not_retried(influxdb1: InfluxDB1Server,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="jointmon.influx")
    w = InfluxWriter(settings(influxdb1.url, "v1", database="no_such_db"), max_retries=5, retry_backoff_s=2.0)
    with w:
        w.write([line("m", {}, {"v": i}, T0 + i) for i in range(50)])
        t = time.monotonic()
        assert w.flush(10) is False
        assert time.monotonic() - t < 1.5  # a retry would have waited 2 s first
        c = w.counters
    assert c["points_failed"] == 50 and c["points_written"] == 0
    assert c["batches_failed_attempts"] == 1 and c["batches_failed"] == 1
    assert_adds_up(c)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("database not found" in m and "404" in m for m in warnings), warnings
    assert any(f"m v=0i {T0}" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)


def test_batching_by_size_and_time(influxdb1: InfluxDB1Server) -> None:
    with InfluxWriter(settings(influxdb1.url, "v1", batch_size=100, flush_interval_s=60.0)) as w:
        w.write([line("m", {}, {"v": i}, T0 + i) for i in range(1000)])
        # Full batches go at once, without flush(), though the interval is a minute.
        wait_until(lambda: w.counters["points_written"] == 1000)
        assert w.counters["batches_written"] == 10
        w.write([line("m", {}, {"v": i}, T0 + i) for i in range(1000, 1050)])
        time.sleep(0.2)
        assert w.counters["points_pending"] == 50  # a partial batch waits for the interval ...
        assert w.flush(5)  # ... or for flush()
        assert w.counters["batches_written"] == 11
    assert influxdb1.rows('SELECT count("v") FROM "m"')[0]["count"] == 1050

    with InfluxWriter(settings(influxdb1.url, "v1", batch_size=10_000, flush_interval_s=0.3)) as w:
        t = time.monotonic()
        w.write([line("m2", {}, {"v": i}, T0 + i) for i in range(5)])
        wait_until(lambda: w.counters["points_written"] == 5)
        assert 0.25 < time.monotonic() - t < 2.0  # sent by the interval alone
        assert w.counters["batches_written"] == 1


# --- v2: VictoriaMetrics ---------------------------------------------------------------------
def test_v2_roundtrip_victoria_metrics(victoria_metrics: VictoriaMetricsServer) -> None:
    # VictoriaMetrics stores numbers only (bool -> 0/1): no string fields here. Nor 1e-300 next to
    # 1e300 in one series: the values of a block share one decimal exponent (1e-300 reads back 0).
    points = [(m, tags, {k: v for k, v in f.items() if not isinstance(v, str)}, t)
              for m, tags, f, t in sample_points(240, extremes=False)]
    with InfluxWriter(settings(victoria_metrics.url, "v2", database="jointmon_bucket", batch_size=50)) as w:
        w.write(line(*p) for p in points)
        assert w.flush(10)
        c = w.counters
    assert c["points_written"] == 240 and c["batches_written"] == 5 and c["points_failed"] == 0
    assert_adds_up(c)

    want: dict[tuple[str, tuple[tuple[str, str], ...]], dict[int, float]] = {}
    for m, tags, fields, t in points:
        for k, v in fields.items():
            want.setdefault((f"{m}_{k}", tuple(sorted(tags.items()))), {})[t // 1_000_000] = float(v)
    n_samples = sum(len(v) for v in want.values())
    series = victoria_metrics.export('{__name__=~".+"}', min_samples=n_samples)
    got = {}
    for s in series:
        labels = dict(s["metric"])
        name = labels.pop("__name__")
        assert "db" not in labels and "bucket" not in labels  # the v2 bucket is not a label
        got[(name, tuple(sorted(labels.items())))] = dict(zip(s["timestamps"], s["values"], strict=True))
    # Names measurement_field, tags as unescaped labels, ms timestamps; VictoriaMetrics keeps
    # 12 significant decimal digits of a float.
    assert got.keys() == want.keys()
    for key, samples in want.items():
        assert got[key].keys() == samples.keys(), key
        assert got[key] == pytest.approx(samples, rel=1e-11, abs=0), key


# --- no server -------------------------------------------------------------------------------
@pytest.mark.parametrize("api", ["v1", "v2"])
def test_unreachable_server_counts_and_warns(api: str, caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with InfluxWriter(settings(url, api, batch_size=20), max_retries=2, retry_backoff_s=0.05) as w:
        w.write([line("m", {}, {"v": i}, T0 + i) for i in range(50)])
        t = time.monotonic()
        assert w.flush(10) is False
        assert time.monotonic() - t < 5
        c = w.counters
    assert c["points_failed"] == 50 and c["points_written"] == 0 and c["points_pending"] == 0
    assert c["batches_failed"] == 3 and c["batches_failed_attempts"] == 3 * 3  # 3 batches x (1 + 2 retries)
    assert_adds_up(c)
    warnings = [r.getMessage() for r in caplog.records if r.name == "jointmon.influx" and r.levelno == logging.WARNING]
    assert any("gave up on 20 points" in m for m in warnings), warnings
    assert any("retry 1/2" in m for m in warnings), warnings
    assert len(warnings) <= 4  # rate-limited: one per kind (retry, gave up), not one per attempt


def test_flush_and_close_respect_their_timeouts() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    w = InfluxWriter(settings(url, "v1"), max_retries=1000, retry_backoff_s=0.2)
    w.write([line("m", {}, {"v": i}, T0 + i) for i in range(30)])
    t = time.monotonic()
    assert w.flush(0.5) is False
    assert 0.45 < time.monotonic() - t < 1.5
    t = time.monotonic()
    w.close(timeout_s=0.5)
    assert time.monotonic() - t < 1.5
    c = w.counters
    assert c["points_failed"] == 30 and c["points_pending"] == 0  # given up at close, and counted
    assert_adds_up(c)
    with pytest.raises(RuntimeError, match="after close"):
        w.write(["m v=1"])


def test_full_buffer_drops_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with InfluxWriter(settings(url, "v1", flush_interval_s=60.0), max_retries=0, max_buffer_points=100) as w:
        w.write([line("m", {}, {"v": i}, T0 + i) for i in range(150)])
        c = w.counters
        assert c["points_dropped_buffer_full"] == 50 and c["points_pending"] == 100
        assert_adds_up(c)
        assert w.flush(5) is False
        with pytest.raises(TypeError):
            w.write("m v=1 1")  # a str, not a list of lines
    c = w.counters
    assert c["points_failed"] == 100 and c["points_received"] == 150
    assert_adds_up(c)
    assert any("buffer full" in r.getMessage() for r in caplog.records)
