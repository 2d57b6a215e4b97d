"""MQTT data frame v1 (jointmon.frames): layout, timing, every rejection reason, fuzzing."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jointmon.errors import FrameError
from jointmon.frames import (
    FLAG_GAP_BEFORE,
    FRAME_HEADER,
    FRAME_VERSION,
    MAX_FRAME_SAMPLES,
    MAX_RATE_HZ,
    MIN_RATE_HZ,
    Frame,
    decode_frame,
    encode_frame,
)
from jointmon.packets import CHANNELS, StreamType, channel_scale

IMU, MIC = StreamType.IMU, StreamType.MIC_PCM16
ALL_REASONS = {"truncated", "bad_version", "bad_stream", "bad_channels", "bad_count", "bad_rate", "bad_scale"}
T0 = 1_700_000_000_000_000_000


def _frame(stream: StreamType = IMU, count: int = 10, **kw: object) -> Frame:
    rng = np.random.default_rng(count)
    args: dict[str, object] = {
        "frame_seq": 7, "first_index": 1600, "t0_ns": T0,
        "rate_hz": 200.0 if stream == IMU else 16000.0,
        "scale": channel_scale(stream, 0x33 if stream == IMU else 0),
        "samples": rng.integers(-32768, 32768, size=(count, CHANNELS[stream])).astype(np.int16),
    }
    args.update(kw)
    return Frame(stream, **args)  # type: ignore[arg-type]


def _pack_header(payload: bytes, **fields: float) -> bytes:
    """Rewrite named header fields of an encoded frame."""
    names = ("version", "stream", "channels", "flags", "frame_seq", "first_index", "t0_ns", "rate_hz", "count")
    values = dict(zip(names, FRAME_HEADER.unpack_from(payload), strict=True))
    values.update(fields)
    return FRAME_HEADER.pack(*(values[n] for n in names)) + payload[FRAME_HEADER.size:]


def _reason(payload: bytes) -> str:
    with pytest.raises(FrameError) as info:
        decode_frame(payload)
    return info.value.reason


def _assert_frames_equal(a: Frame, b: Frame) -> None:
    assert a.stream is b.stream
    assert (a.frame_seq, a.first_index, a.t0_ns, a.rate_hz, a.flags) == (b.frame_seq, b.first_index, b.t0_ns,
                                                                         b.rate_hz, b.flags)
    np.testing.assert_array_equal(a.scale, b.scale)
    np.testing.assert_array_equal(a.samples, b.samples)


# --- layout ----------------------------------------------------------------------------------------


def test_header_is_36_bytes_and_sizes_match_the_doc() -> None:
    assert FRAME_HEADER.size == 36
    assert FRAME_VERSION == 1
    assert FLAG_GAP_BEFORE == 0x01
    assert len(encode_frame(_frame(IMU, 10))) == 36 + 6 * 8 + 10 * 12 == 204
    assert len(encode_frame(_frame(MIC, 800))) == 36 + 8 + 800 * 2 == 1644


def test_golden_vector_from_the_protocol_doc() -> None:
    f = Frame(MIC, 7, 1600, T0, 16000.0, np.array([1 / 32768]), np.array([[16384], [-32768]], dtype=np.int16),
              FLAG_GAP_BEFORE)
    assert encode_frame(f).hex(" ") == (
        "01 02 01 01 07 00 00 00 40 06 00 00 00 00 00 00 00 00 2a 36 fe 9c 97 17 00 00 00 00 00 40 cf 40 "
        "02 00 00 00 00 00 00 00 00 00 00 3f 00 40 00 80"
    )


def test_fields_are_little_endian_at_documented_offsets() -> None:
    f = _frame(IMU, 3, frame_seq=0x01020304, first_index=0x1122334455667788, t0_ns=-5, rate_hz=200.0,
               flags=FLAG_GAP_BEFORE)
    b = encode_frame(f)
    assert b[0:4] == bytes([1, 1, 6, 1])
    assert b[4:8] == b"\x04\x03\x02\x01"
    assert b[8:16] == bytes.fromhex("8877665544332211")
    assert struct.unpack_from("<q", b, 16)[0] == -5
    assert struct.unpack_from("<d", b, 24)[0] == 200.0
    assert struct.unpack_from("<I", b, 32)[0] == 3
    assert struct.unpack_from("<6d", b, 36) == tuple(f.scale)
    assert b[36 + 48:] == f.samples.astype("<i2").tobytes()


# --- round trip and derived values -----------------------------------------------------------------


@pytest.mark.parametrize(("stream", "count"), [(IMU, 1), (IMU, 10), (MIC, 1), (MIC, 800)])
@pytest.mark.parametrize("flags", [0, FLAG_GAP_BEFORE, 0xFF])
def test_round_trip(stream: StreamType, count: int, flags: int) -> None:
    f = _frame(stream, count, flags=flags, frame_seq=2**32 - 1, first_index=2**64 - 1, t0_ns=-(2**63))
    payload = encode_frame(f)
    g = decode_frame(payload)
    _assert_frames_equal(f, g)
    assert g.count == count
    assert g.samples.dtype == np.int16 and g.samples.shape == (count, CHANNELS[stream])
    assert encode_frame(g) == payload
    assert decode_frame(bytearray(payload)).count == decode_frame(memoryview(payload)).count == count


def test_frame_seq_is_masked_to_u32() -> None:
    assert decode_frame(encode_frame(_frame(frame_seq=2**32 + 5))).frame_seq == 5


def test_physical_uses_the_per_channel_scale() -> None:
    samples = np.array([[16384, 0, -32768, 32767, 0, -16384]], dtype=np.int16)
    f = decode_frame(encode_frame(_frame(IMU, 1, samples=samples, scale=channel_scale(IMU, 0x33))))
    np.testing.assert_allclose(f.physical(), [[8.0, 0.0, -16.0, 1999.93896484375, 0.0, -1000.0]])


def test_sample_times_ns_imu_200hz() -> None:
    f = _frame(IMU, 10, rate_hz=200.0)
    t = f.sample_times_ns()
    assert t.dtype == np.int64
    assert t[0] == T0
    np.testing.assert_array_equal(np.diff(t), 5_000_000)
    assert t[-1] == T0 + 45_000_000


def test_sample_times_ns_mic_16khz() -> None:
    t = _frame(MIC, 800, rate_hz=16000.0).sample_times_ns()
    np.testing.assert_array_equal(t[:4] - T0, [0, 62_500, 125_000, 187_500])
    assert t[-1] - T0 == 799 * 62_500


def test_sample_times_ns_round_without_accumulating_error() -> None:
    f = _frame(MIC, 3001, rate_hz=3.0, t0_ns=0)
    t = f.sample_times_ns()
    np.testing.assert_array_equal(t[:4], [0, 333_333_333, 666_666_667, 1_000_000_000])
    assert t[3000] == 1_000_000_000_000  # exactly 1000 s, no drift from summing a rounded period


def test_sample_times_ns_non_integer_rate() -> None:
    t = _frame(IMU, 3, rate_hz=199.5, t0_ns=10).sample_times_ns()
    np.testing.assert_array_equal(t, [10, 10 + round(1e9 / 199.5), 10 + round(2e9 / 199.5)])


# --- every rejection reason ------------------------------------------------------------------------


def test_truncated() -> None:
    payload = encode_frame(_frame(IMU, 10))
    for n in range(len(payload)):
        assert _reason(payload[:n]) == "truncated", n


def test_bad_version() -> None:
    payload = encode_frame(_frame())
    for v in (0, 2, 255):
        assert _reason(_pack_header(payload, version=v)) == "bad_version"


def test_bad_stream() -> None:
    payload = encode_frame(_frame())
    for s in (0, 3, 255):
        assert _reason(_pack_header(payload, stream=s)) == "bad_stream"


def test_bad_channels() -> None:
    imu = encode_frame(_frame(IMU))
    mic = encode_frame(_frame(MIC))
    assert _reason(_pack_header(imu, channels=1)) == "bad_channels"
    assert _reason(_pack_header(imu, channels=0)) == "bad_channels"
    assert _reason(_pack_header(mic, channels=6)) == "bad_channels"
    assert _reason(_pack_header(mic, stream=IMU)) == "bad_channels"  # stream says 6, channels says 1


def test_bad_count() -> None:
    payload = encode_frame(_frame(IMU, 10))
    assert _reason(_pack_header(payload, count=0)) == "bad_count"
    assert _reason(_pack_header(payload, count=MAX_FRAME_SAMPLES + 1)) == "bad_count"
    assert _reason(_pack_header(payload, count=2**32 - 1)) == "bad_count"
    assert _reason(_pack_header(payload, count=9)) == "bad_count"  # more bytes than count needs
    assert _reason(payload + b"\x00\x00") == "bad_count"
    assert _reason(_pack_header(payload, count=11)) == "truncated"  # fewer bytes than count needs
    assert _reason(payload[:-1]) == "truncated"


def test_max_frame_samples_is_accepted() -> None:
    f = _frame(MIC, MAX_FRAME_SAMPLES)
    assert decode_frame(encode_frame(f)).count == MAX_FRAME_SAMPLES


@pytest.mark.parametrize("rate", [0.0, -0.0, -200.0, math.nan, math.inf, -math.inf, 5e-324, 1e-4, 2e6])
def test_bad_rate(rate: float) -> None:
    assert _reason(_pack_header(encode_frame(_frame()), rate_hz=rate)) == "bad_rate"


@pytest.mark.parametrize("bad", [0.0, -0.0, -1.0, math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("channel", [0, 5])
def test_bad_scale(bad: float, channel: int) -> None:
    payload = bytearray(encode_frame(_frame(IMU)))
    struct.pack_into("<d", payload, 36 + 8 * channel, bad)
    assert _reason(bytes(payload)) == "bad_scale"


def test_frame_error_message_carries_reason_and_detail() -> None:
    with pytest.raises(FrameError, match=r"^truncated: 5 bytes, header needs 36$"):
        decode_frame(b"\x01" * 5)


def test_every_documented_reason_is_reachable() -> None:
    p = encode_frame(_frame())
    bad_scale = bytearray(p)
    struct.pack_into("<d", bad_scale, 36, -1.0)
    seen = {
        _reason(p[:10]),
        _reason(_pack_header(p, version=9)),
        _reason(_pack_header(p, stream=9)),
        _reason(_pack_header(p, channels=2)),
        _reason(_pack_header(p, count=0)),
        _reason(_pack_header(p, rate_hz=0.0)),
        _reason(bytes(bad_scale)),
    }
    assert seen == ALL_REASONS


# --- fuzzing ---------------------------------------------------------------------------------------


def _check_decode_contract(payload: bytes) -> None:
    try:
        f = decode_frame(payload)
    except FrameError as exc:
        assert exc.reason in ALL_REASONS
        return
    assert isinstance(f, Frame)
    assert encode_frame(f) == payload


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_frame_error_or_re_encode_exactly(payload: bytes) -> None:
    _check_decode_contract(payload)


@settings(max_examples=300, deadline=None)
@given(
    header=st.tuples(st.sampled_from([0, 1, 1, 2]), st.sampled_from([0, 1, 2, 3]), st.sampled_from([0, 1, 2, 6]),
                     st.integers(0, 255), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1),
                     st.integers(-(2**63), 2**63 - 1), st.floats(), st.integers(0, 40)),
    body=st.binary(max_size=600),
)
def test_arbitrary_headers_raise_only_frame_error_or_re_encode_exactly(header: tuple, body: bytes) -> None:
    _check_decode_contract(FRAME_HEADER.pack(*header) + body)


@pytest.mark.parametrize(("stream", "count"), [(IMU, 10), (MIC, 5)])
def test_every_single_bit_flip_in_header_and_scale(stream: StreamType, count: int) -> None:
    payload = encode_frame(_frame(stream, count))
    n_bits = 8 * (FRAME_HEADER.size + 8 * CHANNELS[stream])
    decoded = 0
    for bit in range(n_bits):
        b = bytearray(payload)
        b[bit // 8] ^= 1 << (bit % 8)
        _check_decode_contract(bytes(b))
        try:
            decode_frame(bytes(b))
            decoded += 1
        except FrameError:
            pass
    # flips in frame_seq, first_index, t0_ns and flags (4+8+8+1 bytes, 168 bits) always decode
    assert decoded >= 168


@settings(max_examples=200, deadline=None)
@given(stream=st.sampled_from([IMU, MIC]), data=st.data())
def test_generated_frames_round_trip(stream: StreamType, data: st.DataObject) -> None:
    c = CHANNELS[stream]
    count = data.draw(st.integers(1, 50))
    samples = np.array(data.draw(st.lists(st.integers(-32768, 32767), min_size=count * c, max_size=count * c)),
                       dtype=np.int16).reshape(count, c)
    positive = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)
    scale = np.array(data.draw(st.lists(positive, min_size=c, max_size=c)))
    f = Frame(stream, data.draw(st.integers(0, 2**32 - 1)), data.draw(st.integers(0, 2**64 - 1)),
              data.draw(st.integers(-(2**63), 2**63 - 1)),
              data.draw(st.floats(min_value=MIN_RATE_HZ, max_value=MAX_RATE_HZ)), scale, samples,
              data.draw(st.integers(0, 255)))
    g = decode_frame(encode_frame(f))
    _assert_frames_equal(f, g)
