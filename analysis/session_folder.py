"""Plain session folders: import and export, so recordings from other devices can be analysed.

A session folder (documented in ``docs/session-folder.md``) holds, per sensor NAME::

    imu_NAME.csv    header t_s,ax_g,ay_g,az_g,gx_dps,gy_dps,gz_dps (seconds, g, deg/s), uniform rate
    mic_NAME.wav    optional: mono PCM, 16- or 24-bit, >= 8000 Hz, first sample at t_s = 0
    session.toml    [sensors.NAME] joint/side/segment, athlete, exercise, ...
    labels.csv      optional: t_start_s,t_end_s,type,joint,magnitude

Every import problem raises :class:`SessionFolderError` whose message starts with the offending
file's path and names the line, column or key. ``frames_from_session_folder`` turns an imported
session into the same data frames the gateway publishes, so the live analysis code runs on it.
"""

from __future__ import annotations

import csv
import heapq
import json
import math
import re
import struct
import tomllib
import wave
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jointmon.const import FRAME_DURATION_S
from jointmon.errors import SessionFolderError, TopicError
from jointmon.frames import Frame
from jointmon.messages import EVENT_TYPES
from jointmon.packets import StreamType
from jointmon.topics import DataTopic, check_level

if TYPE_CHECKING:
    from firmware_sim.session import SimulatedSession

SESSION_FILE = "session.toml"
LABELS_FILE = "labels.csv"
IMU_COLUMNS = ("t_s", "ax_g", "ay_g", "az_g", "gx_dps", "gy_dps", "gz_dps")
LABEL_COLUMNS = ("t_start_s", "t_end_s", "type", "joint", "magnitude")
UNIT_HELP = {"s": "seconds", "g": "acceleration in g, 1 g = 9.80665 m/s^2", "dps": "angular rate in deg/s"}
JOINTS = ("knee", "shoulder")
SIDES = ("left", "right")
SEGMENTS = {"knee": ("thigh", "shank"), "shoulder": ("upper_arm", "trunk")}
ALL_SEGMENTS = tuple(s for segs in SEGMENTS.values() for s in segs)
SESSION_KEYS = ("athlete", "session", "exercise", "start", "notes", "sensors")
SENSOR_KEYS = ("joint", "side", "segment")
DEFAULT_ATHLETE = "ath-import"
MIN_MIC_RATE_HZ = 8000  # the click detector high-passes at 1 kHz; below 8 kHz too little click band is left
MIC_BITS = (16, 24)
# A sampling interval may deviate this much (fraction of the nominal interval) before samples
# count as missing or irregular: half an interval separates "late" from "one sample missing".
INTERVAL_TOLERANCE = 0.5
# The sensors of one joint are fused sample by sample at one rate; they must agree this closely.
RATE_MATCH_TOLERANCE = 1e-3
# Written precision (CSV): t_s 1 us, accel 1e-6 g, gyro 1e-4 deg/s; reading back is within half of that.
CSV_FORMATS = ("%.6f", "%.6f", "%.6f", "%.6f", "%.4f", "%.4f", "%.4f")
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_FILE = re.compile(r"(imu|mic)_(.+)\.(csv|wav)")


@dataclass
class SensorData:
    """One sensor of a session folder.

    ``t_s`` (n,) seconds since the session start; ``accel_g`` (n, 3) g; ``gyro_dps`` (n, 3) deg/s,
    all in the sensor frame. ``mic`` (m,) full-scale units (|x| <= 1) at ``mic_rate_hz``, first
    sample at t_s = 0, or None; ``mic_bits`` the WAV sample width it came from (16 or 24).
    """

    name: str
    joint: str  # "knee" | "shoulder"
    side: str  # "left" | "right"
    segment: str  # "thigh" | "shank" | "upper_arm" | "trunk"
    t_s: np.ndarray
    accel_g: np.ndarray
    gyro_dps: np.ndarray
    mic: np.ndarray | None = None
    mic_rate_hz: int | None = None
    mic_bits: int | None = None

    @property
    def joint_id(self) -> str:
        """The joint id the pipeline and the topics use, e.g. ``left_knee``."""
        return f"{self.side}_{self.joint}"

    @property
    def imu_rate_hz(self) -> float:
        """IMU sample rate (Hz) derived from ``t_s`` (checked uniform)."""
        return imu_rate_from_times(self.t_s, f"imu_{self.name}.csv")


@dataclass(frozen=True)
class SessionLabel:
    """A ground-truth or annotated event: seconds since the session start; magnitude event specific (NaN: unknown)."""

    t_start_s: float
    t_end_s: float
    type: str
    joint: str
    magnitude: float


@dataclass
class ImportedSession:
    """A session folder read into memory. ``start_ns`` (Unix ns) is the wall time of t_s = 0: the
    ``start`` in session.toml, else 0 (a fixed epoch, so results are reproducible)."""

    path: Path
    athlete: str
    session: str
    exercise: str | None
    start_ns: int
    sensors: dict[str, SensorData]
    labels: list[SessionLabel] = field(default_factory=list)
    notes: str | None = None

    @property
    def joints(self) -> list[str]:
        return sorted({s.joint_id for s in self.sensors.values()})


def _fail(path: Path, msg: str) -> SessionFolderError:
    return SessionFolderError(f"{path}: {msg}")


# --- reading ------------------------------------------------------------------------------------

def _split_unit(column: str) -> tuple[str, str]:
    base, _, unit = column.rpartition("_")
    return (base, unit) if base else (column, "")


def _check_header(path: Path, got: list[str], expected: tuple[str, ...]) -> None:
    """Exact header or a message that says what is wrong: a unit, missing/extra columns, the order."""
    if tuple(got) == expected:
        return
    want = ",".join(expected)
    by_base = {_split_unit(c)[0]: c for c in expected}
    for i, col in enumerate(got, start=1):
        base, unit = _split_unit(col)
        if col not in expected and base in by_base and by_base[base] not in got:
            right = by_base[base]
            what = UNIT_HELP.get(_split_unit(right)[1], "")
            raise _fail(path, f"column {i} is {col!r}: wrong unit {unit!r}, expected {right!r}"
                        f"{f' ({what})' if what else ''}; the header must be exactly {want}")
    missing = [c for c in expected if c not in got]
    extra = [c for c in got if c not in expected]
    dupes = sorted({c for c in got if got.count(c) > 1})
    if missing or extra or dupes:
        parts = ([f"missing column(s) {', '.join(missing)}"] if missing else []) + (
            [f"unexpected column(s) {', '.join(extra)}"] if extra else []) + (
            [f"repeated column(s) {', '.join(dupes)}"] if dupes else [])
        raise _fail(path, f"{'; '.join(parts)}; the header must be exactly {want}")
    raise _fail(path, f"columns in the wrong order {','.join(got)}; the header must be exactly {want}")


def _read_csv(path: Path, expected: tuple[str, ...]) -> tuple[list[list[str]], list[int]]:
    """Rows (strings) after the checked header, and each row's line number in the file."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows, lines = [], []
            for row in reader:
                if any(cell.strip() for cell in row):  # a blank line (e.g. at the end) is no row
                    rows.append([cell.strip() for cell in row])
                    lines.append(reader.line_num)
    except UnicodeDecodeError as exc:
        raise _fail(path, f"not a UTF-8 text CSV file ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise _fail(path, f"malformed CSV ({exc})") from None
    except OSError as exc:
        raise _fail(path, f"cannot read ({exc.strerror})") from None
    if header is None:
        raise _fail(path, f"empty file: expected the header {','.join(expected)} and data rows")
    _check_header(path, [c.strip() for c in header], expected)
    if not rows:
        raise _fail(path, "no data rows after the header")
    bad = next((i for i, r in enumerate(rows) if len(r) != len(expected)), None)
    if bad is not None:
        raise _fail(path, f"line {lines[bad]}: {len(rows[bad])} values, expected {len(expected)} "
                          f"({','.join(expected)})")
    return rows, lines


def _numbers(path: Path, rows: list[list[str]], lines: list[int], columns: tuple[str, ...]) -> np.ndarray:
    """The cells as float64 (rows, columns); a bad or non-finite cell is reported by line and column."""
    try:
        values = np.array(rows, dtype=float).reshape(len(rows), len(columns))
        if np.isfinite(values).all():
            return values
    except ValueError:
        pass
    # Error path only: find the first offending cell to name it.
    for row, line in zip(rows, lines, strict=True):
        for col, cell in zip(columns, row, strict=True):
            try:
                ok = math.isfinite(float(cell))
            except ValueError:
                ok = False
            if not ok:
                raise _fail(path, f"line {line}, column {col}: {cell!r} is not a finite number")
    raise AssertionError("unreachable: numpy and float() disagree")


def imu_rate_from_times(t_s: np.ndarray, where: str | Path, lines: np.ndarray | None = None) -> float:
    """IMU rate (Hz) from sample times ``t_s`` (s), which must increase uniformly.

    Each interval must be within ``INTERVAL_TOLERANCE`` of the median interval (a missing sample
    doubles one), and no sample may drift more than that from the uniform grid through the first
    and last sample. The rate is snapped to a whole Hz when that moves the last sample by less than
    a tenth of an interval. ``lines`` are the file line numbers of the samples, for messages.
    """
    t = np.asarray(t_s, dtype=float)
    lines = np.arange(2, t.size + 2) if lines is None else lines
    if t.size < 2:
        raise SessionFolderError(f"{where}: {t.size} sample(s): at least 2 are needed to know the rate")
    d = np.diff(t)
    bad = np.flatnonzero(d <= 0)
    if bad.size:
        i = int(bad[0]) + 1
        raise SessionFolderError(f"{where}: line {lines[i]}: t_s {float(t[i])!r} is not after the previous "
                                 f"{float(t[i - 1])!r} (t_s must increase)")
    dt = float(np.median(d))
    bad = np.flatnonzero(np.abs(d - dt) > INTERVAL_TOLERANCE * dt)
    if bad.size:
        i = int(bad[0]) + 1
        raise SessionFolderError(
            f"{where}: line {lines[i]}: t_s jumps by {d[i - 1]:.6g} s where the sampling interval is {dt:.6g} s "
            f"({1 / dt:.6g} Hz): samples missing or irregular; the rate must be uniform")
    span = t[-1] - t[0]
    rate = (t.size - 1) / span
    resid = t - (t[0] + np.arange(t.size) / rate)
    worst = int(np.argmax(np.abs(resid)))
    if abs(resid[worst]) > INTERVAL_TOLERANCE / rate:
        raise SessionFolderError(
            f"{where}: line {lines[worst]}: t_s {float(t[worst])!r} is {resid[worst]:+.6g} s off a uniform "
            f"{rate:.6g} Hz grid: the sample rate drifts")
    whole = round(rate)
    if whole > 0 and abs(span * (1 - whole / rate)) < 0.1 / rate:
        rate = float(whole)
    return rate


def read_imu_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Read one ``imu_NAME.csv``: (t_s (n,) s, accel (n, 3) g, gyro (n, 3) deg/s, rate Hz)."""
    path = Path(path)
    rows, lines = _read_csv(path, IMU_COLUMNS)
    values = _numbers(path, rows, lines, IMU_COLUMNS)
    rate = imu_rate_from_times(values[:, 0], path, np.asarray(lines))
    return values[:, 0].copy(), values[:, 1:4].copy(), values[:, 4:7].copy(), rate


def read_mic_wav(path: str | Path) -> tuple[np.ndarray, int, int]:
    """Read one ``mic_NAME.wav``: (samples float32 (m,) full scale, rate Hz, bits 16 | 24).

    Parses the RIFF chunks itself (plain PCM and WAVE_FORMAT_EXTENSIBLE with a PCM sub-format),
    because ``wave`` before Python 3.12 rejects the extensible header most tools write at 24 bit.
    float32 holds 16- and 24-bit samples exactly.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _fail(path, f"cannot read ({exc.strerror})") from None
    if not data:
        raise _fail(path, "empty file: not a WAV file")
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise _fail(path, "unreadable WAV: no RIFF/WAVE header")
    fmt = pcm = None
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        body = data[pos + 8:pos + 8 + size]  # a streamed file may declare more than it holds: take what is there
        if cid == b"fmt ":
            fmt = body
        elif cid == b"data" and pcm is None:
            pcm = body
        pos += 8 + size + (size & 1)  # chunks are word aligned
    if fmt is None or len(fmt) < 16:
        raise _fail(path, "unreadable WAV: no fmt chunk")
    tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == 0xFFFE and len(fmt) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the sub-format GUID starts with the real tag
        tag = int.from_bytes(fmt[24:26], "little")
    if tag != 1:
        kind = {3: "IEEE float", 6: "A-law", 7: "mu-law"}.get(tag, f"format code {tag}")
        raise _fail(path, f"{kind} samples: expected integer PCM (16- or 24-bit)")
    if channels != 1:
        raise _fail(path, f"{channels} channels: expected mono (1 channel)")
    if bits not in MIC_BITS:
        raise _fail(path, f"{bits}-bit samples: expected 16- or 24-bit PCM")
    if rate < MIN_MIC_RATE_HZ:
        raise _fail(path, f"wrong sample rate {rate} Hz: expected at least {MIN_MIC_RATE_HZ} Hz")
    width = bits // 8
    if block_align != width:
        raise _fail(path, f"unreadable WAV: block align {block_align} for mono {bits}-bit (expected {width})")
    n = len(pcm) // width if pcm is not None else 0
    if n == 0:
        raise _fail(path, "empty WAV: no audio samples")
    raw = np.frombuffer(pcm, np.uint8, n * width).reshape(n, width)
    if bits == 16:
        x = raw.view("<i2")[:, 0].astype(np.float32) / np.float32(1 << 15)
    else:
        # 24-bit little-endian: place the 3 bytes in the top of an int32, then shift (sign-extends).
        wide = np.zeros((n, 4), np.uint8)
        wide[:, 1:] = raw
        x = (wide.view("<i4")[:, 0] >> 8).astype(np.float32) / np.float32(1 << 23)
    return x, int(rate), int(bits)


def _str_key(path: Path, table: Mapping[str, Any], key: str, where: str) -> str | None:
    value = table.get(key)
    if value is not None and not isinstance(value, str):
        raise _fail(path, f"{where}{key} = {value!r}: expected a string")
    return value


def _choice(path: Path, table: Mapping[str, Any], key: str, where: str, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if key not in table:
        raise _fail(path, f"[{where}] has no {key!r} key (one of {', '.join(allowed)})")
    value = table[key]
    if value not in allowed:
        raise _fail(path, f"[{where}] {key} = {value!r}: expected one of {', '.join(allowed)}")
    return str(value)


def _read_session_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise _fail(path, "missing: every session folder needs a session.toml (see docs/session-folder.md)") from None
    except tomllib.TOMLDecodeError as exc:
        raise _fail(path, f"not valid TOML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(path, f"cannot read ({exc})") from None
    unknown = [k for k in raw if k not in SESSION_KEYS]
    if unknown:
        raise _fail(path, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(SESSION_KEYS)}")
    sensors = raw.get("sensors")
    if not isinstance(sensors, dict) or not sensors:
        raise _fail(path, "no [sensors.NAME] table: at least one sensor is needed")
    for name, table in sensors.items():
        where = f"sensors.{name}"
        if not _NAME.fullmatch(name):
            raise _fail(path, f"[{where}]: sensor names use letters, digits, '-', '_' and '.' only")
        if not isinstance(table, dict):
            raise _fail(path, f"{where} = {table!r}: expected a table [{where}]")
        unknown = [k for k in table if k not in SENSOR_KEYS]
        if unknown:
            raise _fail(path, f"[{where}] unknown key(s) {', '.join(unknown)}; allowed: {', '.join(SENSOR_KEYS)}")
        joint = _choice(path, table, "joint", where, JOINTS)
        _choice(path, table, "side", where, SIDES)
        segment = _choice(path, table, "segment", where, ALL_SEGMENTS)
        if segment not in SEGMENTS[joint]:
            raise _fail(path, f"[{where}] segment = {segment!r} is not a {joint} segment "
                              f"(one of {', '.join(SEGMENTS[joint])})")
    return raw


def _start_ns(path: Path, start: object) -> int:
    if start is None:
        return 0
    if not isinstance(start, datetime) or start.tzinfo is None:
        shown = start.isoformat() if hasattr(start, "isoformat") else repr(start)
        raise _fail(path, f"start = {shown}: expected a date-time with a UTC offset, e.g. 2026-03-01T10:00:00Z")
    return int(round(start.timestamp() * 1e6)) * 1000  # microsecond precision: what TOML times carry


def read_labels_csv(path: str | Path, joints: Iterable[str] | None = None) -> list[SessionLabel]:
    """Read ``labels.csv``; ``joints`` (if given) are the joint ids a label may name."""
    path = Path(path)
    rows, lines = _read_csv(path, LABEL_COLUMNS)
    times = _numbers(path, [r[:2] for r in rows], lines, LABEL_COLUMNS[:2])
    # An empty magnitude means "unknown" (NaN); anything else must be a number.
    magnitude = _numbers(path, [[r[4] or "0"] for r in rows], lines, LABEL_COLUMNS[4:])[:, 0]
    magnitude[np.array([r[4] == "" for r in rows])] = np.nan
    joints = set(joints) if joints is not None else None
    labels = []
    for i, (r, line) in enumerate(zip(rows, lines, strict=True)):
        if r[2] not in EVENT_TYPES:
            raise _fail(path, f"line {line}, column type: {r[2]!r} is not one of {', '.join(EVENT_TYPES)}")
        if joints is not None and r[3] not in joints:
            raise _fail(path, f"line {line}, column joint: {r[3]!r} is not a joint of this session "
                              f"({', '.join(sorted(joints))})")
        if times[i, 1] < times[i, 0]:
            raise _fail(path, f"line {line}: t_end_s {r[1]} is before t_start_s {r[0]}")
        labels.append(SessionLabel(float(times[i, 0]), float(times[i, 1]), r[2], r[3], float(magnitude[i])))
    return labels


def read_session_folder(path: str | Path) -> ImportedSession:
    """Read and check a whole session folder; raise :class:`SessionFolderError` naming the file otherwise."""
    folder = Path(path)
    if not folder.is_dir():
        raise _fail(folder, "not a folder (a session folder holds session.toml, imu_NAME.csv, ...)")
    toml_path = folder / SESSION_FILE
    meta = _read_session_toml(toml_path)
    where = ""
    athlete = _str_key(toml_path, meta, "athlete", where) or DEFAULT_ATHLETE
    try:
        check_level("athlete", athlete)  # it becomes a topic level (and it is a pseudonym, never a name)
    except TopicError as exc:
        raise _fail(toml_path, str(exc)) from None
    session = _str_key(toml_path, meta, "session", where) or folder.resolve().name
    exercise = _str_key(toml_path, meta, "exercise", where)
    notes = _str_key(toml_path, meta, "notes", where)
    start_ns = _start_ns(toml_path, meta.get("start"))

    names = set(meta["sensors"])
    for f in sorted(folder.iterdir()):
        m = _FILE.fullmatch(f.name)
        if m and m.group(2) not in names and (m.group(1), m.group(3)) in (("imu", "csv"), ("mic", "wav")):
            raise _fail(f, f"no [sensors.{m.group(2)}] table in {toml_path} for this file")

    sensors: dict[str, SensorData] = {}
    seen: dict[tuple[str, str], str] = {}
    rates: dict[str, tuple[float, Path]] = {}
    for name, table in meta["sensors"].items():
        imu_path = folder / f"imu_{name}.csv"
        if not imu_path.is_file():
            raise _fail(imu_path, f"missing: [sensors.{name}] in {toml_path} needs this IMU file")
        t_s, accel, gyro, rate = read_imu_csv(imu_path)
        s = SensorData(name, table["joint"], table["side"], table["segment"], t_s, accel, gyro)
        key = (s.joint_id, s.segment)
        if key in seen:
            raise _fail(toml_path, f"[sensors.{name}] and [sensors.{seen[key]}] are both the {s.side} {s.joint}'s "
                                   f"{s.segment}: one sensor per segment")
        seen[key] = name
        other = rates.get(s.joint_id)
        if other is not None and abs(rate / other[0] - 1) > RATE_MATCH_TOLERANCE:
            raise _fail(imu_path, f"IMU rate {rate:.6g} Hz differs from {other[1].name}'s {other[0]:.6g} Hz: "
                                  f"the sensors of one joint must share one IMU rate")
        rates.setdefault(s.joint_id, (rate, imu_path))
        mic_path = folder / f"mic_{name}.wav"
        if mic_path.exists():
            s.mic, s.mic_rate_hz, s.mic_bits = read_mic_wav(mic_path)
        sensors[name] = s
    labels_path = folder / LABELS_FILE
    joint_ids = {s.joint_id for s in sensors.values()}
    labels = read_labels_csv(labels_path, joint_ids) if labels_path.exists() else []
    return ImportedSession(folder, athlete, session, exercise, start_ns, sensors, labels, notes)


# --- writing ------------------------------------------------------------------------------------

def write_imu_csv(path: str | Path, t_s: np.ndarray, accel_g: np.ndarray, gyro_dps: np.ndarray) -> None:
    """Write one IMU CSV (t_s s, accel g, gyro deg/s) at the precision of ``CSV_FORMATS``."""
    data = np.column_stack((np.asarray(t_s, float), np.asarray(accel_g, float), np.asarray(gyro_dps, float)))
    np.savetxt(path, data, fmt=list(CSV_FORMATS), delimiter=",", header=",".join(IMU_COLUMNS), comments="")


def write_mic_wav(path: str | Path, x: np.ndarray, rate_hz: int, bits: int = 16) -> None:
    """Write mono PCM (``bits`` 16 or 24) from full-scale samples ``x``, rounding and clipping like an ADC."""
    if bits not in MIC_BITS:
        raise ValueError(f"mic bits {bits}: 16 or 24 only")
    full = 1 << (bits - 1)
    q = np.clip(np.round(np.asarray(x, float) * full), -full, full - 1).astype("<i4")
    # Little-endian int32 -> keep the low ``bits / 8`` bytes of each sample.
    payload = q.view(np.uint8).reshape(-1, 4)[:, : bits // 8].tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(bits // 8)
        w.setframerate(int(rate_hz))
        w.writeframes(payload)


def write_labels_csv(path: str | Path, labels: Iterable[SessionLabel]) -> None:
    """Write ``labels.csv``; floats as their shortest exact repr, so they read back equal."""
    with Path(path).open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(LABEL_COLUMNS)
        for lb in labels:
            mag = "" if math.isnan(lb.magnitude) else repr(float(lb.magnitude))
            w.writerow([repr(float(lb.t_start_s)), repr(float(lb.t_end_s)), lb.type, lb.joint, mag])


def _toml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def write_session_arrays(path: str | Path, sensors: Iterable[SensorData], *, athlete: str = DEFAULT_ATHLETE,
                         session: str | None = None, exercise: str | None = None,
                         labels: Iterable[SessionLabel] = (), start: datetime | None = None,
                         mic_bits: int | Mapping[str, int] = 16) -> Path:
    """Write a session folder from arrays. ``mic_bits``: one width for every WAV, or per sensor name."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"athlete = {_toml_str(athlete)}"]
    if session is not None:
        lines.append(f"session = {_toml_str(session)}")
    if exercise is not None:
        lines.append(f"exercise = {_toml_str(exercise)}")
    if start is not None:
        lines.append(f"start = {start.isoformat()}")
    for s in sensors:
        lines += ["", f"[sensors.{s.name}]", f"joint = {_toml_str(s.joint)}", f"side = {_toml_str(s.side)}",
                  f"segment = {_toml_str(s.segment)}"]
        write_imu_csv(folder / f"imu_{s.name}.csv", s.t_s, s.accel_g, s.gyro_dps)
        if s.mic is not None:
            if s.mic_rate_hz is None:
                raise ValueError(f"sensor {s.name}: mic samples without mic_rate_hz")
            bits = mic_bits if isinstance(mic_bits, int) else mic_bits.get(s.name, 16)
            write_mic_wav(folder / f"mic_{s.name}.wav", s.mic, s.mic_rate_hz, bits)
    (folder / SESSION_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    labels = list(labels)
    if labels:
        write_labels_csv(folder / LABELS_FILE, labels)
    return folder


def write_session_folder(path: str | Path, session: SimulatedSession, *, mic_bits: int = 16) -> Path:
    """Export a simulated session (both sensors, IMU + mic, labels) as a session folder.

    Quantisation of the round trip: IMU values within half a written digit (t_s 0.5 us, accel
    5e-7 g, gyro 5e-5 deg/s); the simulator's 16-bit microphone is exact at 16 and 24 bits.
    """
    side, _, joint = session.joint.partition("_")
    sensors = [SensorData(name, joint, side, name, sig.imu_t_s(), sig.accel_g(), sig.gyro_dps(), sig.mic_fs(),
                          sig.mic_rate_hz, mic_bits) for name, sig in session.sensors.items()]
    labels = [SessionLabel(lb.t_start_s, lb.t_end_s, lb.type, lb.joint, lb.magnitude) for lb in session.labels]
    return write_session_arrays(path, sensors, athlete=session.athlete, session=f"sim-seed{session.seed}",
                                exercise="squat", labels=labels, mic_bits=mic_bits)


# --- frames -------------------------------------------------------------------------------------

def _frame_starts(n: int, per_frame: int) -> np.ndarray:
    return np.arange(0, n, per_frame)


def quantise_blocks(x: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int16 samples and a scale per block and channel: scale = block peak |x| / 32767 (1/32768 for
    an all-zero block, never 0), so the step is at most 1/32767 of each block's peak (about -90 dB)."""
    x = np.asarray(x, float).reshape(x.shape[0], -1)
    peak = np.maximum.reduceat(np.abs(x), starts, axis=0)
    scale = np.where(peak > 0, peak / 32767.0, 1.0 / 32768.0)
    counts = np.diff(np.append(starts, x.shape[0]))
    q = np.clip(np.round(x / np.repeat(scale, counts, axis=0)), -32767, 32767).astype(np.int16)
    return q, scale


def _imu_frames(topic: DataTopic, s: SensorData, start_ns: int, frame_s: float) -> Iterator[tuple[DataTopic, Frame]]:
    rate = s.imu_rate_hz
    per_frame = max(1, round(frame_s * rate))
    starts = _frame_starts(s.t_s.size, per_frame)
    q, scale = quantise_blocks(np.hstack((s.accel_g, s.gyro_dps)), starts)
    # Each frame starts at its first sample's own t_s, so timestamp jitter in the CSV never accumulates.
    t0_ns = start_ns + np.round(s.t_s[starts] * 1e9).astype(np.int64)
    for k, i in enumerate(starts):
        yield topic, Frame(StreamType.IMU, k, int(i), int(t0_ns[k]), rate, scale[k], q[i:i + per_frame])


def _mic_frames(topic: DataTopic, s: SensorData, start_ns: int, frame_s: float) -> Iterator[tuple[DataTopic, Frame]]:
    assert s.mic is not None and s.mic_rate_hz is not None
    rate = float(s.mic_rate_hz)
    per_frame = max(1, round(frame_s * rate))
    starts = _frame_starts(s.mic.size, per_frame)
    if s.mic_bits == 16:
        # 16-bit PCM fits int16 exactly at 1/32768 FS per LSB: lossless, like the sensor's own frames.
        q = np.clip(np.round(np.asarray(s.mic, float) * 32768.0), -32768, 32767).astype(np.int16).reshape(-1, 1)
        scale = np.full((starts.size, 1), 1.0 / 32768.0)
    else:
        q, scale = quantise_blocks(s.mic, starts)
    for k, i in enumerate(starts):
        t0_ns = start_ns + round(i * 1e9 / rate)
        yield topic, Frame(StreamType.MIC_PCM16, k, int(i), t0_ns, rate, scale[k], q[i:i + per_frame])


def frames_from_session_folder(imported: ImportedSession, frame_duration_s: float = FRAME_DURATION_S,
                               ) -> Iterator[tuple[DataTopic, Frame]]:
    """Data frames (~``frame_duration_s`` each) of every stream, merged in time order, as the gateway
    would publish them: topic (athlete, joint id, segment, imu|mic) and a :class:`Frame` with
    ``t0_ns = start_ns + t_s * 1e9``.

    Frames carry int16 + a per-channel scale: 16-bit WAVs losslessly at 1/32768 FS; IMU data and
    24-bit WAVs with the scale chosen per frame and channel from the data (``quantise_blocks``:
    step = frame peak / 32767, error at most half of that).
    """
    streams = []
    for s in imported.sensors.values():
        streams.append(_imu_frames(DataTopic(imported.athlete, s.joint_id, s.segment, "imu"), s,
                                   imported.start_ns, frame_duration_s))
        if s.mic is not None:
            streams.append(_mic_frames(DataTopic(imported.athlete, s.joint_id, s.segment, "mic"), s,
                                       imported.start_ns, frame_duration_s))
    return heapq.merge(*streams, key=lambda tf: tf[1].t0_ns)
