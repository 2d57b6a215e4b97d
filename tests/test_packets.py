"""BLE notification packet v1 (jointmon.packets): layout, scaling, CRC and every rejection reason."""

from __future__ import annotations

import binascii
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jointmon.errors import PacketError
from jointmon.packets import (
    ACCEL_RANGES_G,
    CHANNELS,
    GYRO_RANGES_DPS,
    HEADER,
    MAX_PACKET_BYTES,
    MAX_SAMPLE_BYTES,
    MAX_SAMPLES,
    Packet,
    StreamType,
    channel_scale,
    decode_packet,
    encode_adpcm_packet,
    encode_packet,
    imu_range_code,
    to_int16,
)

IMU, MIC = StreamType.IMU, StreamType.MIC_PCM16
ALL_REASONS = {"truncated", "oversize", "bad_crc", "bad_version", "bad_stream", "bad_count", "bad_range", "bad_rate",
               "bad_codec_state"}


def _samples(stream: StreamType, count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-32768, 32768, size=(count, CHANNELS[stream])).astype(np.int16)


def _valid(stream: StreamType = IMU, count: int = 10, **kw: int) -> bytes:
    args = {"seq": 42, "t0_us": 123_456_789, "rate_hz": 200 if stream == IMU else 16000,
            "range_code": 0x33 if stream == IMU else 0}
    args.update(kw)
    return encode_packet(stream, samples=_samples(stream, count), **args)


def _reseal(body_and_crc: bytes | bytearray) -> bytes:
    """Replace the last two bytes by a valid CRC over everything before them."""
    body = bytes(body_and_crc[:-2])
    return body + binascii.crc_hqx(body, 0xFFFF).to_bytes(2, "little")


def _patch(packet: bytes, offset: int, value: bytes) -> bytes:
    """Overwrite bytes at ``offset`` and re-seal with a valid CRC."""
    b = bytearray(packet)
    b[offset:offset + len(value)] = value
    return _reseal(b)


def _reason(data: bytes) -> str:
    with pytest.raises(PacketError) as info:
        decode_packet(data)
    return info.value.reason


# --- layout constants ------------------------------------------------------------------------------


def test_size_constants_match_the_documented_budget() -> None:
    assert HEADER.size == 12
    assert MAX_PACKET_BYTES == 244  # ATT MTU 247 - 3
    assert MAX_SAMPLE_BYTES == 230
    assert MAX_SAMPLES[IMU] == 19
    assert MAX_SAMPLES[MIC] == 115
    assert len(_valid(IMU, 19)) == 12 + 19 * 12 + 2 == 242
    assert len(_valid(MIC, 115)) == 12 + 115 * 2 + 2 == 244
    # reference firmware packets
    assert len(_valid(IMU, 10)) == 134
    assert len(_valid(MIC, 100)) == 214


def test_crc_is_ccitt_false_with_its_check_value() -> None:
    assert binascii.crc_hqx(b"123456789", 0xFFFF) == 0x29B1


def test_golden_vectors_from_the_protocol_doc() -> None:
    imu = encode_packet(IMU, 1, 1_000_000, 200, 0x33, np.array([[0, 0, 2048, 0, 0, 0]]))
    assert imu.hex(" ") == "01 01 01 00 40 42 0f 00 c8 00 01 33 00 00 00 00 00 08 00 00 00 00 00 00 8f 88"
    mic = encode_packet(MIC, 0xFFFF, 0xFFFFFFFF, 16000, 0, np.array([16384, -32768]))
    assert mic.hex(" ") == "01 02 ff ff ff ff ff ff 80 3e 02 00 00 40 00 80 bc d2"
    p = decode_packet(imu)
    assert p.physical()[0, 2] == pytest.approx(1.0)


def test_header_fields_are_little_endian_at_documented_offsets() -> None:
    samples = _samples(IMU, 3)
    data = encode_packet(IMU, 0x1234, 0x89ABCDEF, 0x0190, 0x21, samples)
    assert data[0] == 1
    assert data[1] == 1
    assert data[2:4] == b"\x34\x12"
    assert data[4:8] == b"\xef\xcd\xab\x89"
    assert data[8:10] == b"\x90\x01"
    assert data[10] == 3
    assert data[11] == 0x21
    assert data[12:-2] == samples.astype("<i2").tobytes()  # row-major: sample 0 all channels first
    assert int.from_bytes(data[-2:], "little") == binascii.crc_hqx(data[:-2], 0xFFFF)


# --- round trips -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("stream", "count"), [(IMU, 1), (IMU, 2), (IMU, 10), (IMU, 19),
                                               (MIC, 1), (MIC, 7), (MIC, 100), (MIC, 115)])
def test_round_trip(stream: StreamType, count: int) -> None:
    samples = _samples(stream, count, seed=count)
    rate = 200 if stream == IMU else 16000
    code = imu_range_code(8.0, 1000.0) if stream == IMU else 0
    data = encode_packet(stream, 65535, 4_000_000_000, rate, code, samples)
    p = decode_packet(data)
    assert p.stream is stream
    assert (p.seq, p.t0_us, p.rate_hz, p.range_code) == (65535, 4_000_000_000, rate, code)
    assert p.samples.dtype == np.int16
    assert p.samples.shape == (count, CHANNELS[stream])
    np.testing.assert_array_equal(p.samples, samples)
    assert encode_packet(p.stream, p.seq, p.t0_us, p.rate_hz, p.range_code, p.samples) == data


def test_decode_accepts_bytearray_and_memoryview() -> None:
    data = _valid(MIC, 5)
    for view in (bytearray(data), memoryview(data)):
        np.testing.assert_array_equal(decode_packet(view).samples, decode_packet(data).samples)


def test_flat_samples_are_reshaped_to_channels() -> None:
    flat = np.arange(12, dtype=np.int16)
    p = decode_packet(encode_packet(IMU, 0, 0, 200, 0, flat))
    np.testing.assert_array_equal(p.samples, flat.reshape(2, 6))


@pytest.mark.parametrize(("given_t0", "wire_t0"), [(2**32, 0), (2**32 + 5, 5), (2**33 + 7, 7), (2**32 - 1, 2**32 - 1)])
def test_t0_is_masked_to_u32(given_t0: int, wire_t0: int) -> None:
    assert decode_packet(_valid(t0_us=given_t0)).t0_us == wire_t0


@pytest.mark.parametrize(("given_seq", "wire_seq"), [(2**16, 0), (2**16 + 3, 3), (5 * 2**16 + 9, 9), (-1, 65535)])
def test_seq_is_masked_to_u16(given_seq: int, wire_seq: int) -> None:
    assert decode_packet(_valid(seq=given_seq)).seq == wire_seq


# --- scaling ---------------------------------------------------------------------------------------


def test_range_codes() -> None:
    assert imu_range_code(2.0, 250.0) == 0x00
    assert imu_range_code(4.0, 500.0) == 0x11
    assert imu_range_code(8.0, 250.0) == 0x20
    assert imu_range_code(16.0, 2000.0) == 0x33
    assert imu_range_code(2.0, 2000.0) == 0x03
    with pytest.raises(ValueError):
        imu_range_code(3.0, 250.0)


@pytest.mark.parametrize("accel_idx", range(4))
@pytest.mark.parametrize("gyro_idx", range(4))
def test_channel_scale_is_range_over_32768(accel_idx: int, gyro_idx: int) -> None:
    scale = channel_scale(IMU, accel_idx << 4 | gyro_idx)
    np.testing.assert_allclose(scale[:3], ACCEL_RANGES_G[accel_idx] / 32768)
    np.testing.assert_allclose(scale[3:], GYRO_RANGES_DPS[gyro_idx] / 32768)


def test_physical_numbers() -> None:
    raw = np.array([[16384, -32768, 0, 32767, -16384, 1]], dtype=np.int16)
    p = decode_packet(encode_packet(IMU, 0, 0, 200, imu_range_code(16.0, 2000.0), raw))
    phys = p.physical()
    assert phys.dtype == np.float64
    assert phys[0, 0] == 8.0  # 16384 LSB at +-16 g
    assert phys[0, 1] == -16.0
    assert phys[0, 2] == 0.0
    assert phys[0, 3] == pytest.approx(1999.93896484375)  # 32767 LSB at +-2000 deg/s
    assert phys[0, 4] == -1000.0
    assert phys[0, 5] == pytest.approx(2000 / 32768)

    p2 = decode_packet(encode_packet(IMU, 0, 0, 200, imu_range_code(2.0, 250.0), raw))
    assert p2.physical()[0, 0] == 1.0  # 16384 LSB at +-2 g
    assert p2.physical()[0, 3] == pytest.approx(249.992370605)

    mic = decode_packet(encode_packet(MIC, 0, 0, 16000, 0, np.array([16384, -32768, 32767], dtype=np.int16)))
    np.testing.assert_allclose(mic.physical()[:, 0], [0.5, -1.0, 32767 / 32768])


def test_to_int16_rounds_and_saturates() -> None:
    lsb_g = 16.0 / 32768
    np.testing.assert_array_equal(to_int16(np.array([8.0, -8.0, 1.0, 0.0]), lsb_g), [16384, -16384, 2048, 0])
    np.testing.assert_array_equal(to_int16(np.array([16.0, 100.0, -16.0, -100.0]), lsb_g),
                                  [32767, 32767, -32768, -32768])
    np.testing.assert_array_equal(to_int16(np.array([1e12, -1e12, np.inf, -np.inf]), 1.0),
                                  [32767, -32768, 32767, -32768])
    assert to_int16(np.array([0.4, 0.6, -0.6]), 1.0).tolist() == [0, 1, -1]
    assert to_int16(np.zeros(3), 1.0).dtype == np.int16
    # per-channel scale broadcasts, as channel_scale() returns it
    scale = channel_scale(IMU, 0x33)
    q = to_int16(np.array([[1.0, 0, 0, 1000.0, 0, 0]]), scale)
    np.testing.assert_array_equal(q, [[2048, 0, 0, 16384, 0, 0]])


def test_to_int16_then_physical_is_within_half_an_lsb() -> None:
    rng = np.random.default_rng(1)
    values = rng.uniform(-15.9, 15.9, size=(19, 6))
    scale = channel_scale(IMU, 0x33)
    values[:, 3:] *= 125  # gyro in deg/s, inside +-2000
    p = decode_packet(encode_packet(IMU, 0, 0, 200, 0x33, to_int16(values, scale)))
    assert np.all(np.abs(p.physical() - values) <= scale / 2 + 1e-12)


# --- encoder limits --------------------------------------------------------------------------------


@pytest.mark.parametrize(("stream", "count"), [(IMU, 20), (IMU, 0), (MIC, 116), (MIC, 0), (MIC, 1000)])
def test_encode_rejects_counts_that_do_not_fit(stream: StreamType, count: int) -> None:
    with pytest.raises(ValueError, match="do not fit"):
        encode_packet(stream, 0, 0, 200, 0, np.zeros((count, CHANNELS[stream]), dtype=np.int16))


def test_encode_rejects_a_partial_imu_sample() -> None:
    with pytest.raises(ValueError):
        encode_packet(IMU, 0, 0, 200, 0, np.zeros(7, dtype=np.int16))


def test_encode_rejects_an_unknown_stream() -> None:
    with pytest.raises(ValueError):
        encode_packet(3, 0, 0, 200, 0, np.zeros(1, dtype=np.int16))  # type: ignore[arg-type]


# --- every rejection reason ------------------------------------------------------------------------


@pytest.mark.parametrize(("stream", "count"), [(IMU, 1), (IMU, 19), (MIC, 1), (MIC, 115)])
def test_every_truncation_is_a_packet_error(stream: StreamType, count: int) -> None:
    data = _valid(stream, count)
    for n in range(len(data)):
        reason = _reason(data[:n])
        if n < 14:
            assert reason == "truncated", n
        else:
            assert reason in ALL_REASONS, (n, reason)


def test_oversize_is_checked_before_the_crc() -> None:
    data = _valid(MIC, 115)
    assert _reason(data + b"\x00") == "oversize"
    assert _reason(_reseal(data[:-2] + b"\x00\x00" + b"\x00\x00")) == "oversize"
    assert _reason(bytes(1000)) == "oversize"


@pytest.mark.parametrize(("stream", "count"), [(IMU, 1), (IMU, 10), (MIC, 100), (MIC, 115)])
def test_every_single_bit_flip_is_bad_crc(stream: StreamType, count: int) -> None:
    data = _valid(stream, count)
    for bit in range(8 * len(data)):
        b = bytearray(data)
        b[bit // 8] ^= 1 << (bit % 8)
        assert _reason(bytes(b)) == "bad_crc", bit


def test_crc_is_checked_before_header_fields() -> None:
    b = bytearray(_valid())
    b[0] = 2  # bad version, but CRC not recomputed
    assert _reason(bytes(b)) == "bad_crc"


@pytest.mark.parametrize("version", [0, 2, 255])
def test_bad_version(version: int) -> None:
    assert _reason(_patch(_valid(), 0, bytes([version]))) == "bad_version"


@pytest.mark.parametrize("stream", [0, 4, 255])  # 3 is the ADPCM microphone (v1.1)
def test_bad_stream(stream: int) -> None:
    assert _reason(_patch(_valid(), 1, bytes([stream]))) == "bad_stream"


def test_bad_count() -> None:
    data = _valid(IMU, 10)
    assert _reason(_patch(data, 10, bytes([11]))) == "bad_count"  # claims more than present
    assert _reason(_patch(data, 10, bytes([9]))) == "bad_count"  # claims fewer than present
    assert _reason(_patch(data, 10, bytes([0]))) == "bad_count"
    header_only = _reseal(_valid(MIC, 1)[:12] + b"\x00\x00")
    header_only = _patch(header_only, 10, bytes([0]))
    assert len(header_only) == 14
    assert _reason(header_only) == "bad_count"  # count 0, no samples
    # a valid mic packet of 6 samples relabelled as IMU: 12 bytes of samples = 1 IMU sample, count says 6
    assert _reason(_patch(_valid(MIC, 6), 1, bytes([IMU]))) == "bad_count"
    # an IMU packet with 2 bytes of trailing junk before the CRC
    assert _reason(_reseal(data[:-2] + b"\x00\x00" + b"\x00\x00")) == "bad_count"


def test_relabelled_stream_with_consistent_count_decodes_as_the_other_stream() -> None:
    # 1 IMU sample = 12 bytes = 6 mic samples: the CRC cannot tell, the count can
    data = _patch(_patch(_valid(IMU, 1), 1, bytes([MIC])), 10, bytes([6]))
    p = decode_packet(_patch(data, 11, b"\x00"))
    assert p.stream is MIC and p.samples.shape == (6, 1)


@pytest.mark.parametrize("code", [0x40, 0x04, 0x44, 0xF0, 0x0F, 0xFF, 0x34, 0x43])
def test_bad_range(code: int) -> None:
    assert _reason(_patch(_valid(IMU), 11, bytes([code]))) == "bad_range"
    with pytest.raises(PacketError) as info:
        channel_scale(IMU, code)
    assert info.value.reason == "bad_range"


def test_bad_rate() -> None:
    assert _reason(_patch(_valid(IMU), 8, b"\x00\x00")) == "bad_rate"
    assert _reason(_patch(_valid(MIC), 8, b"\x00\x00")) == "bad_rate"
    assert decode_packet(_patch(_valid(MIC), 8, b"\xff\xff")).rate_hz == 65535


def test_packet_error_message_carries_reason_and_detail() -> None:
    with pytest.raises(PacketError, match=r"^truncated: 3 bytes"):
        decode_packet(b"\x01\x01\x00")
    with pytest.raises(PacketError, match=r"^bad_crc$"):
        decode_packet(_valid()[:-1] + b"\x00")


def test_every_documented_reason_is_reachable() -> None:
    seen = {
        _reason(b""),
        _reason(bytes(245)),
        _reason(_valid()[:-1] + bytes([_valid()[-1] ^ 1])),
        _reason(_patch(_valid(), 0, b"\x02")),
        _reason(_patch(_valid(), 1, b"\x09")),
        _reason(_patch(_valid(), 10, b"\x00")),
        _reason(_patch(_valid(), 11, b"\x50")),
        _reason(_patch(_valid(), 8, b"\x00\x00")),
        _reason(_patch(_adpcm(), HEADER.size + 2, bytes([89]))),  # ADPCM step index past the table's 88
    }
    assert seen == ALL_REASONS


def _adpcm() -> bytes:
    data, _ = encode_adpcm_packet(1, 1000, 16000, _samples(MIC, 20), (0, 0))
    return data


# --- fuzzing ---------------------------------------------------------------------------------------


def _check_decode_contract(data: bytes) -> None:
    try:
        p = decode_packet(data)
    except PacketError as exc:
        assert exc.reason in ALL_REASONS
        return
    assert isinstance(p, Packet)
    if p.codec == "ima_adpcm":  # lossy: the decoded samples re-encode as PCM16, not to these bytes
        count = HEADER.unpack_from(data)[5]
        assert p.samples.dtype == np.int16 and p.samples.shape == (count, 1)
        assert np.array_equal(decode_packet(data).samples, p.samples)  # deterministic
        return
    assert encode_packet(p.stream, p.seq, p.t0_us, p.rate_hz, p.range_code, p.samples) == data


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_packet_error_or_re_encode_exactly(data: bytes) -> None:
    _check_decode_contract(data)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    header=st.tuples(st.sampled_from([0, 1, 1, 1, 2]), st.sampled_from([0, 1, 1, 2, 2, 3]),
                     st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.sampled_from([0, 1, 200, 16000, 0xFFFF]),
                     st.integers(0, 255), st.integers(0, 255)),
    body=st.binary(max_size=240),
)
def test_crc_valid_random_headers_raise_only_packet_error_or_re_encode_exactly(
    header: tuple[int, ...], body: bytes
) -> None:
    """Past the CRC check: a correctly sealed packet with arbitrary header fields and length."""
    data = HEADER.pack(*header) + body
    _check_decode_contract(data + binascii.crc_hqx(data, 0xFFFF).to_bytes(2, "little"))


@settings(max_examples=200, deadline=None)
@given(stream=st.sampled_from([IMU, MIC]), data=st.data())
def test_generated_packets_round_trip(stream: StreamType, data: st.DataObject) -> None:
    count = data.draw(st.integers(1, MAX_SAMPLES[stream]))
    values = data.draw(st.lists(st.integers(-32768, 32767), min_size=count * CHANNELS[stream],
                                max_size=count * CHANNELS[stream]))
    seq = data.draw(st.integers(0, 2**20))
    t0 = data.draw(st.integers(0, 2**40))
    rate = data.draw(st.integers(1, 0xFFFF))
    code = data.draw(st.integers(0, 3)) << 4 | data.draw(st.integers(0, 3)) if stream == IMU else 0
    samples = np.array(values, dtype=np.int16).reshape(count, CHANNELS[stream])
    wire = encode_packet(stream, seq, t0, rate, code, samples)
    assert len(wire) == 14 + samples.nbytes
    p = decode_packet(wire)
    assert (p.seq, p.t0_us, p.rate_hz, p.range_code) == (seq & 0xFFFF, t0 & 0xFFFFFFFF, rate, code)
    np.testing.assert_array_equal(p.samples, samples)
    assert struct.unpack_from("<H", wire, len(wire) - 2)[0] == binascii.crc_hqx(wire[:-2], 0xFFFF)


def test_encoder_refuses_what_the_decoder_would_reject() -> None:
    with pytest.raises(ValueError):
        encode_packet(IMU, 0, 0, 200, 0x33, np.full((1, 6), 40000))  # not int16: would wrap silently
    with pytest.raises(ValueError):
        encode_packet(IMU, 0, 0, 0, 0x33, np.zeros((1, 6)))  # rate 0
    with pytest.raises(PacketError):
        encode_packet(MIC, 0, 0, 16000, 0x11, np.zeros(4))  # microphone range code must be 0
    with pytest.raises(ValueError):
        to_int16(np.array([np.nan]), 1.0)
