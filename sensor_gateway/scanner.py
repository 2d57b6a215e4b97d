"""One shared, continuously running scanner per gateway, with a watchdog and unknown-sensor reporting.

Why shared: with many sensors, every link scanning for itself makes BlueZ answer ``InProgress`` (one
discovery per adapter at a time) and the links starve each other. Here one scanner runs for the whole
gateway; a link that wants its sensor waits for the scanner to see it (:meth:`SensorScanner.wait_for`).

Why a watchdog: the known field failure of BLE gateways is a scanner that stops delivering
advertisements without an error. A scanner that has seen nothing for ``silence_s`` while a link is
waiting for its sensor is stopped and started again; each restart is counted (``scanner_restarts``)
and logged. While no link waits (every configured sensor connected) silence is expected: connected
sensors stop advertising, and restarting then would only fill the log with false alarms.

The backend is a small :class:`ScanSource`: :class:`sensor_gateway.bleak_link.BleakScanSource` (bleak,
filtered on the service UUID) or :class:`sensor_gateway.sim_link.SimScanSource` (simulated peripherals).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from jointmon.errors import LinkError
from jointmon.ratelimit import RateLimitedLog

log = logging.getLogger("jointmon.gateway.scanner")

START_RETRY_S = 2.0  # a scanner that failed to start is retried this often (capped by silence_s)
FRESH_ADVERTISEMENT_S = 5.0  # an advertisement younger than this answers wait_for at once (sensors
# advertise every 0.1..1 s, so an older one may be from before the sensor connected elsewhere or left)


@dataclass(frozen=True)
class Advertisement:
    """One advertisement of a jointmon sensor as the gateway saw it.

    ``device``: the backend's handle a link connects to (bleak's ``BLEDevice``; None when simulated).
    """

    address: str
    name: str | None
    rssi: int | None
    battery_pct: int | None
    seen_monotonic: float
    device: Any = None

    def matches(self, match: str) -> bool:
        """True if ``match`` (a config entry: BLE address or advertised name) names this sensor."""
        key = match.lower()
        return key in (self.address.lower(), (self.name or "").lower())


AdvertisementCallback = Callable[[Advertisement], None]


class ScanSource(Protocol):
    """A scanner backend: delivers jointmon advertisements (already filtered on the service UUID)."""

    async def start(self, on_advertisement: AdvertisementCallback) -> None:
        """Start scanning; raise :class:`jointmon.errors.LinkError` if the adapter refuses."""
        ...

    async def stop(self) -> None:
        """Stop scanning; safe when not started."""
        ...


class SensorScanner:
    """Runs a :class:`ScanSource` until cancelled; the watchdog restarts it when it goes silent.

    ``is_known(address, name)``: whether a sensor is configured; advertising sensors that are not are
    reported (logged once each, counted as ``unknown_sensors``, listed in :attr:`unknown`) and never
    handed to a link. ``counters`` (may be shared with the gateway) gets ``advertisements``,
    ``scanner_restarts``, ``scanner_start_failures`` and ``unknown_sensors``.
    """

    def __init__(self, source: ScanSource, *, silence_s: float = 60.0,
                 is_known: Callable[[str, str | None], bool] | None = None,
                 counters: Counter[str] | None = None, check_period_s: float | None = None) -> None:
        if silence_s <= 0:
            raise ValueError(f"scanner silence_s must be > 0, got {silence_s}")
        self.source = source
        self.silence_s = silence_s
        self.is_known = is_known
        self.counters: Counter[str] = counters if counters is not None else Counter()
        # Look often enough that a restart comes at most ~10 % after the silence window.
        self.check_period_s = check_period_s if check_period_s is not None else min(1.0, silence_s / 10)
        self.seen: dict[str, Advertisement] = {}  # by lower-case address: the latest of every sensor
        self.unknown: dict[str, Advertisement] = {}  # advertising but not configured, by lower-case address
        self.restart_times: list[float] = []  # monotonic s of every watchdog restart (tests, logs)
        self._waiters: list[tuple[str, asyncio.Future[Advertisement]]] = []
        self._quiet_since = time.monotonic()  # last advertisement, (re)start, or a link starting to wait
        self._running = False
        self._warn = RateLimitedLog(log)  # no adapter: one line per 10 s, not one per retry

    # ------------------------------------------------------------------ advertisements

    def _on_advertisement(self, adv: Advertisement) -> None:
        self.counters["advertisements"] += 1
        self._quiet_since = adv.seen_monotonic
        key = adv.address.lower()
        self.seen[key] = adv
        if self.is_known is not None and not self.is_known(adv.address, adv.name):
            if key not in self.unknown:  # once per sensor: a neighbour's sensors advertise all session
                self.counters["unknown_sensors"] += 1
                log.warning("unknown jointmon sensor %s (%s), RSSI %s dBm, battery %s %%: not in the config, "
                            "not connected", adv.address, adv.name or "no name", adv.rssi,
                            "?" if adv.battery_pct is None else adv.battery_pct)
            self.unknown[key] = adv
            return
        for match, fut in list(self._waiters):
            if not fut.done() and adv.matches(match):
                fut.set_result(adv)

    def unknown_list(self) -> list[dict[str, Any]]:
        """The unknown sensors for the gateway status: address, name, last RSSI and battery."""
        return [{"address": a.address, "name": a.name, "rssi_dbm": a.rssi, "battery_pct": a.battery_pct}
                for a in sorted(self.unknown.values(), key=lambda a: a.address)]

    async def wait_for(self, match: str, timeout_s: float) -> Advertisement | None:
        """The next advertisement of the sensor ``match`` (address or name), or a fresh one already seen;
        None after ``timeout_s``. Unknown sensors never match (the caller is a configured link)."""
        now = time.monotonic()
        for adv in self.seen.values():
            if adv.matches(match) and now - adv.seen_monotonic < FRESH_ADVERTISEMENT_S \
                    and adv.address.lower() not in self.unknown:
                return adv
        if not self._waiters:  # silence counts from when someone needs the scanner, not from before
            self._quiet_since = max(self._quiet_since, now)
        fut: asyncio.Future[Advertisement] = asyncio.get_running_loop().create_future()
        entry = (match, fut)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            return None
        finally:
            self._waiters.remove(entry)

    # ------------------------------------------------------------------ run and watchdog

    async def _start(self) -> None:
        try:
            await self.source.start(self._on_advertisement)
        except LinkError as exc:  # e.g. BlueZ InProgress: retried by the next watchdog look
            self.counters["scanner_start_failures"] += 1
            self._warn.warning("start", "scanner did not start: %s (retrying every %.1f s)", exc,
                               min(START_RETRY_S, self.silence_s))
            self._running = False
        else:
            self._running = True
        self._quiet_since = time.monotonic()

    async def restart(self, why: str) -> None:
        """Stop and start the scan source; counted and logged (the watchdog's recovery)."""
        self.counters["scanner_restarts"] += 1
        self.restart_times.append(time.monotonic())
        log.warning("scanner: %s; restarting it (%d restart(s) so far)", why, self.counters["scanner_restarts"])
        with contextlib.suppress(LinkError):  # a wedged scanner may fail to stop; start anew regardless
            await self.source.stop()
        await self._start()

    async def run(self) -> None:
        """Scan until cancelled; every ``check_period_s`` the watchdog looks for silence."""
        await self._start()
        try:
            while True:
                await asyncio.sleep(self.check_period_s)
                quiet_s = time.monotonic() - self._quiet_since
                if not self._running:
                    if quiet_s >= min(START_RETRY_S, self.silence_s):
                        await self._start()
                elif self._waiters and quiet_s > self.silence_s:
                    await self.restart(f"nothing seen for {quiet_s:.1f} s while {len(self._waiters)} "
                                       "sensor(s) wait to connect")
        finally:
            with contextlib.suppress(LinkError):
                await self.source.stop()
            self._running = False


def format_scan(advertisements: Iterable[Advertisement],
                find: Callable[[str, str | None], Any] | None = None) -> str:
    """The ``jointmon gateway --scan`` listing: one line per sensor, strongest first, with RSSI and
    battery, and with ``find`` (a config's :meth:`GatewayConfig.find`) which are configured (athlete,
    joint, segment) and which are unknown."""
    ads = sorted(advertisements, key=lambda a: -999 if a.rssi is None else a.rssi, reverse=True)
    if not ads:
        return "no jointmon sensors seen (is Bluetooth on and a sensor advertising?)"
    lines = []
    for a in ads:
        rssi = "   ? dBm" if a.rssi is None else f"{a.rssi:4d} dBm"
        battery = "  ?%" if a.battery_pct is None else f"{a.battery_pct:3d}%"
        line = f"{a.address:17s}  {a.name or '?':20s}  RSSI {rssi}  battery {battery}"
        if find is not None:
            entry = find(a.address, a.name)
            line += ("  unknown (not in the config)" if entry is None
                     else f"  configured: {entry.athlete} {entry.joint} {entry.segment}")
        lines.append(line)
    return "\n".join(lines)
