"""The per-message fast paths (caches in frame decoding, topic parsing, routing) give what the plain code gave."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.joint_router import JointRouter
from jointmon.errors import FrameError, TopicError
from jointmon.frames import Frame, decode_frame, encode_frame
from jointmon.packets import StreamType
from jointmon.topics import DataTopic, parse_data_topic


class _Sink:
    def __init__(self) -> None:
        self.events: list[object] = []

    def angles(self, *args: object) -> None:
        pass

    def event(self, event: object) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass


def _imu(seq: int, scale: float = 16 / 32768) -> Frame:
    samples = np.arange(60, dtype=np.int16).reshape(10, 6)
    return Frame(StreamType.IMU, seq, 10 * seq, 1_700_000_000_000_000_000 + seq * 50_000_000, 200.0,
                 np.full(6, scale), samples)


def test_sample_times_are_the_formula_and_independent_arrays() -> None:
    for count, rate in [(1, 200.0), (10, 200.0), (800, 16000.0), (7, 333.3)]:
        f = Frame(StreamType.MIC_PCM16, 0, 0, 1_700_000_000_123_456_789, rate, np.ones(1),
                  np.zeros((count, 1), np.int16))
        want = f.t0_ns + np.round(np.arange(count) * (1e9 / rate)).astype(np.int64)
        got = f.sample_times_ns()
        assert got.dtype == np.int64 and np.array_equal(got, want)
        got += 5  # the caller owns the array: the next call is unchanged
        assert np.array_equal(f.sample_times_ns(), want)


def test_decode_checks_every_scale_and_copies_mutable_payloads() -> None:
    good = encode_frame(_imu(0))
    assert decode_frame(good).scale[0] == 16 / 32768
    bad = bytearray(encode_frame(_imu(1)))
    bad[36:44] = np.array([-1.0]).tobytes()  # a negative scale after good frames of the same stream
    with pytest.raises(FrameError) as exc:
        decode_frame(bad)
    assert exc.value.reason == "bad_scale"
    buf = bytearray(good)
    frame = decode_frame(memoryview(buf))
    buf[36 + 48:] = bytes(len(buf) - 36 - 48)  # the sender reuses its buffer: the frame must not change
    assert np.array_equal(frame.samples, _imu(0).samples)


def test_parse_data_topic_cached_and_bad_topics_raise_each_time() -> None:
    a = parse_data_topic("jointmon/v1/data/ath-1/left_knee/thigh/imu")
    assert a == DataTopic("ath-1", "left_knee", "thigh", "imu")
    assert parse_data_topic("jointmon/v1/data/ath-1/left_knee/thigh/imu") is a
    for _ in range(2):
        with pytest.raises(TopicError):
            parse_data_topic("jointmon/v1/data/ath-1/left_knee/thigh/video")


def test_router_counts_and_a_dropped_first_frame_makes_no_pipeline() -> None:
    router = JointRouter("s", _Sink())
    mic = DataTopic("ath-1", "left_knee", "thigh", "mic")
    assert not router.route(mic, _imu(0))  # an IMU frame on a microphone topic
    assert router.counters["dropped_stream_mismatch"] == 1 and not router.pipelines
    imu = DataTopic("ath-1", "left_knee", "thigh", "imu")
    assert router.route(imu, _imu(0)) and router.route(imu, _imu(3))
    assert not router.route(imu, _imu(2))  # behind the last one
    assert router.counters["frames"] == 2 and router.counters["frames_missing"] == 2
    assert router.counters["dropped_duplicate_frame"] == 1
    assert router.samples["ath-1/left_knee/thigh/imu"] == 20 and list(router.pipelines) == [("ath-1", "left_knee")]
    assert router.first_ns == _imu(0).t0_ns and router.end_ns == _imu(3).t0_ns + 50_000_000
