"""Sensor clock -> wall clock for one sensor (shared by its IMU and microphone streams)."""

from __future__ import annotations


class ClockMap:
    """Maps sensor microseconds to Unix nanoseconds.

    This version anchors at the first packet: offset = arrival - sensor time of that packet's
    last sample, i.e. it assumes negligible delivery delay for that one packet. Every sample
    keeps its sensor timing after that (never the packet arrival time), so BLE delivery jitter
    does not reach the data. Drift fitting (tens of ppm) comes with the gateway-hardening issue.
    """

    def __init__(self) -> None:
        self.offset_ns: int | None = None

    @property
    def anchored(self) -> bool:
        return self.offset_ns is not None

    def observe(self, sensor_us: int, arrival_ns: int) -> None:
        """Record that sensor time ``sensor_us`` (unwrapped, µs) had just happened at ``arrival_ns``."""
        if self.offset_ns is None:
            self.offset_ns = arrival_ns - sensor_us * 1000

    def reanchor(self) -> None:
        """Forget the offset (the sensor rebooted): the next packet anchors the clock again."""
        self.offset_ns = None

    def to_wall_ns(self, sensor_ns: int) -> int:
        """Wall clock (Unix ns) of sensor time ``sensor_ns`` (unwrapped sensor clock in ns)."""
        if self.offset_ns is None:
            raise RuntimeError("clock map used before the first packet anchored it")
        return self.offset_ns + sensor_ns
