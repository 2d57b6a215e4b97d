"""The gateway: sensor links in, decoded and time-stamped frames out to MQTT."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from jointmon.errors import LinkError, PacketError
from jointmon.gatt import CONTROL_CHAR_UUID, CONTROL_START, STREAM_CHAR_UUID
from jointmon.packets import StreamType, decode_packet
from jointmon.ratelimit import RateLimitedLog
from jointmon.topics import DataTopic
from sensor_gateway.clock_map import ClockMap
from sensor_gateway.link import SensorLink
from sensor_gateway.mqtt_publisher import MqttPublisher
from sensor_gateway.stream_assembler import StreamAssembler

log = logging.getLogger("jointmon.gateway")
STREAM_TOPIC_NAME = {StreamType.IMU: "imu", StreamType.MIC_PCM16: "mic"}


@dataclass
class SensorBinding:
    """Which athlete, joint and body segment a sensor link belongs to (athlete is a pseudonym)."""

    link: SensorLink
    athlete: str
    joint: str
    sensor: str
    streams: tuple[StreamType, ...] = (StreamType.IMU, StreamType.MIC_PCM16)


@dataclass
class _SensorState:
    binding: SensorBinding
    clock: ClockMap = field(default_factory=ClockMap)
    assemblers: dict[StreamType, StreamAssembler] = field(default_factory=dict)
    topics: dict[StreamType, DataTopic] = field(default_factory=dict)


class Gateway:
    """Connects every bound sensor, decodes its notifications and publishes ~50 ms frames.

    ``counters`` holds packets received and rejected per reason (``rejected_bad_crc``, ...),
    plus each stream's counters summed over sensors (lost_packets, gap_samples, ...).
    """

    def __init__(self, publisher: MqttPublisher, bindings: list[SensorBinding]) -> None:
        self.publisher = publisher
        self.counters: Counter[str] = Counter()
        self._warn = RateLimitedLog(log)
        self._sensors = []
        for b in bindings:
            state = _SensorState(b)
            for stream in b.streams:
                label = f"{b.athlete}/{b.joint}/{b.sensor}/{STREAM_TOPIC_NAME[stream]}"
                state.assemblers[stream] = StreamAssembler(stream, state.clock, label)
                state.topics[stream] = DataTopic(b.athlete, b.joint, b.sensor, STREAM_TOPIC_NAME[stream])
            self._sensors.append(state)

    def stream_counters(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for s in self._sensors:
            for a in s.assemblers.values():
                total.update(a.counters)
        return total

    def _on_packet(self, state: _SensorState, expected: StreamType, data: bytes) -> None:
        arrival_ns = time.time_ns()
        self.counters["packets_received"] += 1
        try:
            pkt = decode_packet(data)
            if pkt.stream != expected:
                raise PacketError("wrong_stream", f"{pkt.stream.name} packet on the {expected.name} characteristic")
        except PacketError as exc:
            self.counters[f"rejected_{exc.reason}"] += 1
            self._warn.warning(exc.reason, "%s: packet rejected (%s)", state.binding.link.name, exc)
            return
        for frame in state.assemblers[expected].push(pkt, arrival_ns):
            self.publisher.publish_frame(state.topics[expected], frame)

    async def _run_sensor(self, state: _SensorState) -> None:
        link = state.binding.link
        try:
            await link.connect()
            for stream in state.binding.streams:
                await link.start_notify(STREAM_CHAR_UUID[stream],
                                        lambda data, s=stream: self._on_packet(state, s, data))
            await link.write(CONTROL_CHAR_UUID, bytes([CONTROL_START]))  # sensors stream only when told
            await link.wait_disconnected()
        except LinkError as exc:
            self.counters["link_errors"] += 1
            log.error("%s: %s", link.name, exc)
        finally:
            for stream, assembler in state.assemblers.items():
                for frame in assembler.flush():
                    self.publisher.publish_frame(state.topics[stream], frame)
            await link.disconnect()

    async def run(self) -> None:
        """Stream every sensor until all links end (session over, or dropped)."""
        await asyncio.gather(*(self._run_sensor(s) for s in self._sensors))
        self.publisher.extra_counters = self.counters + self.stream_counters()
        self.publisher.publish_status("online")
