"""Link faults of a simulated sensor, from a scenario's ``[link]`` TOML table.

Every fault is optional; an empty table means a perfect link. Keys (units in the names)::

    [link]
    drop_rate = 0.05                   # probability that a notification is lost, independently per packet
    jitter_ms = 15.0                   # BLE delivery delay, uniform in [0, jitter_ms) per notification
    clock_drift_ppm = 50.0             # sensor crystal error: its clock runs (1 + ppm·1e-6) s per true s
    clock_offset_us = 250_000          # added to the sensor clock (on top of the sensor's own offset)
    disconnects = [[12.0, 2.0]]        # [start_s, duration_s] in session time: link down, packets lost
    reboot_at_s = 30.0                 # sensor reboots: ~1 s outage, then seq and sensor clock restart at 0
    battery_start_pct = 40.0           # battery level at session start, %
    battery_drain_pct_per_h = 20.0     # battery drain, % per hour
    mic_codec = "adpcm"                # microphone encoding on the air: "pcm16" (default) | "adpcm" (IMA, 4:1)

    [link.shank]                       # optional per-sensor overrides (a table named after the sensor)
    reboot_at_s = 12.5

Session time ("true time") is the simulator's time axis: sample i of a session signal is at i / rate
seconds. The sensor samples on its own clock (see ``firmware_sim.peripheral``), so with a drift of
``d`` ppm its k-th sample after boot is at true time ``boot_s + k / (rate · (1 + d·1e-6))``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from jointmon.errors import ConfigError

REBOOT_OUTAGE_S = 1.0  # a reboot takes the sensor off the air this long (boot + reconnect + START)
LOW_BATTERY_PCT = 15.0  # below this the battery is "low" (the status characteristic reports the level)
MAX_DRIFT_PPM = 1000.0  # crystals are tens of ppm; beyond this the config is a typo, not a fault
FW_VERSION = "1.0.0"


def _number(where: str, value: object) -> float:
    # bool is an int subclass: `drop_rate = true` must be an error, not 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where} = {value!r}: must be a finite number")
    return float(value)


@dataclass(frozen=True)
class LinkFaults:
    """What goes wrong between one simulated sensor and the gateway (defaults: nothing)."""

    drop_rate: float = 0.0  # probability per notification, 0 <= p < 1
    jitter_ms: float = 0.0  # ms, >= 0
    clock_drift_ppm: float = 0.0  # ppm, |d| <= MAX_DRIFT_PPM
    clock_offset_us: int = 0  # µs, added to the sensor clock
    disconnects: tuple[tuple[float, float], ...] = ()  # (start_s, duration_s), session time
    reboot_at_s: float | None = None  # session time of the reboot, s
    battery_start_pct: float = 100.0  # %
    battery_drain_pct_per_h: float = 0.0  # % per hour, >= 0
    # Not a fault but a link setting the firmware is configured with (per sensor via [link.<sensor>]):
    # the microphone encoding, a key of jointmon.packets.MIC_CODECS ("adpcm" is accepted for "ima_adpcm").
    mic_codec: str = "pcm16"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, where: str = "[link]") -> LinkFaults:
        """Build from a ``[link]`` table; unknown keys and wrong types raise :class:`ConfigError` naming the key."""
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise ConfigError(f"{where} must be a table, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown} (known: {', '.join(sorted(known))})")
        kw: dict[str, Any] = {}
        for key, value in d.items():
            name = f"{where} {key}"
            if key == "clock_offset_us":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ConfigError(f"{name} = {value!r}: must be an integer (µs)")
                kw[key] = value
            elif key == "disconnects":
                kw[key] = _disconnects(name, value)
            elif key == "mic_codec":
                kw[key] = _mic_codec(name, value)
            else:
                kw[key] = _number(name, value)
        faults = cls(**kw)
        faults._check(where)
        return faults

    def _check(self, where: str) -> None:
        if not 0.0 <= self.drop_rate < 1.0:
            raise ConfigError(f"{where} drop_rate = {self.drop_rate}: must be in [0, 1)")
        if self.jitter_ms < 0:
            raise ConfigError(f"{where} jitter_ms = {self.jitter_ms}: must be >= 0")
        if abs(self.clock_drift_ppm) > MAX_DRIFT_PPM:
            raise ConfigError(f"{where} clock_drift_ppm = {self.clock_drift_ppm}: |ppm| must be <= {MAX_DRIFT_PPM}")
        if self.reboot_at_s is not None and self.reboot_at_s < 0:
            raise ConfigError(f"{where} reboot_at_s = {self.reboot_at_s}: must be >= 0")
        if not 0.0 <= self.battery_start_pct <= 100.0:
            raise ConfigError(f"{where} battery_start_pct = {self.battery_start_pct}: must be in [0, 100]")
        if self.battery_drain_pct_per_h < 0:
            raise ConfigError(f"{where} battery_drain_pct_per_h = {self.battery_drain_pct_per_h}: must be >= 0")

    @property
    def active(self) -> bool:
        """True when anything differs from a perfect link (the microphone codec is a setting, not a fault)."""
        return self.describe().keys() - {"mic_codec"} != set()

    @property
    def clock_rate(self) -> float:
        """Sensor seconds per true second (1 + ppm·1e-6)."""
        return 1.0 + self.clock_drift_ppm * 1e-6

    def battery_pct(self, t_s: float) -> float:
        """Battery level at session time ``t_s`` (s), %, clipped to 0..100."""
        return min(100.0, max(0.0, self.battery_start_pct - self.battery_drain_pct_per_h * t_s / 3600.0))

    def battery_level(self, t_s: float) -> int:
        """The whole-percent level the sensor reports at ``t_s``: rounded up, like a phone's display
        (40.0 % and 39.2 % both show 40), so a full battery reads 100 until it has lost 1 %."""
        return math.ceil(self.battery_pct(t_s) - 1e-9)

    def battery_steps(self, duration_s: float) -> list[tuple[float, int]]:
        """(session time s, new level %) of every step of the reported level in [0, duration_s)."""
        if self.battery_drain_pct_per_h <= 0:
            return []
        levels = np.arange(self.battery_level(0.0) - 1, -1, -1)
        # The level becomes L when the charge reaches L %: at (start - L) / drain hours.
        t_s = (self.battery_start_pct - levels) * 3600.0 / self.battery_drain_pct_per_h
        keep = t_s < duration_s
        return [(float(t), int(lv)) for t, lv in zip(t_s[keep], levels[keep], strict=True)]

    def link_down(self, t_s: float) -> bool:
        """True when session time ``t_s`` (s) falls inside a configured disconnect."""
        return any(start <= t_s < start + dur for start, dur in self.disconnects)

    def describe(self) -> dict[str, Any]:
        """The non-default settings as a plain dict (for recordings and logs)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value != f.default:
                out[f.name] = [list(p) for p in value] if f.name == "disconnects" else value
        return out


def _mic_codec(where: str, value: object) -> str:
    from jointmon.packets import MIC_CODECS

    codec = {"adpcm": "ima_adpcm"}.get(value, value) if isinstance(value, str) else value
    if codec not in MIC_CODECS:
        raise ConfigError(f"{where} = {value!r}: must be one of {sorted(MIC_CODECS)} (or \"adpcm\")")
    return str(codec)


def _disconnects(where: str, value: object) -> tuple[tuple[float, float], ...]:
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{where} = {value!r}: must be a list of [start_s, duration_s] pairs")
    out = []
    for i, pair in enumerate(value):
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise ConfigError(f"{where}[{i}] = {pair!r}: must be [start_s, duration_s]")
        start, dur = _number(f"{where}[{i}][0]", pair[0]), _number(f"{where}[{i}][1]", pair[1])
        if start < 0 or dur <= 0:
            raise ConfigError(f"{where}[{i}] = {pair!r}: start_s must be >= 0 and duration_s > 0")
        out.append((start, dur))
    return tuple(sorted(out))


def link_faults_for_sensors(d: Mapping[str, Any] | None, sensors: Iterable[str],
                            where: str = "[link]") -> dict[str, LinkFaults]:
    """Per-sensor faults from a ``[link]`` table: top-level keys apply to every sensor, a sub-table
    named after a sensor (``[link.shank]``) overrides keys for that sensor only."""
    sensors = list(sensors)
    d = dict(d or {})
    per_sensor = {name: d.pop(name) for name in sensors if isinstance(d.get(name), Mapping)}
    base = LinkFaults.from_dict(d, where)
    out = {}
    for name in sensors:
        override = per_sensor.get(name)
        if override is None:
            out[name] = base
            continue
        sub = f"{where[:-1]}.{name}]" if where.endswith("]") else f"{where}.{name}"  # [link] -> [link.shank]
        out[name] = LinkFaults.from_dict({**d, **override}, sub)
    return out
