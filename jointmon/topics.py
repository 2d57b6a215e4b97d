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

Partitioned data (protocol v1.2, opt-in, for several analysis workers): a gateway configured with N
partitions puts each joint's frames and gap records under one partition level ``p{n}``,
``n = partition_of(athlete, joint, N)`` (CRC-32 of ``athlete/joint`` mod N: stable across processes)::

    jointmon/v1/data/p{n}/{athlete}/{joint}/{sensor}/{stream}
    jointmon/v1/gaps/p{n}/{athlete}/{joint}/{sensor}/{stream}

The parsers take both forms (the level count tells them apart); ``jointmon/v1/data/#`` matches both.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, replace

from jointmon.errors import TopicError

ROOT = "jointmon/v1"
DATA_TEMPLATE = ROOT + "/data/{athlete}/{joint}/{sensor}/{stream}"
GAPS_TEMPLATE = ROOT + "/gaps/{athlete}/{joint}/{sensor}/{stream}"
PARTITIONED_DATA_TEMPLATE = ROOT + "/data/{partition}/{athlete}/{joint}/{sensor}/{stream}"
PARTITIONED_GAPS_TEMPLATE = ROOT + "/gaps/{partition}/{athlete}/{joint}/{sensor}/{stream}"
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
MAX_PARTITIONS = 1024
_PARTITION = re.compile(r"p(0|[1-9][0-9]{0,3})")
# One topic level: letters, digits, '-', '_' and '.'; no MQTT wildcards or separators.
_LEVEL = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def check_level(name: str, value: str) -> str:
    """Validate one topic level value; raise :class:`TopicError` naming the field otherwise."""
    if not isinstance(value, str) or not _LEVEL.fullmatch(value):
        raise TopicError(f"{name}={value!r} is not a valid topic level (letters, digits, - _ . only)")
    return value


@dataclass(frozen=True, slots=True)
class DataTopic:
    """One stream's data topic. ``partition``: the partition level of a partitioned topic (v1.2), else None."""

    athlete: str
    joint: str
    sensor: str
    stream: str
    partition: int | None = None

    def __post_init__(self) -> None:
        for field in ("athlete", "joint", "sensor", "stream"):
            check_level(field, getattr(self, field))
        if self.stream not in STREAMS:
            raise TopicError(f"stream={self.stream!r} is not one of {STREAMS}")
        if self.partition is not None and (isinstance(self.partition, bool) or not isinstance(self.partition, int)
                                           or not 0 <= self.partition < MAX_PARTITIONS):
            raise TopicError(f"partition={self.partition!r} is not an integer in 0..{MAX_PARTITIONS - 1}")

    def __str__(self) -> str:
        if self.partition is None:
            return DATA_TEMPLATE.format(athlete=self.athlete, joint=self.joint, sensor=self.sensor,
                                        stream=self.stream)
        return PARTITIONED_DATA_TEMPLATE.format(partition=partition_level(self.partition), athlete=self.athlete,
                                                joint=self.joint, sensor=self.sensor, stream=self.stream)

    def partitioned(self, partitions: int) -> DataTopic:
        """This stream's topic with ``partitions`` partitions (0: the unpartitioned topic)."""
        return replace(self, partition=partition_of(self.athlete, self.joint, partitions) if partitions else None)


def partition_of(athlete: str, joint: str, partitions: int) -> int:
    """The partition (0 .. ``partitions`` - 1) of a joint's streams: every sensor and stream of one joint share it,
    so one analysis worker holds the joint's whole state. CRC-32, not ``hash()``: the same in every process."""
    if not 0 < partitions <= MAX_PARTITIONS:
        raise TopicError(f"partitions={partitions!r}: must be 1..{MAX_PARTITIONS}")
    return zlib.crc32(f"{athlete}/{joint}".encode()) % partitions


def partition_level(partition: int) -> str:
    """The topic level of a partition: ``p7``."""
    return f"p{partition}"


def data_partition_subscription(partition: int) -> str:
    """Topic filter of one partition's data frames."""
    return f"{ROOT}/data/{partition_level(partition)}/#"


def gaps_partition_subscription(partition: int) -> str:
    """Topic filter of one partition's gap records."""
    return f"{ROOT}/gaps/{partition_level(partition)}/#"


def shared_subscription(group: str, topic_filter: str) -> str:
    """An MQTT 5 shared subscription of ``group`` to ``topic_filter``: each message goes to one member only."""
    return f"$share/{check_level('group', group)}/{topic_filter}"


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


def _parse_stream_topic(legacy: str, partitioned: str, topic: str) -> DataTopic:
    """A data or gaps topic, unpartitioned or partitioned (the level count tells them apart)."""
    if topic.count("/") == partitioned.count("/"):
        values = _parse(partitioned, topic)
        level = values.pop("partition")
        m = _PARTITION.fullmatch(level)
        if m is None or int(m.group(1)) >= MAX_PARTITIONS:
            raise TopicError(f"topic {topic!r}: {level!r} is not a partition level (p0 .. p{MAX_PARTITIONS - 1})")
        return DataTopic(**values, partition=int(m.group(1)))
    return DataTopic(**_parse(legacy, topic))


_DATA_TOPICS: dict[str, DataTopic] = {}  # topic string -> parsed: every data message is parsed, the set is small
_DATA_TOPICS_MAX = 65536  # bound (cleared when full): a flood of distinct topics cannot grow it without limit


def parse_data_topic(topic: str) -> DataTopic:
    """The stream a data topic names; :class:`TopicError` if it is not one. Cached: a few µs per message saved."""
    parsed = _DATA_TOPICS.get(topic)
    if parsed is None:
        parsed = _parse_stream_topic(DATA_TEMPLATE, PARTITIONED_DATA_TEMPLATE, topic)
        if len(_DATA_TOPICS) >= _DATA_TOPICS_MAX:
            _DATA_TOPICS.clear()
        _DATA_TOPICS[topic] = parsed
    return parsed


def gaps_topic(data: DataTopic) -> str:
    """Where the gateway publishes the :class:`jointmon.frames.Gap` records of the stream ``data`` (partitioned
    like ``data``)."""
    if data.partition is None:
        return GAPS_TEMPLATE.format(athlete=data.athlete, joint=data.joint, sensor=data.sensor, stream=data.stream)
    return PARTITIONED_GAPS_TEMPLATE.format(partition=partition_level(data.partition), athlete=data.athlete,
                                            joint=data.joint, sensor=data.sensor, stream=data.stream)


def parse_gaps_topic(topic: str) -> DataTopic:
    """The stream a gaps topic is about (as its data topic)."""
    return _parse_stream_topic(GAPS_TEMPLATE, PARTITIONED_GAPS_TEMPLATE, topic)


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
