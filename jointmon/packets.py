"""BLE notification packet format v1: the one encoder (firmware_sim) and decoder (sensor_gateway).

Layout (little-endian), documented in ``docs/protocol.md``::

    offset size field
    0      1    version      (= 1)
    1      1    stream type  (1 = IMU, 2 = microphone PCM16, 3 = microphone IMA ADPCM)
    2      2    sequence     (u16, per stream, +1 per packet, wraps)
    4      4    t0_us        (u32, sensor clock of the first sample in microseconds, wraps)
    8      2    rate_hz      (u16, nominal sample rate)
    10     1    count        (samples in this packet)
    11     1    range code   (IMU: accel full scale index << 4 | gyro full scale index; mic: 0)
    12     n    samples      (int16; IMU: count x [ax ay az gx gy gz]; mic: count x [p])
    12+n   2    CRC-16/CCITT-FALSE over bytes 0 .. 12+n-1

Stream type 3 (protocol v1.1) carries the microphone as IMA ADPCM, 4 bits per sample: bytes 12..15
are the codec state at the first sample (i16 predictor, u8 step index 0..88, u8 reserved = 0), then
ceil(count/2) bytes of nibbles, low nibble first (:mod:`jointmon.adpcm`). It decodes to the same
logical stream as type 2 (``StreamType.MIC_PCM16``, int16 samples) with ``Packet.codec = "ima_adpcm"``.

A packet is at most 244 bytes, the notification payload of an ATT MTU of 247.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from jointmon import adpcm
from jointmon.errors import PacketError

PROTOCOL_VERSION = 1
MAX_PACKET_BYTES = 244  # ATT_MTU 247 minus the 3-byte notification header
HEADER = struct.Struct("<BBHIHBB")
CRC_BYTES = 2
MAX_SAMPLE_BYTES = MAX_PACKET_BYTES - HEADER.size - CRC_BYTES  # 230

# Full-scale ranges selectable on the sensor; the range code indexes these tuples.
ACCEL_RANGES_G = (2.0, 4.0, 8.0, 16.0)
GYRO_RANGES_DPS = (250.0, 500.0, 1000.0, 2000.0)
MIC_FULL_SCALE = 1.0  # microphone samples are normalised pressure, int16 full scale = 1.0
INT16_FULL = 32768.0


class StreamType(IntEnum):
    """The logical streams (also the frame's stream byte). ``MIC_PCM16`` is the microphone, whatever
    its encoding on the air: frames always carry int16 samples."""

    IMU = 1
    MIC_PCM16 = 2


CHANNELS = {StreamType.IMU: 6, StreamType.MIC_PCM16: 1}
MAX_SAMPLES = {s: MAX_SAMPLE_BYTES // (2 * c) for s, c in CHANNELS.items()}  # IMU 19, mic 115

# Microphone encodings on the air: name -> packet stream-type byte. A stream-type code (not a new
# packet version) keeps every v1 packet decoding as before; a gateway that predates ADPCM rejects
# these packets as ``bad_stream`` (counted), never as wrong data.
MIC_CODECS = {"pcm16": 2, "ima_adpcm": 3}
WIRE_MIC_ADPCM = MIC_CODECS["ima_adpcm"]
ADPCM_STATE = struct.Struct("<hBB")  # predictor, step index, reserved (0)
# Samples per ADPCM packet: the u8 count field caps it at 255 (4 + 128 bytes < 230).
MAX_ADPCM_SAMPLES = min(255, 2 * (MAX_SAMPLE_BYTES - ADPCM_STATE.size))


def imu_range_code(accel_range_g: float, gyro_range_dps: float) -> int:
    """Range code byte for an IMU configured at ``accel_range_g`` (g) and ``gyro_range_dps`` (deg/s)."""
    return (ACCEL_RANGES_G.index(accel_range_g) << 4) | GYRO_RANGES_DPS.index(gyro_range_dps)


def channel_scale(stream: StreamType, range_code: int) -> np.ndarray:
    """Physical units per LSB for each channel: g for accel, deg/s for gyro, full scale for mic."""
    if stream == StreamType.IMU:
        accel_idx, gyro_idx = range_code >> 4, range_code & 0x0F
        if accel_idx >= len(ACCEL_RANGES_G) or gyro_idx >= len(GYRO_RANGES_DPS):
            raise PacketError("bad_range", f"range code 0x{range_code:02x}")
        a = ACCEL_RANGES_G[accel_idx] / INT16_FULL
        g = GYRO_RANGES_DPS[gyro_idx] / INT16_FULL
        return np.array([a, a, a, g, g, g])
    if range_code != 0:
        raise PacketError("bad_range", f"microphone range code 0x{range_code:02x} (must be 0)")
    return np.array([MIC_FULL_SCALE / INT16_FULL])


@dataclass(frozen=True, slots=True)
class Packet:
    """One decoded notification. ``samples`` is int16 with shape (count, channels)."""

    stream: StreamType
    seq: int
    t0_us: int
    rate_hz: int
    range_code: int
    samples: np.ndarray
    codec: str = "pcm16"  # the encoding on the air (MIC_CODECS); samples are int16 either way

    @property
    def scale(self) -> np.ndarray:
        return channel_scale(self.stream, self.range_code)

    def physical(self) -> np.ndarray:
        """Samples in physical units (IMU: g and deg/s; mic: full scale), float64."""
        return self.samples * self.scale


def _crc(data: bytes) -> int:
    return binascii.crc_hqx(data, 0xFFFF)


def encode_packet(
    stream: StreamType, seq: int, t0_us: int, rate_hz: int, range_code: int, samples: np.ndarray
) -> bytes:
    """Encode int16 ``samples`` (count x channels) into one notification payload."""
    stream = StreamType(stream)
    raw = np.asarray(samples)
    if raw.size and (raw.min() < -32768 or raw.max() > 32767):
        raise ValueError("samples outside the int16 range: quantise with to_int16 first")
    if not 1 <= rate_hz <= 0xFFFF:
        raise ValueError(f"rate_hz {rate_hz} outside 1..65535")
    channel_scale(stream, range_code)  # rejects a range code the decoder would refuse
    arr = np.ascontiguousarray(raw, dtype="<i2").reshape(-1, CHANNELS[stream])
    count = arr.shape[0]
    if not 0 < count <= MAX_SAMPLES[stream]:
        raise ValueError(f"{count} samples do not fit one {stream.name} packet (max {MAX_SAMPLES[stream]})")
    body = HEADER.pack(
        PROTOCOL_VERSION, stream, seq & 0xFFFF, t0_us & 0xFFFFFFFF, rate_hz, count, range_code
    ) + arr.tobytes()
    return body + _crc(body).to_bytes(2, "little")


def encode_adpcm_packet(seq: int, t0_us: int, rate_hz: int, samples: np.ndarray,
                        state: adpcm.AdpcmState) -> tuple[bytes, adpcm.AdpcmState]:
    """Encode int16 microphone ``samples`` (1-D or (count, 1)) as one IMA ADPCM packet (stream type 3),
    starting from the encoder ``state`` (predictor, step index); return the payload and the new state
    (the firmware carries it to the next packet, so the audio is coded continuously)."""
    raw = np.asarray(samples).reshape(-1)
    if raw.size and (raw.min() < -32768 or raw.max() > 32767):
        raise ValueError("samples outside the int16 range: quantise with to_int16 first")
    if not 1 <= rate_hz <= 0xFFFF:
        raise ValueError(f"rate_hz {rate_hz} outside 1..65535")
    count = raw.shape[0]
    if not 0 < count <= MAX_ADPCM_SAMPLES:
        raise ValueError(f"{count} samples do not fit one ADPCM packet (max {MAX_ADPCM_SAMPLES})")
    nibbles, new_state = adpcm.encode(raw, state)
    body = HEADER.pack(PROTOCOL_VERSION, WIRE_MIC_ADPCM, seq & 0xFFFF, t0_us & 0xFFFFFFFF, rate_hz, count, 0)
    body += ADPCM_STATE.pack(int(state[0]), int(state[1]), 0) + nibbles
    return body + _crc(body).to_bytes(2, "little"), new_state


def _decode_adpcm(data: bytes, seq: int, t0_us: int, rate_hz: int, count: int, range_code: int) -> Packet:
    expected = HEADER.size + ADPCM_STATE.size + adpcm.encoded_bytes(count) + CRC_BYTES
    if count == 0 or len(data) != expected:
        raise PacketError("bad_count", f"ADPCM count {count} needs {expected} bytes, got {len(data)}")
    if rate_hz == 0:
        raise PacketError("bad_rate", "rate 0 Hz")
    channel_scale(StreamType.MIC_PCM16, range_code)  # validates the range code (0)
    pred, index, _reserved = ADPCM_STATE.unpack_from(data, HEADER.size)
    if index > adpcm.MAX_STEP_INDEX:
        raise PacketError("bad_codec_state", f"ADPCM step index {index} > {adpcm.MAX_STEP_INDEX}")
    pcm, _ = adpcm.decode(memoryview(data)[HEADER.size + ADPCM_STATE.size:], count, (pred, index))
    return Packet(StreamType.MIC_PCM16, seq, t0_us, rate_hz, range_code, pcm.reshape(count, 1), "ima_adpcm")


def decode_packet(data: bytes | bytearray | memoryview) -> Packet:
    """Decode one notification payload; raise :class:`PacketError` with a reason token otherwise.

    Reasons: ``truncated``, ``oversize``, ``bad_crc``, ``bad_version``, ``bad_stream``,
    ``bad_count``, ``bad_rate``, ``bad_range``, ``bad_codec_state``.
    """
    data = bytes(data)
    if len(data) < HEADER.size + CRC_BYTES:
        raise PacketError("truncated", f"{len(data)} bytes, header needs {HEADER.size + CRC_BYTES}")
    if len(data) > MAX_PACKET_BYTES:
        raise PacketError("oversize", f"{len(data)} bytes > {MAX_PACKET_BYTES}")
    # The CRC is checked first: a corrupt header would otherwise produce misleading reasons.
    if _crc(data[:-CRC_BYTES]) != int.from_bytes(data[-CRC_BYTES:], "little"):
        raise PacketError("bad_crc")
    version, stream_raw, seq, t0_us, rate_hz, count, range_code = HEADER.unpack_from(data)
    if version != PROTOCOL_VERSION:
        raise PacketError("bad_version", f"version {version}")
    if stream_raw == WIRE_MIC_ADPCM:
        return _decode_adpcm(data, seq, t0_us, rate_hz, count, range_code)
    try:
        stream = StreamType(stream_raw)
    except ValueError:
        raise PacketError("bad_stream", f"stream type {stream_raw}") from None
    channels = CHANNELS[stream]
    expected = HEADER.size + 2 * channels * count + CRC_BYTES
    if count == 0 or len(data) != expected:
        raise PacketError("bad_count", f"count {count} needs {expected} bytes, got {len(data)}")
    if rate_hz == 0:
        raise PacketError("bad_rate", "rate 0 Hz")
    channel_scale(stream, range_code)  # validates the range code
    samples = np.frombuffer(data, dtype="<i2", count=count * channels, offset=HEADER.size)
    return Packet(stream, seq, t0_us, rate_hz, range_code, samples.reshape(count, channels))


def to_int16(values: np.ndarray, scale: np.ndarray | float) -> np.ndarray:
    """Quantise physical values to int16 LSBs at ``scale`` units/LSB, saturating like a real ADC."""
    values = np.asarray(values, dtype=float)
    if np.isnan(values).any():  # +-inf saturates like an ADC, NaN has no reading
        raise ValueError("cannot quantise NaN")
    q = np.round(values / scale)
    return np.clip(q, -32768, 32767).astype(np.int16)
