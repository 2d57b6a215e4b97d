"""The MQTT topic tree: the one place that builds and parses topics (see docs/protocol.md).

Templates are data, not string slicing spread through the code::

    jointmon/v1/data/{athlete}/{joint}/{sensor}/{stream}   binary data frames, QoS 1
    jointmon/v1/gaps/{athlete}/{joint}/{sensor}/{stream}   JSON gap records (missing samples), QoS 1
    jointmon/v1/events/{athlete}/{joint}                   JSON events from the analysis, QoS 1
    jointmon/v1/status/{component}/{component_id}          JSON status, retained, with last will
    jointmon/v1/reports/{athlete}/{joint}                  JSON self-reports (pain, swelling), QoS 1
    jointmon/v1/grades/{athlete}/{joint}                   JSON red-flag grades from the analysis, QoS 1, retained

``athlete`` is a pseudonym (never a name: this is health data), ``joint`` is e.g. ``left_knee``,
``sensor`` is the body segment (``thigh``, ``shank``, ``upper_arm``, ``trunk``), ``stream`` is
``imu`` or ``mic``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from jointmon.errors import TopicError

ROOT = "jointmon/v1"
DATA_TEMPLATE = ROOT + "/data/{athlete}/{joint}/{sensor}/{stream}"
GAPS_TEMPLATE = ROOT + "/gaps/{athlete}/{joint}/{sensor}/{stream}"
EVENTS_TEMPLATE = ROOT + "/events/{athlete}/{joint}"
STATUS_TEMPLATE = ROOT + "/status/{component}/{component_id}"
REPORTS_TEMPLATE = ROOT + "/reports/{athlete}/{joint}"
GRADES_TEMPLATE = ROOT + "/grades/{athlete}/{joint}"

DATA_SUBSCRIPTION = ROOT + "/data/#"
GAPS_SUBSCRIPTION = ROOT + "/gaps/#"
EVENTS_SUBSCRIPTION = ROOT + "/events/#"
STATUS_SUBSCRIPTION = ROOT + "/status/#"
REPORTS_SUBSCRIPTION = ROOT + "/reports/#"
GRADES_SUBSCRIPTION = ROOT + "/grades/#"

STREAMS = ("imu", "mic")
# One topic level: letters, digits, '-', '_' and '.'; no MQTT wildcards or separators.
_LEVEL = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def check_level(name: str, value: str) -> str:
    """Validate one topic level value; raise :class:`TopicError` naming the field otherwise."""
    if not isinstance(value, str) or not _LEVEL.fullmatch(value):
        raise TopicError(f"{name}={value!r} is not a valid topic level (letters, digits, - _ . only)")
    return value


@dataclass(frozen=True, slots=True)
class DataTopic:
    athlete: str
    joint: str
    sensor: str
    stream: str

    def __post_init__(self) -> None:
        for field in ("athlete", "joint", "sensor", "stream"):
            check_level(field, getattr(self, field))
        if self.stream not in STREAMS:
            raise TopicError(f"stream={self.stream!r} is not one of {STREAMS}")

    def __str__(self) -> str:
        return DATA_TEMPLATE.format(athlete=self.athlete, joint=self.joint, sensor=self.sensor, stream=self.stream)


def _parse(template: str, topic: str) -> dict[str, str]:
    names = re.findall(r"{(\w+)}", template)
    parts, tparts = topic.split("/"), template.split("/")
    if len(parts) != len(tparts):
        raise TopicError(f"topic {topic!r} does not match {template!r}")
    values: dict[str, str] = {}
    for got, want in zip(parts, tparts, strict=True):
        if want.startswith("{"):
            values[want[1:-1]] = check_level(want[1:-1], got)
        elif got != want:
            raise TopicError(f"topic {topic!r} does not match {template!r}")
    assert set(values) == set(names)
    return values


_DATA_TOPICS: dict[str, DataTopic] = {}  # topic string -> parsed: every data message is parsed, the set is small
_DATA_TOPICS_MAX = 65536  # bound (cleared when full): a flood of distinct topics cannot grow it without limit


def parse_data_topic(topic: str) -> DataTopic:
    """The stream a data topic names; :class:`TopicError` if it is not one. Cached: a few µs per message saved."""
    parsed = _DATA_TOPICS.get(topic)
    if parsed is None:
        parsed = DataTopic(**_parse(DATA_TEMPLATE, topic))
        if len(_DATA_TOPICS) >= _DATA_TOPICS_MAX:
            _DATA_TOPICS.clear()
        _DATA_TOPICS[topic] = parsed
    return parsed


def gaps_topic(data: DataTopic) -> str:
    """Where the gateway publishes the :class:`jointmon.frames.Gap` records of the stream ``data``."""
    return GAPS_TEMPLATE.format(athlete=data.athlete, joint=data.joint, sensor=data.sensor, stream=data.stream)


def parse_gaps_topic(topic: str) -> DataTopic:
    """The stream a gaps topic is about (as its data topic)."""
    return DataTopic(**_parse(GAPS_TEMPLATE, topic))


def events_topic(athlete: str, joint: str) -> str:
    return EVENTS_TEMPLATE.format(athlete=check_level("athlete", athlete), joint=check_level("joint", joint))


def parse_events_topic(topic: str) -> tuple[str, str]:
    v = _parse(EVENTS_TEMPLATE, topic)
    return v["athlete"], v["joint"]


def status_topic(component: str, component_id: str) -> str:
    return STATUS_TEMPLATE.format(
        component=check_level("component", component), component_id=check_level("component_id", component_id)
    )


def reports_topic(athlete: str, joint: str) -> str:
    """Where athletes or coaches publish a :class:`jointmon.messages.SelfReport` for one joint."""
    return REPORTS_TEMPLATE.format(athlete=check_level("athlete", athlete), joint=check_level("joint", joint))


def parse_reports_topic(topic: str) -> tuple[str, str]:
    v = _parse(REPORTS_TEMPLATE, topic)
    return v["athlete"], v["joint"]


def grades_topic(athlete: str, joint: str) -> str:
    """Where the analysis publishes a :class:`jointmon.messages.JointGrade` for one joint."""
    return GRADES_TEMPLATE.format(athlete=check_level("athlete", athlete), joint=check_level("joint", joint))


def parse_grades_topic(topic: str) -> tuple[str, str]:
    v = _parse(GRADES_TEMPLATE, topic)
    return v["athlete"], v["joint"]
