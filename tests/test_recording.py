"""Session recordings (jointmon.recording, docs/recording-format.md): the file round trip, damaged
files, and record -> replay -> analysis giving exactly the live run's events (through Mosquitto)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from analysis.mqtt_service import AnalysisService
from analysis.results_store import SqliteResults
from firmware_sim.replay import ReplayLink, ReplayPlayer, replay_recording
from firmware_sim.session import simulate_squat_session
from jointmon.config import MqttSettings
from jointmon.errors import RecordingError
from jointmon.live_session import run_session
from jointmon.messages import JointEvent
from jointmon.recording import (
    FILE_HEADER,
    RECORD_HEADER,
    RecordedSensor,
    RecordingWriter,
    read_recording,
)
from sensor_gateway.gateway import Gateway, SensorBinding
from sensor_gateway.mqtt_publisher import MqttPublisher
from sensor_gateway.recorder import FrameCollector, GatewayRecorder, frames_from_recording, record_simulated_session

SENSORS = [RecordedSensor(0, "JM-THIGH-01", "C4:7C:8D:6A:1E:01", "ath-001", "left_knee", "thigh", {"imu_rate_hz": 200}),
           RecordedSensor(1, "JM-SHANK-02", "C4:7C:8D:6A:1E:02", "ath-001", "left_knee", "shank", {})]
LABELS = [{"type": "click", "joint": "left_knee", "t_start_s": 1.25, "t_end_s": 1.2625, "magnitude": 18.5},
          {"type": "valgus", "joint": "left_knee", "t_start_s": 3.0, "t_end_s": 4.5, "magnitude": 9.0, "rep": 2}]


def random_packets(n: int, seed: int = 0) -> list[tuple[int, int, str, bytes]]:
    rng = np.random.default_rng(seed)
    t = 1_700_000_000_000_000_000 + np.cumsum(rng.integers(0, 7_000_000, n))
    streams = rng.choice(["imu", "mic", "status"], n)
    lengths = rng.choice([0, 1, 14, 134, 214, 244, 600], n)
    return [(int(t[i]), int(rng.integers(0, 2)), str(streams[i]), rng.bytes(int(lengths[i]))) for i in range(n)]


def write(path: Path, packets: list[tuple[int, int, str, bytes]], truth: dict | None = None) -> None:
    with RecordingWriter(path, sensors=SENSORS, meta={"gateway_id": "gw-test", "t0_wall_ns": 1_700_000_000 * 10**9,
                                                       "seed": 3}) as w:
        for arrival, sensor, stream, data in packets:
            w.add_packet(sensor, stream, arrival, data)
        w.add_link_event(0, "end", packets[-1][0] if packets else 0)
        w.set_labels(LABELS)
        if truth is not None:
            w.set_truth(truth)


def rewrite_member(src: Path, dst: Path, member: str, transform) -> None:
    """Copy a ZIP, passing one member's bytes through ``transform`` (None drops the member)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == member:
                data = transform(data)
                if data is None:
                    continue
            zout.writestr(info, data)


# ---------------------------------------------------------------- file round trip


def test_round_trip_is_lossless(tmp_path: Path) -> None:
    packets = random_packets(12_000)  # ~2.5 MB: crosses the reader's 1 MB chunks many times
    truth = {"t_s": np.arange(400) / 200, "flexion_deg": np.linspace(0, 90, 400), "pitch_deg.thigh": np.ones(400)}
    path = tmp_path / "s.jmrec"
    write(path, packets, truth)
    assert not list(tmp_path.glob("*.part*"))  # the temporary packet file is gone
    rec = read_recording(path)
    assert list(rec.packets()) == packets  # bytes, arrival times, sensors, streams and order
    assert rec.n_packets == len(packets) and rec.n_records == len(packets) + 1
    assert list(rec.packets(link_events=True))[-1] == (packets[-1][0], 0, "link", b"end")
    assert rec.sensors == SENSORS and rec.labels == LABELS
    assert rec.meta == {"gateway_id": "gw-test", "t0_wall_ns": 1_700_000_000 * 10**9, "seed": 3}
    assert rec.truth.keys() == truth.keys()
    for k, v in truth.items():
        assert rec.truth[k].dtype == v.dtype and np.array_equal(rec.truth[k], v)
    assert rec.first_arrival_ns == packets[0][0] and rec.last_arrival_ns == packets[-1][0]
    counts = Counter((s, st) for _, s, st, _ in packets)
    assert rec.packet_counts[1] == {st: n for (s, st), n in counts.items() if s == 1}
    with zipfile.ZipFile(path) as zf:  # the documented layout
        assert [i.filename for i in zf.infolist()] == ["recording.json", "packets.bin", "truth.npz"]
        assert zf.getinfo("packets.bin").compress_type == zipfile.ZIP_STORED
        doc = json.loads(zf.read("recording.json"))
        raw = zf.read("packets.bin")
    assert doc["format"] == "jointmon-recording" and doc["version"] == 1
    assert raw[:16] == b"JMPACKET" + struct.pack("<II", 1, 16)
    arrival, sensor, code, flags, length, reserved = struct.unpack_from("<qHBBHH", raw, 16)
    assert (arrival, sensor, length, reserved, flags) == (packets[0][0], packets[0][1], len(packets[0][3]), 0, 0)
    assert code == {"imu": 1, "mic": 2, "status": 3}[packets[0][2]]
    assert len(raw) == 16 + sum(16 + len(p[3]) for p in packets) + 16 + 3


def test_empty_recording_and_no_truth(tmp_path: Path) -> None:
    path = tmp_path / "empty.jmrec"
    with RecordingWriter(path, sensors=[], meta={}):
        pass
    rec = read_recording(path)
    assert list(rec.packets()) == [] and rec.n_packets == 0 and rec.truth == {} and rec.duration_s == 0.0


def test_writer_rejects_what_it_cannot_store(tmp_path: Path) -> None:
    with RecordingWriter(tmp_path / "w.jmrec", sensors=SENSORS, meta={}) as w:
        with pytest.raises(ValueError, match="stream"):
            w.add_packet(0, "video", 0, b"x")
        with pytest.raises(ValueError, match="u16"):
            w.add_packet(0, "imu", 0, bytes(70_000))
        with pytest.raises(ValueError, match="JSON"):
            w.set_labels([{"type": "click", "t_start_s": 1.0, "magnitude": float("nan")}])
        with pytest.raises(ValueError, match="t_start_s"):
            w.set_labels([{"type": "click"}])
        with pytest.raises(ValueError, match="dtype"):
            w.set_truth({"x": np.array([object()])})


def test_context_manager_keeps_packets_after_an_exception(tmp_path: Path) -> None:
    path = tmp_path / "crash.jmrec"
    with pytest.raises(RuntimeError), RecordingWriter(path, sensors=SENSORS, meta={}) as w:
        w.add_packet(0, "imu", 5, b"abc")
        raise RuntimeError("gateway crashed")
    assert list(read_recording(path).packets()) == [(5, 0, "imu", b"abc")]


# ---------------------------------------------------------------- damaged files


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.jmrec"
    write(path, random_packets(500, seed=1))
    return path


def _error(path: Path, *, iterate: bool = False) -> str:
    with pytest.raises(RecordingError) as info:
        rec = read_recording(path)
        if iterate:
            list(rec.packets())
    message = str(info.value)
    assert message.startswith(str(path)), message  # every error names the file
    return message


def test_not_a_zip_or_missing(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.jmrec"
    garbage.write_bytes(b"this is not a zip file at all")
    assert "not a valid ZIP" in _error(garbage)
    assert "no such file" in _error(tmp_path / "nothing.jmrec")


def test_missing_members(good: Path, tmp_path: Path) -> None:
    for member in ("recording.json", "packets.bin"):
        bad = tmp_path / f"no-{member}.jmrec"
        rewrite_member(good, bad, member, lambda _d: None)
        assert f"missing member {member!r}" in _error(bad)


def test_wrong_format_or_version(good: Path, tmp_path: Path) -> None:
    def with_doc(**changes):
        return lambda d: json.dumps({**json.loads(d), **changes}).encode()

    newer = tmp_path / "v2.jmrec"
    rewrite_member(good, newer, "recording.json", with_doc(version=2))
    assert "version 2 is not supported" in _error(newer)
    other = tmp_path / "other.jmrec"
    rewrite_member(good, other, "recording.json", with_doc(format="something-else"))
    assert "not a jointmon recording" in _error(other)
    broken = tmp_path / "broken-json.jmrec"
    rewrite_member(good, broken, "recording.json", lambda d: d[:-5])
    assert "invalid JSON" in _error(broken)


def test_truncated_packets(good: Path, tmp_path: Path) -> None:
    short = tmp_path / "short.jmrec"
    rewrite_member(good, short, "packets.bin", lambda d: d[:-100])
    assert "packets.bin truncated" in _error(short)
    # Cut, and recording.json "fixed" to match: the torn last record is still found.
    torn = tmp_path / "torn.jmrec"
    rewrite_member(good, torn, "packets.bin", lambda d: d[:-10])
    tmp = tmp_path / "torn2.jmrec"
    size = zipfile.ZipFile(torn).getinfo("packets.bin").file_size
    rewrite_member(torn, tmp, "recording.json",
                   lambda d: json.dumps({**json.loads(d), "packets": {**json.loads(d)["packets"], "bytes": size}})
                   .encode())
    assert "truncated: record" in _error(tmp, iterate=True)
    # A file cut in the middle (copy interrupted) is not a readable ZIP any more.
    cut = tmp_path / "cut.jmrec"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "not a valid ZIP" in _error(cut)


def test_corrupted_packets_fail_the_zip_crc(good: Path, tmp_path: Path) -> None:
    bad = tmp_path / "flipped.jmrec"
    bad.write_bytes(good.read_bytes())
    with zipfile.ZipFile(good) as zf:
        info = zf.getinfo("packets.bin")
    with bad.open("r+b") as f:  # flip a byte inside the stored packets.bin data
        f.seek(info.header_offset + 30 + len(info.filename) + len(info.extra) + FILE_HEADER.size +
               RECORD_HEADER.size + 1)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0xFF]))
    assert "damaged" in _error(bad, iterate=True)


# ---------------------------------------------------------------- simulated sessions, offline


@pytest.fixture(scope="module")
def short_sim():
    return simulate_squat_session(6.0, seed=3, n_clicks=2)


def test_frames_from_recording_are_the_live_frames_and_the_simulated_samples(short_sim, tmp_path: Path) -> None:
    live = FrameCollector(keep=True)
    summary = record_simulated_session(short_sim, tmp_path / "s.jmrec", publisher=live)
    rec = read_recording(tmp_path / "s.jmrec")
    assert summary.packets == rec.n_packets > 0
    counters: Counter[str] = Counter()
    frames = list(frames_from_recording(rec, counters=counters))
    key = [(str(t), f.frame_seq, f.first_index, f.t0_ns, f.flags, f.rate_hz, f.scale.tobytes(), f.samples.tobytes())
           for t, f in frames]
    assert key == [(str(t), f.frame_seq, f.first_index, f.t0_ns, f.flags, f.rate_hz, f.scale.tobytes(),
                    f.samples.tobytes()) for t, f in live.frames]
    for name, sig in short_sim.sensors.items():
        imu = np.concatenate([f.samples for t, f in frames if t.sensor == name and t.stream == "imu"])
        mic = np.concatenate([f.samples for t, f in frames if t.sensor == name and t.stream == "mic"])
        assert np.array_equal(imu, sig.imu_raw) and np.array_equal(mic.ravel(), sig.mic_raw)
    assert counters["packets_received"] == rec.packet_counts[0]["imu"] + rec.packet_counts[0]["mic"] + \
        rec.packet_counts[1]["imu"] + rec.packet_counts[1]["mic"]
    assert counters["gap_samples"] == 0
    # Labels, truth, sensors and the session-time mapping went into the file.
    assert [lb["t_start_s"] for lb in rec.labels] == [lb.t_start_s for lb in short_sim.labels]
    assert np.array_equal(rec.truth["flexion_deg"], short_sim.truth_flexion_deg)
    assert np.array_equal(rec.truth["t_s"], short_sim.truth_t_s)
    assert {s.segment for s in rec.sensors} == {"thigh", "shank"}
    assert rec.sensor(0).info["imu_rate_hz"] == 200 and rec.sensor(0).info["status"]["battery_pct"] == 100
    t0 = rec.meta["t0_wall_ns"]
    first_imu = next(f for t, f in frames if t.stream == "imu")
    assert abs(first_imu.t0_ns - t0) <= 1000  # sample 0 is session time 0 (to the packets' 1 us resolution)


def test_replay_at_speed_paces_and_keeps_the_frames(short_sim, tmp_path: Path) -> None:
    path = tmp_path / "s.jmrec"
    live = FrameCollector(keep=True)
    record_simulated_session(short_sim, path, publisher=live)
    rec = read_recording(path)
    for speed in (None, 20.0):
        out = FrameCollector(keep=True)
        t = time.monotonic()
        result = replay_recording(rec, out, speed=speed, offset_ns=7 * 10**9 if speed else None)
        elapsed = time.monotonic() - t
        if speed:
            assert elapsed >= rec.duration_s / speed * 0.9
        assert result.offset_ns % 10**9 == 0
        assert [(str(t), f.t0_ns - result.offset_ns, f.samples.tobytes()) for t, f in out.frames] == \
            [(str(t), f.t0_ns, f.samples.tobytes()) for t, f in live.frames]


def test_a_replay_link_alone(short_sim, tmp_path: Path) -> None:
    """One sensor replayed by itself through the SensorLink interface."""
    path = tmp_path / "s.jmrec"
    record_simulated_session(short_sim, path)
    rec = read_recording(path)
    link = ReplayLink(rec, 1, None)
    out = FrameCollector(keep=True)
    import asyncio

    asyncio.run(Gateway(out, [SensorBinding(link, "ath-001", "left_knee", rec.sensor(1).segment)]).run())
    sig = short_sim.sensors[rec.sensor(1).segment]
    assert np.array_equal(np.concatenate([f.samples for t, f in out.frames if t.stream == "imu"]), sig.imu_raw)
    assert link.player.counters["skipped"] > 0  # the other sensor's records
    with pytest.raises(ValueError):
        ReplayPlayer(rec, speed=0)


# ---------------------------------------------------------------- record -> replay -> analysis


def _key(e: JointEvent, offset_ns: int = 0) -> tuple:
    # Wall-clock details (e.g. a rep's t_peak_ns) move with the replay offset like t_ns; all else is equal.
    details = {k: v - offset_ns if k.endswith("_ns") else v for k, v in e.details.items()}
    return (e.type, e.athlete, e.joint, e.sensor, e.stream_t_s, e.magnitude, e.confidence, e.t_ns - offset_ns, details)


def test_record_replay_analysis_gives_the_live_events(mosquitto, tmp_path: Path) -> None:
    sim = simulate_squat_session(20.0, seed=7, n_clicks=5)
    sim.link = {"drop_rate": 0.005, "jitter_ms": 8.0}  # gaps and jittered arrivals must replay too
    settings = MqttSettings.from_url(mosquitto.url)
    path = tmp_path / "live.jmrec"
    with GatewayRecorder(path) as recorder:
        live = run_session(sim, settings, SqliteResults(tmp_path / "live.sqlite"), "live", realtime=False,
                           recorder=recorder)
    recording = read_recording(path)
    assert recording.meta["link"] == sim.link and recording.meta["seed"] == 7
    assert live.gateway_counters["lost_packets"] > 0

    events: list[JointEvent] = []
    service = AnalysisService(settings, SqliteResults(tmp_path / "replay.sqlite"), "replay",
                              worker_id="analysis-replay", on_event=events.append)
    service.start()
    publisher = MqttPublisher(settings, "gw-replay")
    publisher.start()
    try:
        result = replay_recording(recording, publisher, speed=None)
        assert publisher.wait_acked(30)
        assert service.wait_quiet(timeout_s=60)
    finally:
        publisher.stop()
        service.stop()

    assert result.gateway_counters == live.gateway_counters
    assert publisher.counters["samples_published"] == live.samples_published
    assert {e.type for e in live.events} >= {"click", "rep"}
    assert len(events) == len(live.events)
    # Exactly: stream_t_s, magnitude, confidence, details; t_ns up to the constant replay offset.
    assert [_key(e, result.offset_ns) for e in events] == [_key(e) for e in live.events]
    assert result.offset_ns % 10**9 == 0


# ---------------------------------------------------------------- the commands


def jointmon(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jointmon.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("command", ["record", "replay"])
def test_commands_have_help(command: str) -> None:
    out = jointmon(command, "--help")
    assert out.returncode == 0 and out.stdout.startswith(f"usage: jointmon {command}")
    assert "--speed" in out.stdout and "--mqtt" in out.stdout


def test_record_and_replay_commands(mosquitto, tmp_path: Path) -> None:
    settings = MqttSettings.from_url(mosquitto.url)
    path = tmp_path / "cli.jmrec"
    analysed = []
    for step, command in enumerate((
        ("record", str(path), "--duration", "4", "--seed", "2", "--fast", "--mqtt", mosquitto.url),
        ("replay", str(path), "--speed", "max", "--mqtt", mosquitto.url, "--no-progress"),
    )):
        # A fresh analysis per run: to one service the replay's frames would be duplicates of the live ones.
        service = AnalysisService(settings, SqliteResults(tmp_path / f"a{step}.sqlite"), "cli",
                                  worker_id=f"analysis-cli-{step}")
        service.start()
        try:
            out = jointmon(*command)
            assert out.returncode == 0, out.stderr
            assert service.wait_quiet(timeout_s=30)
            analysed.append(dict(service.samples))
        finally:
            service.stop()
        assert ("recorded" if step == 0 else "replayed") in out.stdout and str(path) in out.stdout
    assert sum(analysed[0].values()) == 2 * 4 * (200 + 16000) and read_recording(path).meta["seed"] == 2
    assert analysed[1] == analysed[0]  # the replay delivered every sample again

    assert jointmon("replay", str(path), "--speed", "0").returncode == 2  # argparse: positive or max
    bad = tmp_path / "bad.jmrec"
    bad.write_bytes(b"nope")
    out = jointmon("replay", str(bad), "--speed", "max", "--mqtt", mosquitto.url)
    assert out.returncode == 2 and str(bad) in out.stderr
    out = jointmon("record", str(tmp_path / "x.jmrec"), "--scenario", "s.toml", "--seed", "1")
    assert out.returncode == 2 and "--scenario" in out.stderr
