"""Fuzzing (hypothesis) the packet decoder, the frame decoder, gap records and the gateway's receive
path: only the documented error types and reasons come out, and the counters add up."""

from __future__ import annotations

import binascii

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jointmon.errors import FrameError, PacketError
from jointmon.frames import Frame, Gap, decode_frame, encode_frame
from jointmon.packets import StreamType, decode_packet, encode_adpcm_packet, encode_packet
from sensor_gateway.gateway import SensorDecoder

PACKET_REASONS = {"truncated", "oversize", "bad_crc", "bad_version", "bad_stream", "bad_count", "bad_rate",
                  "bad_range", "bad_codec_state"}
FRAME_REASONS = {"truncated", "bad_version", "bad_stream", "bad_channels", "bad_count", "bad_rate", "bad_scale"}
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_rng = np.random.default_rng(0)
VALID_PACKETS = [
    encode_packet(StreamType.IMU, 1, 1_000_000, 200, 0x33, _rng.integers(-2000, 2000, (10, 6))),
    encode_packet(StreamType.MIC_PCM16, 7, 5_000, 16000, 0, _rng.integers(-9000, 9000, (100, 1))),
    encode_adpcm_packet(9, 5_000, 16000, _rng.integers(-9000, 9000, 200), (120, 30))[0],
]
VALID_FRAME = encode_frame(Frame(StreamType.MIC_PCM16, 3, 800, 1_700_000_000_000_000_000, 16000.0,
                                 np.array([1 / 32768]), _rng.integers(-100, 100, (40, 1)).astype(np.int16), 1))


def _fix_crc(data: bytes) -> bytes:
    return data[:-2] + binascii.crc_hqx(data[:-2], 0xFFFF).to_bytes(2, "little") if len(data) >= 14 else data


@st.composite
def mutated_packets(draw: st.DrawFn) -> bytes:
    """A valid packet with some bytes changed, cut or extended; usually with a correct CRC, so that the
    checks after the CRC are exercised too."""
    data = bytearray(draw(st.sampled_from(VALID_PACKETS)))
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(-3, 3))
    data = data[:cut] if cut < 0 else data + bytes(cut)
    return _fix_crc(bytes(data)) if draw(st.integers(0, 9)) else bytes(data)  # 9 in 10 with a good CRC


def _check_packet(data: bytes) -> bool:
    try:
        pkt = decode_packet(data)
    except PacketError as exc:
        assert exc.reason in PACKET_REASONS, exc.reason
        return False
    assert pkt.samples.dtype == np.int16 and pkt.samples.shape[0] >= 1
    assert pkt.stream in (StreamType.IMU, StreamType.MIC_PCM16)
    return True


@FUZZ
@given(st.binary(max_size=300))
def test_packet_decoder_random_bytes(data: bytes) -> None:
    _check_packet(data)


@FUZZ
@given(mutated_packets())
def test_packet_decoder_mutated_packets(data: bytes) -> None:
    _check_packet(data)


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    data = bytearray(VALID_FRAME)
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(-4, 4))
    return bytes(data[:cut] if cut < 0 else data + bytes(cut))


@FUZZ
@given(st.one_of(st.binary(max_size=200), mutated_frames()))
def test_frame_decoder_only_frame_errors(data: bytes) -> None:
    try:
        frame = decode_frame(data)
    except FrameError as exc:
        assert exc.reason in FRAME_REASONS, exc.reason
        return
    assert decode_frame(encode_frame(frame)).samples.tobytes() == frame.samples.tobytes()


GAP = Gap(StreamType.IMU, "lost", 1_700_000_000_000_000_000, 50_000_000, 10, 1, 42, 1000, 200.0)


@FUZZ
@given(st.one_of(st.binary(max_size=80), st.dictionaries(st.sampled_from(sorted(GAP.__slots__)),
                                                         st.one_of(st.integers(), st.text(max_size=5), st.floats(),
                                                                   st.booleans(), st.none())).map(
    lambda d: __import__("json").dumps(d).encode())))
def test_gap_record_parser_only_bad_gap(data: bytes) -> None:
    try:
        Gap.from_json(data)
    except FrameError as exc:
        assert exc.reason == "bad_gap"


def test_gap_record_roundtrip() -> None:
    assert Gap.from_json(GAP.to_json()) == GAP


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from([StreamType.IMU, StreamType.MIC_PCM16]),
                          st.one_of(mutated_packets(), st.binary(max_size=60))), max_size=60),
       st.lists(st.integers(0, 40_000_000), max_size=60))
def test_gateway_counters_add_up(notes: list[tuple[StreamType, bytes]], delays: list[int]) -> None:
    dec = SensorDecoder("ath-001", "left_knee", "shank")
    frames = []
    t = 1_700_000_000_000_000_000
    for k, (expected, data) in enumerate(notes):
        t += delays[k] if k < len(delays) else 6_000_000
        frames += dec.push(expected, data, t)
    frames += dec.flush()
    c = dec.counters
    rejected = sum(v for k, v in c.items() if k.startswith("rejected_"))
    assert c["packets_received"] == len(notes) == c["packets_decoded"] + rejected
    s = dec.stream_counters()
    assert c["packets_decoded"] == s["packets"] + s["stale_seq"] + s["overlap_dropped"]
    assert sum(f.count for _, f in frames) == s["samples"]  # every accepted sample went out in a frame
