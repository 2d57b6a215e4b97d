"""Session folder import/export: round trips within the stated quantisation, and a clear error,
naming the file (and line/column/key), for every malformed input."""

from __future__ import annotations

import shutil
import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from analysis.session_folder import (
    IMU_COLUMNS,
    SensorData,
    SessionLabel,
    frames_from_session_folder,
    imu_rate_from_times,
    read_mic_wav,
    read_session_folder,
    write_session_arrays,
    write_session_folder,
)
from firmware_sim.session import simulate_squat_session
from jointmon.errors import JointmonError, SessionFolderError
from jointmon.packets import StreamType

# Written precision: half of the last written digit (t_s 1e-6 s, accel 1e-6 g, gyro 1e-4 deg/s),
# plus float64 rounding of the decimal text.
T_TOL_S, ACCEL_TOL_G, GYRO_TOL_DPS = 0.5e-6 + 1e-12, 0.5e-6 + 1e-12, 0.5e-4 + 1e-10


@pytest.fixture(scope="module")
def sim():
    return simulate_squat_session(10, seed=3)


@pytest.mark.parametrize("bits", [16, 24])
def test_simulated_session_round_trip(sim, tmp_path, bits):
    folder = write_session_folder(tmp_path / "s", sim, mic_bits=bits)
    got = read_session_folder(folder)
    assert got.athlete == sim.athlete and got.exercise == "squat" and got.session == "sim-seed3"
    assert got.joints == [sim.joint] and got.start_ns == 0
    assert set(got.sensors) == set(sim.sensors)
    for name, sig in sim.sensors.items():
        s = got.sensors[name]
        assert (s.joint_id, s.segment) == (sim.joint, name)
        assert s.imu_rate_hz == sig.imu_rate_hz == 200
        assert s.t_s.shape == (sig.imu_raw.shape[0],)
        assert np.abs(s.t_s - sig.imu_t_s()).max() <= T_TOL_S
        assert np.abs(s.accel_g - sig.accel_g()).max() <= ACCEL_TOL_G
        assert np.abs(s.gyro_dps - sig.gyro_dps()).max() <= GYRO_TOL_DPS
        # The simulator's microphone is 16-bit: exact at 16 bits, and at 24 bits (LSB x 256).
        assert s.mic_rate_hz == 16000 and s.mic_bits == bits
        np.testing.assert_array_equal(s.mic, sig.mic_fs())
    truth = [(lb.t_start_s, lb.t_end_s, lb.type, lb.joint, lb.magnitude) for lb in sim.labels]
    assert len(truth) == 5
    assert [(lb.t_start_s, lb.t_end_s, lb.type, lb.joint, lb.magnitude) for lb in got.labels] == truth


def test_array_writer_round_trip_24_bit_float_mic_and_labels(tmp_path):
    rng = np.random.default_rng(5)
    n, rate = 250, 104.0  # a typical IMU output rate that is not a round number of ms
    t = np.arange(n) / rate
    mic = np.clip(0.3 * rng.standard_normal(22050), -0.99, 0.99)  # +1.0 itself would saturate to 1 - 2**-23
    sensors = [SensorData("arm", "shoulder", "right", "upper_arm", t, rng.normal(0, 1, (n, 3)),
                          rng.normal(0, 300, (n, 3)), mic, 22050),
               SensorData("back", "shoulder", "right", "trunk", t, rng.normal(0, 1, (n, 3)),
                          rng.normal(0, 300, (n, 3)))]
    labels = [SessionLabel(0.5, 0.75, "instability", "right_shoulder", float("nan")),
              SessionLabel(1.0 / 3.0, 1.0, "click", "right_shoulder", 17.25)]
    write_session_arrays(tmp_path / "f", sensors, athlete="ath-7", exercise=None, labels=labels,
                         mic_bits={"arm": 24})
    got = read_session_folder(tmp_path / "f")
    assert got.exercise is None and got.athlete == "ath-7" and got.session == "f"
    arm, back = got.sensors["arm"], got.sensors["back"]
    assert arm.imu_rate_hz == pytest.approx(104.0, rel=1e-9) and back.mic is None
    assert (arm.mic_bits, arm.mic_rate_hz) == (24, 22050)
    assert np.abs(arm.mic - mic).max() <= 0.5 / 2**23 + 1e-12  # 24-bit rounding
    assert np.abs(back.gyro_dps - sensors[1].gyro_dps).max() <= GYRO_TOL_DPS
    assert got.labels[1] == labels[1]
    assert np.isnan(got.labels[0].magnitude) and got.labels[0].type == "instability"


def test_extensible_24_bit_wav_is_read(tmp_path):
    """WAVE_FORMAT_EXTENSIBLE (what ffmpeg and many recorders write at 24 bit) with a PCM sub-format."""
    x = np.array([0, 1, -1, 2**23 - 1, -(2**23), 12345], dtype="<i4")
    data = x.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    guid_pcm = b"\x01\x00\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, 1, 48000, 48000 * 3, 3, 24, 22, 24, 4) + guid_pcm
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path = tmp_path / "m.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    samples, rate, bits = read_mic_wav(path)
    assert (rate, bits) == (48000, 24)
    np.testing.assert_array_equal(samples, x / 2**23)


def test_frames_are_time_ordered_50ms_and_finely_quantised(sim, tmp_path):
    got = read_session_folder(write_session_folder(tmp_path / "s", sim, mic_bits=24))
    frames = list(frames_from_session_folder(got))
    t0 = [f.t0_ns for _, f in frames]
    assert t0 == sorted(t0)
    for name, s in got.sensors.items():
        imu = [f for t, f in frames if t.sensor == name and t.stream == "imu"]
        mic = [f for t, f in frames if t.sensor == name and t.stream == "mic"]
        assert {f.count for f in imu} == {10} and {f.count for f in mic} == {800}  # 50 ms at 200 Hz / 16 kHz
        assert [f.frame_seq for f in imu] == list(range(len(imu)))
        assert all(f.stream == StreamType.IMU and np.all(f.scale > 0) for f in imu)
        phys = np.vstack([f.physical() for f in imu])
        data = np.hstack((s.accel_g, s.gyro_dps))
        # Per frame and channel: step = frame peak / 32767, so the error is at most half a step.
        peak = np.vstack([np.abs(data[f.first_index:f.first_index + f.count]).max(axis=0) for f in imu])
        err = np.abs(phys - data).reshape(len(imu), 10, 6).max(axis=1)
        assert np.all(err <= peak / 32767 / 2 * (1 + 1e-9))
        assert np.abs(phys[:, :3] - data[:, :3]).max() < 2e-5  # g
        assert np.abs(phys[:, 3:] - data[:, 3:]).max() < 4e-3  # deg/s
        mic_phys = np.concatenate([f.physical()[:, 0] for f in mic])
        assert np.abs(mic_phys - s.mic).max() <= np.abs(s.mic).max() / 32767 / 2 * (1 + 1e-9)
        assert [f.t0_ns for f in imu[:3]] == [0, 50_000_000, 100_000_000]


def test_sixteen_bit_mic_frames_are_lossless(sim, tmp_path):
    got = read_session_folder(write_session_folder(tmp_path / "s", sim, mic_bits=16))
    for name, sig in sim.sensors.items():
        mic = [f for t, f in frames_from_session_folder(got) if t.sensor == name and t.stream == "mic"]
        np.testing.assert_array_equal(np.concatenate([f.samples[:, 0] for f in mic]), sig.mic_raw)
        assert all(f.scale[0] == 1 / 32768 for f in mic)


def test_rate_is_derived_from_timestamps_and_snapped():
    assert imu_rate_from_times(np.round(np.arange(500) / 200, 3), "x") == 200.0
    jittered = np.arange(1000) / 100 + np.random.default_rng(1).uniform(-0.002, 0.002, 1000)
    assert imu_rate_from_times(jittered, "x") == pytest.approx(100.0, rel=1e-3)
    assert imu_rate_from_times(np.arange(100) / 99.5, "x") == pytest.approx(99.5)  # not snapped: it would drift


def test_drifting_rate_is_an_error_naming_the_line():
    # Every interval within tolerance of the median, but the rate slides from 100 Hz to 80 Hz.
    t = np.cumsum(np.linspace(0.01, 0.0125, 400))
    with pytest.raises(SessionFolderError, match=r"^imu_x.csv: line \d+: t_s .* off a uniform .* rate drifts"):
        imu_rate_from_times(t, "imu_x.csv")


# --- errors -------------------------------------------------------------------------------------

@pytest.fixture
def folder(tmp_path) -> Path:
    """A small valid folder: left knee, thigh (mic 16 kHz 16-bit) and shank (mic 8 kHz 24-bit), 1 s."""
    n = 100
    t = np.arange(n) / 100
    acc = np.tile([0.0, 0.0, 1.0], (n, 1))
    gyr = np.zeros((n, 3))
    rng = np.random.default_rng(0)
    sensors = [SensorData("thigh", "knee", "left", "thigh", t, acc, gyr, 0.01 * rng.standard_normal(16000), 16000),
               SensorData("shank", "knee", "left", "shank", t, acc, gyr, 0.01 * rng.standard_normal(8000), 8000)]
    path = write_session_arrays(tmp_path / "sess", sensors, labels=[SessionLabel(0.2, 0.21, "click", "left_knee", 20)],
                                mic_bits={"thigh": 16, "shank": 24})
    read_session_folder(path)  # valid as written
    return path


def _wav(path: Path, rate: int = 16000, channels: int = 1, width: int = 2, frames: int = 1600) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(b"\x01\x00" * (frames * channels * width // 2))


def _replace_header(path: Path, header: str) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join([header, *lines[1:]]) + "\n")


def _add_column(path: Path) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0] + ",temp_c", *(ln + ",21.5" for ln in lines[1:])]) + "\n")


def _edit_line(path: Path, lineno: int, fn) -> None:
    lines = path.read_text().splitlines()
    lines[lineno - 1] = fn(lines[lineno - 1])
    path.write_text("\n".join(lines) + "\n")


def _set_cell(path: Path, lineno: int, col: int, value: str) -> None:
    _edit_line(path, lineno, lambda ln: ",".join(value if i == col else c for i, c in enumerate(ln.split(","))))


def _toml_sub(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def _float_wav(path: Path) -> None:
    data = np.zeros(800, "<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, 16000, 64000, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


NEW_HEADER = "t_s,ax_g,ay_g,az_g,gx_dps,gy_dps,temp_c"
CASES = {
    "wrong column set": ("imu_thigh.csv", lambda p: _replace_header(p, NEW_HEADER),
                         "missing column(s) gz_dps; unexpected column(s) temp_c; the header must be exactly "
                         + ",".join(IMU_COLUMNS)),
    "extra column": ("imu_thigh.csv", _add_column, "unexpected column(s) temp_c"),
    "wrong unit": ("imu_shank.csv", lambda p: _replace_header(p, "t_s,ax_ms2,ay_g,az_g,gx_dps,gy_dps,gz_dps"),
                   "column 2 is 'ax_ms2': wrong unit 'ms2', expected 'ax_g' (acceleration in g"),
    "wrong time unit": ("imu_shank.csv", lambda p: _replace_header(p, "t_ms,ax_g,ay_g,az_g,gx_dps,gy_dps,gz_dps"),
                        "column 1 is 't_ms': wrong unit 'ms', expected 't_s' (seconds)"),
    "gyro in rad/s": ("imu_shank.csv", lambda p: _replace_header(p, "t_s,ax_g,ay_g,az_g,gx_rads,gy_dps,gz_dps"),
                      "column 5 is 'gx_rads': wrong unit 'rads', expected 'gx_dps' (angular rate in deg/s)"),
    "column order": ("imu_thigh.csv", lambda p: _replace_header(p, "t_s,ay_g,ax_g,az_g,gx_dps,gy_dps,gz_dps"),
                     "columns in the wrong order"),
    "wav 4 kHz": ("mic_thigh.wav", lambda p: _wav(p, rate=4000), "wrong sample rate 4000 Hz: expected at least 8000"),
    "stereo wav": ("mic_thigh.wav", lambda p: _wav(p, channels=2), "2 channels: expected mono"),
    "8-bit wav": ("mic_shank.wav", lambda p: _wav(p, width=1), "8-bit samples: expected 16- or 24-bit PCM"),
    "32-bit wav": ("mic_shank.wav", lambda p: _wav(p, width=4), "32-bit samples: expected 16- or 24-bit PCM"),
    "float wav": ("mic_shank.wav", _float_wav, "IEEE float samples: expected integer PCM"),
    "empty csv": ("imu_thigh.csv", lambda p: p.write_bytes(b""), "empty file: expected the header"),
    "header-only csv": ("imu_thigh.csv", lambda p: p.write_text(",".join(IMU_COLUMNS) + "\n"), "no data rows"),
    "empty wav file": ("mic_thigh.wav", lambda p: p.write_bytes(b""), "empty file: not a WAV file"),
    "wav without samples": ("mic_thigh.wav", lambda p: _wav(p, frames=0), "empty WAV: no audio samples"),
    "not a wav": ("mic_thigh.wav", lambda p: p.write_text("hello"), "unreadable WAV: no RIFF/WAVE header"),
    "missing session.toml": ("session.toml", lambda p: p.unlink(), "missing: every session folder needs"),
    "sensor without imu file": ("imu_shank.csv", lambda p: p.unlink(),
                                "missing: [sensors.shank] in"),
    "bad joint": ("session.toml", lambda p: _toml_sub(p, 'joint = "knee"', 'joint = "elbow"'),
                  "[sensors.thigh] joint = 'elbow': expected one of knee, shoulder"),
    "bad side": ("session.toml", lambda p: _toml_sub(p, 'side = "left"', 'side = "lft"'),
                 "[sensors.thigh] side = 'lft': expected one of left, right"),
    "bad segment": ("session.toml", lambda p: _toml_sub(p, 'segment = "shank"', 'segment = "foot"'),
                    "[sensors.shank] segment = 'foot': expected one of thigh, shank, upper_arm, trunk"),
    "segment of another joint": ("session.toml", lambda p: _toml_sub(p, 'segment = "shank"', 'segment = "trunk"'),
                                 "[sensors.shank] segment = 'trunk' is not a knee segment (one of thigh, shank)"),
    "missing key": ("session.toml", lambda p: _toml_sub(p, 'side = "left"\n', ""),
                    "[sensors.thigh] has no 'side' key (one of left, right)"),
    "unknown key": ("session.toml", lambda p: _toml_sub(p, 'athlete = ', 'exercice = "squat"\nathlete = '),
                    "unknown key(s) exercice"),
    "invalid toml": ("session.toml", lambda p: p.write_text("athlete = \n"), "not valid TOML"),
    "two sensors on one segment": ("session.toml", lambda p: _toml_sub(p, 'segment = "shank"', 'segment = "thigh"'),
                                   "[sensors.shank] and [sensors.thigh] are both the left knee's thigh"),
    "athlete not a topic level": ("session.toml", lambda p: _toml_sub(p, '"ath-import"', '"Jane Doe"'),
                                  "athlete='Jane Doe' is not a valid topic level"),
    "naive start time": ("session.toml",
                         lambda p: _toml_sub(p, 'athlete = ', 'start = 2026-03-02T09:30:00\nathlete = '),
                         "start = 2026-03-02T09:30:00: expected a date-time with a UTC offset"),
    "non-increasing t_s": ("imu_thigh.csv", lambda p: _set_cell(p, 12, 0, "0.090000"),
                           "line 12: t_s 0.09 is not after the previous 0.09 (t_s must increase)"),
    "missing sample": ("imu_shank.csv", lambda p: _edit_line(p, 40, lambda ln: ""),
                       "line 41: t_s jumps by 0.02 s where the sampling interval is 0.01 s (100 Hz): samples missing"),
    "comma inside a value": ("imu_thigh.csv", lambda p: _set_cell(p, 7, 3, "1,0"), "line 7: 8 values, expected 7"),
    "text in a cell": ("imu_thigh.csv", lambda p: _set_cell(p, 9, 5, "n/a"), "line 9, column gy_dps: 'n/a' is not a"),
    "nan in a cell": ("imu_thigh.csv", lambda p: _set_cell(p, 9, 2, "nan"), "line 9, column ay_g: 'nan' is not a"),
    "single sample": ("imu_thigh.csv", lambda p: p.write_text(",".join(IMU_COLUMNS) + "\n0,0,0,1,0,0,0\n"),
                      "1 sample(s): at least 2 are needed"),
    "different imu rates": ("imu_shank.csv", lambda p: _set_cells_rate(p, 50),
                            "IMU rate 50 Hz differs from imu_thigh.csv's 100 Hz"),
    "stray imu file": ("imu_knee2.csv", lambda p: shutil.copy(p.with_name("imu_thigh.csv"), p),
                       "no [sensors.knee2] table in"),
    "label type": ("labels.csv", lambda p: _set_cell(p, 2, 2, "pop"), "line 2, column type: 'pop' is not one of"),
    "label joint": ("labels.csv", lambda p: _set_cell(p, 2, 3, "right_knee"),
                    "line 2, column joint: 'right_knee' is not a joint of this session (left_knee)"),
    "label end before start": ("labels.csv", lambda p: _set_cell(p, 2, 1, "0.1"), "line 2: t_end_s 0.1 is before"),
    "label wrong unit": ("labels.csv", lambda p: _replace_header(p, "t_start_ms,t_end_s,type,joint,magnitude"),
                         "column 1 is 't_start_ms': wrong unit 'ms', expected 't_start_s'"),
}


def _set_cells_rate(path: Path, rate: float) -> None:
    lines = path.read_text().splitlines()
    rows = [ln.split(",") for ln in lines[1:]]
    for i, r in enumerate(rows):
        r[0] = f"{i / rate:.6f}"
    path.write_text("\n".join([lines[0], *(",".join(r) for r in rows)]) + "\n")


@pytest.mark.parametrize("case", list(CASES))
def test_clear_error_naming_the_file(folder, case):
    name, mutate, expected = CASES[case]
    path = folder / name
    mutate(path)
    with pytest.raises(SessionFolderError) as info:
        read_session_folder(folder)
    msg = str(info.value)
    assert msg.startswith(f"{path}: "), msg
    assert expected in msg, msg
    assert isinstance(info.value, JointmonError)


def test_not_a_folder(tmp_path):
    with pytest.raises(SessionFolderError, match=f"^{tmp_path / 'nope'}: not a folder"):
        read_session_folder(tmp_path / "nope")
