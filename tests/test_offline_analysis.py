"""Offline analysis (``jointmon analyze PATH``): a session folder gives the clicks a direct run of the
same int16 data gives, and the hand-made example folder (not written by jointmon) is analysed right."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sim_frames import direct_frames

from analysis.event_matching import match_events
from analysis.offline import analyze_frames, analyze_path
from analysis.session_folder import frames_from_session_folder, read_session_folder, write_session_folder
from firmware_sim.session import SimulatedSession, simulate_squat_session
from jointmon.errors import JointmonError
from jointmon.frames import encode_frame

ROOT = Path(__file__).resolve().parents[1]
HANDMADE = ROOT / "examples" / "handmade_session"
HANDMADE_CLICKS_S = (2.900, 4.300)  # where examples/handmade_session/README.md says the clicks are
CLICK_TOLERANCE_S = 0.010
MIC_RATE_HZ = 16000


@pytest.fixture(scope="module")
def sim() -> SimulatedSession:
    return simulate_squat_session(10, seed=3)


def click_times(result) -> np.ndarray:
    return np.array([result.event_t_s(e) for e in result.events if e.type == "click"])


@pytest.fixture(scope="module")
def direct(sim):
    return analyze_frames(direct_frames(sim), "direct")


@pytest.mark.parametrize("bits", [16, 24])
def test_folder_analysis_finds_the_simulated_clicks(sim, direct, tmp_path, bits):
    folder = write_session_folder(tmp_path / "s", sim, mic_bits=bits)
    result = analyze_path(folder)
    truth = np.array([lb.t_start_s for lb in sim.labels if lb.type == "click"])
    found = click_times(result)
    m = match_events(found, truth, CLICK_TOLERANCE_S)
    assert len(truth) == 5
    assert len(m.pairs) == 5 and not m.false_positives and not m.missed, (found, truth)
    assert np.abs(m.errors_s).max() < 0.001  # in fact within a few samples of the labelled onset

    # The same click times as the simulator's int16 data run directly: 16-bit is bit-exact, 24-bit
    # (re-quantised per frame at peak/32767) within one mic sample.
    ref = click_times(direct)
    assert found.shape == ref.shape
    assert np.abs(found - ref).max() <= (0 if bits == 16 else 1) / MIC_RATE_HZ + 1e-9

    # Reps and angles agree with the direct run too (IMU through CSV + per-frame scales).
    key = (sim.athlete, sim.joint)
    assert len(result.reps[key]) == len(direct.reps[key]) == sim.rep_count == 3
    t_f, ang_f = result.angles[key]
    t_d, ang_d = direct.angles[key]
    np.testing.assert_array_equal(t_f, t_d)
    for name in ("flexion_deg", "abduction_deg"):
        np.testing.assert_array_equal(np.isnan(ang_f[name]), np.isnan(ang_d[name]))
        assert np.nanmax(np.abs(ang_f[name] - ang_d[name]), initial=0.0) < 0.05  # degrees
    assert result.duration_s == pytest.approx(10.0)
    assert not {k: v for k, v in result.counters.items() if k.startswith("dropped") or k == "frames_missing"}
    assert sum(result.samples.values()) == 2 * (10 * 200 + 10 * 16000)


def test_encoded_messages_give_the_same_events(sim, tmp_path):
    """Recordings may hold (topic string, payload bytes): decoded and checked like MQTT messages."""
    imported = read_session_folder(write_session_folder(tmp_path / "s", sim))
    frames = list(frames_from_session_folder(imported))
    a = analyze_frames(frames, "x")
    b = analyze_frames([(str(t), encode_frame(f)) for t, f in frames] + [("jointmon/v1/data/bad", b"")], "x")
    assert [e.to_json() for e in a.events] == [e.to_json() for e in b.events]
    assert b.counters["dropped_bad_topic"] == 1 and b.counters["frames"] == a.counters["frames"] == len(frames)


def test_json_lines_carry_every_event(sim, tmp_path):
    result = analyze_path(write_session_folder(tmp_path / "s", sim))
    records = [json.loads(line) for line in result.json_lines()]
    assert len(records) == len(result.events) == 5 + 3
    assert [r["type"] for r in records].count("click") == 5
    for r, e in zip(records, result.events, strict=True):
        assert list(r)[:8] == ["t_s", "type", "joint", "confidence", "magnitude", "sensor", "athlete", "session"]
        assert r["t_s"] == pytest.approx(result.event_t_s(e), abs=1e-6)
        assert r["joint"] == "left_knee" and r["athlete"] == "ath-001" and 0 <= r["confidence"] <= 1
        if r["type"] == "click":
            assert r["t_s"] == pytest.approx(r["stream_t_s"], abs=1e-6)  # folder streams all start at t_s = 0
    assert [r["t_s"] for r in records] == sorted(r["t_s"] for r in records)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    # --no-history: these tests are about the events; an athlete history would be written into the checkout.
    return subprocess.run([sys.executable, "-m", "jointmon.cli", "analyze", "--no-history", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_cli_analyzes_the_handmade_folder():
    proc = run_cli(str(HANDMADE))
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    clicks = [r["t_s"] for r in records if r["type"] == "click"]
    m = match_events(np.array(clicks), np.array(HANDMADE_CLICKS_S), CLICK_TOLERANCE_S)
    assert len(m.pairs) == 2 and not m.false_positives and not m.missed, clicks
    assert np.abs(m.errors_s).max() < 0.001
    reps = [r for r in records if r["type"] == "rep"]
    assert len(reps) == 1 and 85 < reps[0]["magnitude"] < 95  # one squat to 90 degrees
    assert {r["athlete"] for r in records} == {"ath-hand-01"} and {r["joint"] for r in records} == {"left_knee"}
    assert "analysed 6.00 s" in proc.stderr and "2 click, 1 rep" in proc.stderr


def test_cli_out_file_and_labels_agree(tmp_path):
    out = tmp_path / "o" / "events.jsonl"
    proc = run_cli(str(HANDMADE), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    lines = out.read_text().splitlines()
    assert len(lines) == 3
    labels = read_session_folder(HANDMADE).labels
    assert [lb.t_start_s for lb in labels if lb.type == "click"] == list(HANDMADE_CLICKS_S)


def test_cli_error_names_the_file(tmp_path, sim):
    folder = write_session_folder(tmp_path / "s", sim)
    (folder / "mic_shank.wav").write_bytes(b"")
    proc = run_cli(str(folder))
    assert proc.returncode == 2
    assert f"jointmon analyze: error: {folder / 'mic_shank.wav'}: empty file" in proc.stderr


def test_not_a_session_path(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(JointmonError, match="not a session folder"):
        analyze_path(tmp_path / "x.txt")
    with pytest.raises(JointmonError, match="no such file or folder"):
        analyze_path(tmp_path / "missing.jmrec")


def test_damaged_recording_is_a_clear_error(tmp_path):
    rec = tmp_path / "a.jmrec"
    rec.write_bytes(b"\0")
    with pytest.raises(JointmonError, match=r"a.jmrec: not a jointmon recording \(not a valid ZIP file"):
        analyze_path(rec)
