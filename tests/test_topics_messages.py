"""MQTT topic tree (jointmon.topics) and JSON message schemas (jointmon.messages)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jointmon.errors import MessageError, TopicError
from jointmon.messages import EVENT_TYPES, JointEvent, Status
from jointmon.topics import (
    DATA_SUBSCRIPTION,
    EVENTS_SUBSCRIPTION,
    STATUS_SUBSCRIPTION,
    DataTopic,
    check_level,
    events_topic,
    parse_data_topic,
    parse_events_topic,
    status_topic,
)

# ================================================================================================
# topics
# ================================================================================================

GOOD = "jointmon/v1/data/ath-7f3c/left_knee/thigh/imu"
LEVEL = st.text(alphabet="abcXYZ019_-.", min_size=1, max_size=64)


def test_data_topic_build_and_parse() -> None:
    t = DataTopic("ath-7f3c", "left_knee", "thigh", "imu")
    assert str(t) == GOOD
    assert parse_data_topic(GOOD) == t
    assert parse_data_topic("jointmon/v1/data/P.01/right_shoulder/upper_arm/mic") == DataTopic(
        "P.01", "right_shoulder", "upper_arm", "mic"
    )


@settings(max_examples=200, deadline=None)
@given(athlete=LEVEL, joint=LEVEL, sensor=LEVEL, stream=st.sampled_from(["imu", "mic"]))
def test_data_topic_round_trip(athlete: str, joint: str, sensor: str, stream: str) -> None:
    t = DataTopic(athlete, joint, sensor, stream)
    assert parse_data_topic(str(t)) == t
    assert str(t).count("/") == 6


def test_subscriptions() -> None:
    assert DATA_SUBSCRIPTION == "jointmon/v1/data/#"
    assert EVENTS_SUBSCRIPTION == "jointmon/v1/events/#"
    assert STATUS_SUBSCRIPTION == "jointmon/v1/status/#"


@pytest.mark.parametrize(
    "topic",
    [
        "jointmon/v1/data/ath/left_knee/thigh",  # too few levels
        "jointmon/v1/data/ath/left_knee/thigh/imu/extra",  # too many levels
        "jointmon/v1/data/ath/left_knee/thigh/imu/",  # trailing slash = empty extra level
        "/jointmon/v1/data/ath/left_knee/thigh/imu",  # leading slash
        "",
        "jointmon/v2/data/ath/left_knee/thigh/imu",  # wrong version
        "jointmon/v1/events/ath/left_knee/thigh/imu",  # wrong kind
        "other/v1/data/ath/left_knee/thigh/imu",
        "jointmon/v1/data/+/left_knee/thigh/imu",  # wildcards are filters, not topics
        "jointmon/v1/data/ath/#/thigh/imu",
        "jointmon/v1/data/ath/left_knee/+/imu",
        "jointmon/v1/data/ath//thigh/imu",  # empty level
        "jointmon/v1/data/ath/left knee/thigh/imu",  # space
        "jointmon/v1/data/Jos\u00e9/left_knee/thigh/imu",  # non-ASCII
        "jointmon/v1/data/ath/left_knee/thigh/accel",  # bad stream
        "jointmon/v1/data/ath/left_knee/thigh/IMU",
        "jointmon/v1/data/" + "a" * 65 + "/left_knee/thigh/imu",  # level too long
    ],
)
def test_parse_data_topic_rejects(topic: str) -> None:
    with pytest.raises(TopicError):
        parse_data_topic(topic)


def test_level_length_limit_is_64() -> None:
    assert parse_data_topic("jointmon/v1/data/" + "a" * 64 + "/k/s/imu").athlete == "a" * 64


@pytest.mark.parametrize("field", ["athlete", "joint", "sensor"])
@pytest.mark.parametrize("bad", ["+", "#", "a/b", "a+b", "x#", "", " ", "a b", "$SYS", "\u00e9", "a" * 65, "a\x00"])
def test_data_topic_rejects_bad_levels(field: str, bad: str) -> None:
    kwargs = {"athlete": "ath", "joint": "left_knee", "sensor": "thigh", "stream": "imu", field: bad}
    with pytest.raises(TopicError, match=field):
        DataTopic(**kwargs)


@pytest.mark.parametrize("stream", ["accel", "IMU", "Mic", "audio", "+", "#", ""])
def test_data_topic_rejects_bad_stream(stream: str) -> None:
    with pytest.raises(TopicError, match="stream"):
        DataTopic("ath", "left_knee", "thigh", stream)


@pytest.mark.parametrize("value", [None, 5, b"ath", ["ath"]])
def test_non_string_levels_are_topic_errors(value: Any) -> None:
    with pytest.raises(TopicError):
        check_level("athlete", value)
    with pytest.raises(TopicError):
        DataTopic(value, "left_knee", "thigh", "imu")


@pytest.mark.parametrize("bad", ["ath\n", "left_knee\n"])
def test_trailing_newline_is_not_a_valid_level(bad: str) -> None:
    with pytest.raises(TopicError):
        check_level("athlete", bad)


def test_parse_rejects_a_level_with_a_trailing_newline() -> None:
    with pytest.raises(TopicError):
        parse_data_topic("jointmon/v1/data/ath\n/left_knee/thigh/imu")


def test_events_topic() -> None:
    assert events_topic("ath-7f3c", "left_knee") == "jointmon/v1/events/ath-7f3c/left_knee"
    assert parse_events_topic("jointmon/v1/events/ath-7f3c/left_knee") == ("ath-7f3c", "left_knee")
    for bad in ("+", "#", "a/b", ""):
        with pytest.raises(TopicError):
            events_topic(bad, "left_knee")
        with pytest.raises(TopicError):
            events_topic("ath", bad)
    for topic in ("jointmon/v1/events/ath", "jointmon/v1/events/ath/left_knee/x", "jointmon/v1/events/+/left_knee",
                  "jointmon/v1/data/ath/left_knee", GOOD):
        with pytest.raises(TopicError):
            parse_events_topic(topic)


def test_status_topic() -> None:
    assert status_topic("gateway", "gw-lab1") == "jointmon/v1/status/gateway/gw-lab1"
    assert status_topic("analysis", "worker.0") == "jointmon/v1/status/analysis/worker.0"
    for component, cid in (("gateway", "+"), ("gateway", "#"), ("gate/way", "x"), ("", "x"), ("gateway", "")):
        with pytest.raises(TopicError):
            status_topic(component, cid)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("jointmv1/dateimcs+#_-. \n\x00\u00e9")), max_size=60) | st.text())
def test_parse_raises_only_topic_error(topic: str) -> None:
    for parse in (parse_data_topic, parse_events_topic):
        try:
            result = parse(topic)
        except TopicError:
            continue
        if isinstance(result, DataTopic):
            assert str(result) == topic
        else:
            assert events_topic(*result) == topic
        assert "+" not in topic and "#" not in topic


# ================================================================================================
# messages
# ================================================================================================


def _event(**kw: Any) -> JointEvent:
    args: dict[str, Any] = {
        "type": "click", "athlete": "ath-7f3c", "joint": "left_knee", "session": "s-20240611-01",
        "t_ns": 1_718_100_000_123_456_789, "stream_t_s": 42.5181, "sensor": "shank", "confidence": 0.87,
        "magnitude": 14.2, "details": {"knee_flexion_deg": 63.0},
    }
    args.update(kw)
    return JointEvent(**args)


def _event_dict(**kw: Any) -> dict[str, Any]:
    d = json.loads(_event().to_json())
    d.update(kw)
    return d


def test_event_wire_keys_and_values() -> None:
    raw = json.loads(_event().to_json())
    assert raw == {
        "type": "click", "athlete": "ath-7f3c", "joint": "left_knee", "session": "s-20240611-01",
        "t_ns": 1_718_100_000_123_456_789, "stream_t_s": 42.5181, "sensor": "shank", "confidence": 0.87,
        "magnitude": 14.2, "details": {"knee_flexion_deg": 63.0},
    }
    assert b" " not in _event().to_json()  # compact separators


@pytest.mark.parametrize("etype", EVENT_TYPES)
def test_event_round_trip(etype: str) -> None:
    ev = _event(type=etype, details={"nested": {"a": [1, 2.5, None, "x"]}, "ok": True})
    back = JointEvent.from_json(ev.to_json())
    assert back == ev
    assert back.t_ns == 1_718_100_000_123_456_789  # an int beyond 2**53 survives exactly
    assert JointEvent.from_json(ev.to_json().decode()) == ev  # str payloads too


def test_event_confidence_bounds_are_inclusive() -> None:
    assert _event(confidence=0.0).confidence == 0.0
    assert _event(confidence=1.0).confidence == 1.0
    assert JointEvent.from_json(json.dumps(_event_dict(confidence=1))).confidence == 1.0


def test_event_details_default_to_empty() -> None:
    d = _event_dict()
    del d["details"]
    assert JointEvent.from_json(json.dumps(d)).details == {}


def test_event_ignores_unknown_keys() -> None:
    assert JointEvent.from_json(json.dumps(_event_dict(future_field=[1, 2]))) == _event()


@pytest.mark.parametrize(
    "kw",
    [
        {"type": "pop"}, {"type": "CLICK"},
        {"confidence": -0.01}, {"confidence": 1.01}, {"confidence": math.nan}, {"confidence": math.inf},
        {"stream_t_s": math.nan}, {"stream_t_s": math.inf}, {"magnitude": math.nan}, {"magnitude": -math.inf},
    ],
)
def test_event_constructor_validates(kw: dict[str, Any]) -> None:
    with pytest.raises(MessageError):
        _event(**kw)


@pytest.mark.parametrize(
    "payload",
    [
        b"", b"{", b"not json", b"\xff\xfe", b"null", b"[]", b"[1, 2]", b"42", b'"click"', b"true",
        b"{}",
    ],
)
def test_event_malformed_payloads(payload: bytes) -> None:
    with pytest.raises(MessageError):
        JointEvent.from_json(payload)


@pytest.mark.parametrize(
    "key", ["type", "athlete", "joint", "session", "t_ns", "stream_t_s", "sensor", "confidence", "magnitude"]
)
def test_event_missing_key(key: str) -> None:
    d = _event_dict()
    del d[key]
    with pytest.raises(MessageError, match=key):
        JointEvent.from_json(json.dumps(d))


@pytest.mark.parametrize(
    "kw",
    [
        {"t_ns": "soon"}, {"t_ns": None}, {"t_ns": [1]}, {"t_ns": {}}, {"t_ns": math.nan},
        {"stream_t_s": "x"}, {"stream_t_s": None}, {"stream_t_s": [1.0]},
        {"confidence": "high"}, {"confidence": None}, {"confidence": {}},
        {"magnitude": "big"}, {"magnitude": None},
        {"details": "x"}, {"details": 5}, {"details": [1, 2]},
        {"type": "unknown"}, {"confidence": 2}, {"confidence": -1},
        {"confidence": math.nan}, {"stream_t_s": math.nan}, {"magnitude": math.inf}, {"stream_t_s": -math.inf},
    ],
)
def test_event_wrong_types_and_values(kw: dict[str, Any]) -> None:
    payload = json.dumps(_event_dict(**kw))  # json.dumps writes NaN / Infinity, which json.loads accepts
    with pytest.raises(MessageError):
        JointEvent.from_json(payload)


@pytest.mark.parametrize(
    "payload",
    [
        json.dumps(_event_dict(t_ns=math.inf)),  # int(inf) -> OverflowError
        json.dumps(_event_dict()).replace('"t_ns":', '"t_ns":1e400,"x":'),  # 1e400 parses as inf
        json.dumps(_event_dict(stream_t_s=10**400)),  # float(huge int) -> OverflowError
        "[" * 100_000 + "]" * 100_000,  # RecursionError inside json.loads
    ],
    ids=["t_ns_inf", "t_ns_1e400", "stream_t_s_huge_int", "deep_nesting"],
)
def test_event_overflow_is_a_message_error(payload: str) -> None:
    with pytest.raises(MessageError):
        JointEvent.from_json(payload)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
EVENT_KEYS = ["type", "athlete", "joint", "session", "t_ns", "stream_t_s", "sensor", "confidence", "magnitude",
              "details"]


@settings(max_examples=500, deadline=None)
@given(key=st.sampled_from(EVENT_KEYS), value=JSON_VALUES)
def test_event_with_one_arbitrary_field_raises_only_message_error(key: str, value: Any) -> None:
    try:
        ev = JointEvent.from_json(json.dumps(_event_dict(**{key: value})))
    except MessageError:
        return
    assert ev.type in EVENT_TYPES
    assert 0.0 <= ev.confidence <= 1.0
    assert math.isfinite(ev.stream_t_s) and math.isfinite(ev.magnitude)
    assert isinstance(ev.t_ns, int) and isinstance(ev.details, dict)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_event_arbitrary_bytes_raise_only_message_error(payload: bytes) -> None:
    try:
        ev = JointEvent.from_json(payload)
    except MessageError:
        return
    assert ev.type in EVENT_TYPES  # only reachable for a complete, valid event


# --- Status ----------------------------------------------------------------------------------------


def _status(**kw: Any) -> Status:
    args: dict[str, Any] = {
        "component": "gateway", "component_id": "gw-lab1", "state": "online", "t_ns": 1_718_100_000_000_000_000,
        "counters": {"bad_crc": 3, "lost_packets": 12, "stale_seq": 0},
        "info": {"sensors": ["D4:3A:11:02:9C:5E"]},
    }
    args.update(kw)
    return Status(**args)


def test_status_round_trip() -> None:
    s = _status()
    raw = json.loads(s.to_json())
    assert set(raw) == {"component", "component_id", "state", "t_ns", "counters", "info"}
    assert raw["counters"] == {"bad_crc": 3, "lost_packets": 12, "stale_seq": 0}
    assert Status.from_json(s.to_json()) == s
    assert Status.from_json(s.to_json().decode()) == s


def test_status_last_will_round_trip() -> None:
    will = Status("analysis", "worker-0", "offline", 1)
    assert json.loads(will.to_json()) == {"component": "analysis", "component_id": "worker-0", "state": "offline",
                                          "t_ns": 1, "counters": {}, "info": {}}
    assert Status.from_json(will.to_json()) == will


def test_status_optional_and_unknown_keys() -> None:
    s = Status.from_json(b'{"component":"gateway","component_id":"g","state":"online","t_ns":5,"extra":1}')
    assert s == Status("gateway", "g", "online", 5)


@pytest.mark.parametrize(
    "payload",
    [
        b"", b"{", b"\xff", b"null", b"[]", b"42", b'"online"', b"{}",
        b'{"component_id":"g","state":"online","t_ns":5}',
        b'{"component":"gateway","state":"online","t_ns":5}',
        b'{"component":"gateway","component_id":"g","t_ns":5}',
        b'{"component":"gateway","component_id":"g","state":"online"}',
        b'{"component":"gateway","component_id":"g","state":"online","t_ns":"now"}',
        b'{"component":"gateway","component_id":"g","state":"online","t_ns":null}',
        b'{"component":"gateway","component_id":"g","state":"online","t_ns":NaN}',
        b'{"component":"gateway","component_id":"g","state":"online","t_ns":5,"counters":[1]}',
        b'{"component":"gateway","component_id":"g","state":"online","t_ns":5,"counters":7}',
        b'{"component":"gateway","component_id":"g","state":"online","t_ns":5,"info":"x"}',
    ],
)
def test_status_malformed(payload: bytes) -> None:
    with pytest.raises(MessageError):
        Status.from_json(payload)


def test_status_infinite_t_ns_is_a_message_error() -> None:
    with pytest.raises(MessageError):
        Status.from_json(b'{"component":"gateway","component_id":"g","state":"online","t_ns":Infinity}')


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(["component", "component_id", "state", "t_ns", "counters", "info"]), value=JSON_VALUES)
def test_status_with_one_arbitrary_field_raises_only_message_error(key: str, value: Any) -> None:
    raw = json.loads(_status().to_json())
    raw[key] = value
    try:
        s = Status.from_json(json.dumps(raw))
    except MessageError:
        return
    assert isinstance(s.t_ns, int) and isinstance(s.counters, dict) and isinstance(s.info, dict)


def test_dataclasses_are_frozen() -> None:
    ev = _event()
    with pytest.raises(AttributeError):
        ev.confidence = 0.5  # type: ignore[misc]
    assert replace(ev, confidence=0.5).confidence == 0.5
    with pytest.raises(MessageError):
        replace(ev, confidence=5.0)
