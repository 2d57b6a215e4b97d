"""MQTT data frame v1: the binary payload on every data topic (about 50 ms of one stream).

Layout (little-endian), documented in ``docs/protocol.md``::

    offset size field
    0      1    version       (= 1)
    1      1    stream type   (jointmon.packets.StreamType)
    2      1    channels      (IMU 6, mic 1)
    3      1    flags         (bit 0: samples are missing before this frame)
    4      4    frame_seq     (u32, per stream, +1 per frame: a subscriber sees lost frames)
    8      8    first_index   (u64, index of the first sample since the stream started)
    16     8    t0_ns         (i64, wall clock of the first sample, Unix ns, from the clock map)
    24     8    rate_hz       (f64, nominal sample rate)
    32     4    count         (u32, samples in this frame)
    36     8*c  scale         (f64 per channel: physical units per LSB)
    ..     2*c*count samples  (int16, count x channels, raw sensor LSBs: lossless)

Samples keep the sensor's raw int16 values so the frame is lossless and compact.

Gap records (:class:`Gap`, JSON on ``jointmon/v1/gaps/...``) say what is missing before a frame flagged
``FLAG_GAP_BEFORE``: how many samples, from when, for how long, and why (lost packets, or a reboot).
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from jointmon.errors import FrameError
from jointmon.packets import CHANNELS, StreamType

FRAME_VERSION = 1
FRAME_HEADER = struct.Struct("<BBBBIQqdI")
FLAG_GAP_BEFORE = 0x01
MIN_RATE_HZ, MAX_RATE_HZ = 1e-3, 1e6  # plausible sensor rates; a tiny rate would overflow sample times
MAX_FRAME_SAMPLES = 1 << 20  # sanity bound against corrupt counts (about 65 s of 16 kHz audio)


@dataclass(frozen=True, slots=True)
class Frame:
    """A block of consecutive samples of one stream. ``samples`` is int16 (count, channels)."""

    stream: StreamType
    frame_seq: int
    first_index: int
    t0_ns: int
    rate_hz: float
    scale: np.ndarray
    samples: np.ndarray
    flags: int = 0

    @property
    def count(self) -> int:
        return int(self.samples.shape[0])

    def physical(self) -> np.ndarray:
        """Samples in physical units (IMU: g, deg/s; mic: full scale), float64 (count, channels)."""
        return self.samples * self.scale

    def sample_times_ns(self) -> np.ndarray:
        """Wall-clock time of each sample (Unix ns), from t0_ns and the nominal rate."""
        return self.t0_ns + _sample_offsets_ns(self.count, self.rate_hz)


@lru_cache(maxsize=256)
def _sample_offsets_ns(count: int, rate_hz: float) -> np.ndarray:
    """``round(i * 1e9 / rate_hz)`` for i < count, int64, read-only: every frame of a stream has the same few
    (count, rate) pairs, and building them was most of ``sample_times_ns`` (hot: called per IMU frame)."""
    offsets = np.round(np.arange(count) * (1e9 / rate_hz)).astype(np.int64)
    offsets.flags.writeable = False
    return offsets


_STREAM_TYPES = {int(s): s for s in StreamType}
_GOOD_SCALES: dict[bytes, np.ndarray] = {}  # scale bytes seen valid -> the read-only array (a few per stream kind)
_GOOD_SCALES_MAX = 1024


def encode_frame(frame: Frame) -> bytes:
    channels = CHANNELS[frame.stream]
    samples = np.ascontiguousarray(frame.samples, dtype="<i2").reshape(-1, channels)
    scale = np.ascontiguousarray(frame.scale, dtype="<f8").reshape(channels)
    header = FRAME_HEADER.pack(
        FRAME_VERSION, frame.stream, channels, frame.flags, frame.frame_seq & 0xFFFFFFFF,
        frame.first_index, frame.t0_ns, frame.rate_hz, samples.shape[0],
    )
    return header + scale.tobytes() + samples.tobytes()


def decode_frame(payload: bytes | bytearray | memoryview) -> Frame:
    """Decode a frame payload; raise :class:`FrameError` with a reason token otherwise.

    Reasons: ``truncated``, ``bad_version``, ``bad_stream``, ``bad_channels``, ``bad_count``,
    ``bad_rate``, ``bad_scale``.
    """
    if type(payload) is not bytes:  # noqa: E721 - exactly bytes (immutable: the arrays may view it)
        payload = bytes(payload)
    if len(payload) < FRAME_HEADER.size:
        raise FrameError("truncated", f"{len(payload)} bytes, header needs {FRAME_HEADER.size}")
    version, stream_raw, channels, flags, seq, first, t0_ns, rate_hz, count = FRAME_HEADER.unpack_from(payload)
    if version != FRAME_VERSION:
        raise FrameError("bad_version", f"version {version}")
    stream = _STREAM_TYPES.get(stream_raw)
    if stream is None:
        raise FrameError("bad_stream", f"stream type {stream_raw}")
    if channels != CHANNELS[stream]:
        raise FrameError("bad_channels", f"{channels} channels for {stream.name}")
    if not 0 < count <= MAX_FRAME_SAMPLES:
        raise FrameError("bad_count", f"count {count}")
    if not (MIN_RATE_HZ <= rate_hz <= MAX_RATE_HZ):  # also rejects NaN
        raise FrameError("bad_rate", f"rate {rate_hz}")
    expected = FRAME_HEADER.size + 8 * channels + 2 * channels * count
    if len(payload) != expected:
        raise FrameError("truncated" if len(payload) < expected else "bad_count",
                         f"{len(payload)} bytes, count {count} needs {expected}")
    # The scale of a stream never changes: check it once, then reuse the checked (read-only) array.
    scale_bytes = payload[FRAME_HEADER.size:FRAME_HEADER.size + 8 * channels]
    scale = _GOOD_SCALES.get(scale_bytes)
    if scale is None:
        scale = np.frombuffer(scale_bytes, "<f8", channels)
        if not np.all(np.isfinite(scale) & (scale > 0)):
            raise FrameError("bad_scale", f"scale {scale}")
        if len(_GOOD_SCALES) >= _GOOD_SCALES_MAX:
            _GOOD_SCALES.clear()
        _GOOD_SCALES[scale_bytes] = scale
    samples = np.frombuffer(payload, "<i2", count * channels, FRAME_HEADER.size + 8 * channels)
    return Frame(stream, seq, first, t0_ns, rate_hz, scale, samples.reshape(count, channels), flags)


GAP_REASONS = ("lost", "reboot")


@dataclass(frozen=True, slots=True)
class Gap:
    """Samples of one stream that never reached the gateway (BLE loss, a disconnect, a sensor reboot).

    Published (JSON, QoS 1) just before the frame that resumes the stream, which carries
    ``FLAG_GAP_BEFORE`` and the same ``frame_seq``/``first_index``.
    """

    stream: StreamType
    reason: str  # "lost": sequence gap, sensor clock continuous; "reboot": the sensor clock restarted
    t_start_ns: int  # wall clock of the first missing sample, Unix ns
    duration_ns: int  # wall-clock length of the gap, ns (t_start_ns + duration_ns = the next frame's t0_ns)
    samples: int  # missing samples: exact from the sensor timestamps ("lost"), duration x rate ("reboot")
    packets: int  # packets lost by sequence number (0 when the sequence restarted: "reboot")
    frame_seq: int  # the frame that resumes the stream
    first_index: int  # that frame's first_index
    rate_hz: float  # nominal sample rate, Hz

    def __post_init__(self) -> None:
        if self.reason not in GAP_REASONS:
            raise FrameError("bad_gap", f"reason {self.reason!r} (known: {', '.join(GAP_REASONS)})")
        if self.samples < 0 or self.packets < 0 or self.duration_ns < 0:
            raise FrameError("bad_gap", "negative samples, packets or duration")

    @property
    def duration_s(self) -> float:
        return self.duration_ns / 1e9

    def to_json(self) -> bytes:
        d = asdict(self)
        d["stream"] = {StreamType.IMU: "imu", StreamType.MIC_PCM16: "mic"}[self.stream]
        return json.dumps(d, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, payload: bytes | str) -> Gap:
        """Parse a gap record; :class:`FrameError` ``bad_gap`` when it does not match the schema."""
        try:
            raw: Any = json.loads(payload)
            if not isinstance(raw, dict):
                raise TypeError("not a JSON object")
            stream = {"imu": StreamType.IMU, "mic": StreamType.MIC_PCM16}[raw["stream"]]
            ints = {k: raw[k] for k in ("t_start_ns", "duration_ns", "samples", "packets", "frame_seq", "first_index")}
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints.values()):
                raise TypeError("integer fields must be integers")
            rate = raw["rate_hz"]
            if isinstance(rate, bool) or not isinstance(rate, int | float) or not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
                raise TypeError(f"rate_hz {rate!r}")
            return cls(stream, str(raw["reason"]), rate_hz=float(rate), **ints)
        except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
            raise FrameError("bad_gap", str(exc)) from None
