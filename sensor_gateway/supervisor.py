"""One asyncio supervisor per sensor: connect, stream, notice a drop or a silence, back off, reconnect.

State machine (the state is on the sensor's status topic)::

    connecting --ok--> streaming --link dropped / watchdog: silent--> backoff --> connecting
        |                                                                ^
        +--------------------------- connect failed ---------------------+
    (any state) --session over (simulated / replayed link finished) or cancelled--> stopped

``scanning`` is the state of a BLE sensor waiting to be seen advertising (the link reports it).

Backoff: exponential with jitter ("equal jitter": half fixed, half random), so eight sensors that
dropped together (the gateway walked out of range) do not hammer the adapter in lockstep. The real
BLE link adds bleak-retry-connector's own per-error retries inside one ``connect()``; this policy
paces the attempts around it. The watchdog is the answer to BLE gateways' known failure, going
quiet: a link that says it is connected but has delivered nothing for ``silence_s`` is torn down
and reconnected, counted and logged.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from jointmon.errors import ConfigError, LinkError
from sensor_gateway.link import SensorLink

log = logging.getLogger("jointmon.gateway.supervisor")


class LinkState(StrEnum):
    SCANNING = "scanning"
    CONNECTING = "connecting"
    STREAMING = "streaming"
    BACKOFF = "backoff"
    STOPPED = "stopped"


@dataclass(frozen=True)
class SupervisorSettings:
    """Retry and watchdog timing of a sensor supervisor (all in seconds).

    ``backoff_initial_s`` doubles per failed attempt up to ``backoff_max_s``; ``stable_s``: a link that
    streamed this long resets the backoff (a sensor dropping once an hour reconnects at once, one
    flapping every second backs off). ``silence_s``: the watchdog's limit for a streaming link that
    delivers nothing (sensors notify every 50 ms, so 5 s is 100 missed notifications, not jitter).
    """

    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    backoff_factor: float = 2.0
    stable_s: float = 10.0
    silence_s: float = 5.0
    watchdog_period_s: float = 0.25  # how often the watchdog looks, s

    def __post_init__(self) -> None:
        for name in ("backoff_initial_s", "backoff_max_s", "silence_s", "watchdog_period_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"supervisor {name} = {getattr(self, name)}: must be > 0")
        if self.backoff_factor < 1 or self.backoff_max_s < self.backoff_initial_s:
            raise ConfigError("supervisor backoff_factor must be >= 1 and backoff_max_s >= backoff_initial_s")

    def backoff_s(self, attempt: int, rng: random.Random) -> float:
        """Delay before retry number ``attempt`` (0-based), s: in [base/2, base], base = initial·factor^attempt."""
        base = min(self.backoff_max_s, self.backoff_initial_s * self.backoff_factor ** min(attempt, 64))
        return base / 2 + rng.random() * base / 2


class SensorSupervisor:
    """Keeps one sensor link up until its session is over (simulated/replayed) or the task is cancelled.

    ``on_connected``: subscribe and write START (may raise :class:`LinkError`); ``on_link_end``: the link is
    gone (flush pending frames); ``on_state``: every state change. The owner calls :meth:`touch` on every
    notification. ``counters`` (may be shared) gets connect_attempts, connect_failures, link_drops,
    watchdog_reconnects and reconnects. ``transitions`` keeps (monotonic s, state) for tests and logs.
    """

    def __init__(self, link: SensorLink, settings: SupervisorSettings, *,
                 on_connected: Callable[[], Awaitable[None]], on_link_end: Callable[[str], None],
                 on_state: Callable[[LinkState], None] | None = None, counters: Counter[str] | None = None,
                 seed: int | None = None) -> None:
        self.link = link
        self.settings = settings
        self.on_connected = on_connected
        self.on_link_end = on_link_end
        self.on_state = on_state
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self.state = LinkState.CONNECTING
        self.transitions: list[tuple[float, LinkState]] = []
        self.backoffs_s: list[float] = []  # every backoff delay taken, s
        self.last_rx = time.monotonic()
        self.connections = 0  # successful connections so far
        self._rng = random.Random(seed)

    def touch(self) -> None:
        """A notification arrived (the watchdog's heartbeat)."""
        self.last_rx = time.monotonic()

    def _set(self, state: LinkState) -> None:
        if state != self.state or not self.transitions:
            self.state = state
            self.transitions.append((time.monotonic(), state))
            log.debug("%s: %s", self.link.name, state)
            if self.on_state is not None:
                self.on_state(state)

    async def run(self) -> None:
        attempt = 0
        try:
            while True:
                self._set(LinkState.CONNECTING)
                self.counters["connect_attempts"] += 1
                try:
                    await self.link.connect()
                    await self.on_connected()
                except LinkError as exc:
                    self.counters["connect_failures"] += 1
                    log.warning("%s: connect failed (attempt %d): %s", self.link.name, attempt + 1, exc)
                    await self._close_link("connect_failed")
                else:
                    if self.connections:
                        self.counters["reconnects"] += 1
                    self.connections += 1
                    self._set(LinkState.STREAMING)
                    started = time.monotonic()
                    reason = await self._stream()
                    await self._close_link(reason)
                    if time.monotonic() - started >= self.settings.stable_s:
                        attempt = 0
                if self.link.finished:
                    log.info("%s: session over", self.link.name)
                    return
                delay = self.settings.backoff_s(attempt, self._rng)
                attempt += 1
                self.backoffs_s.append(delay)
                self._set(LinkState.BACKOFF)
                log.info("%s: retrying in %.2f s", self.link.name, delay)
                await asyncio.sleep(delay)
        finally:
            if self.state == LinkState.STREAMING:  # cancelled mid-stream: still flush what is pending
                self.on_link_end("cancelled")
            self._set(LinkState.STOPPED)
            try:
                await self.link.close()
            except LinkError as exc:
                log.debug("%s: close: %s", self.link.name, exc)

    async def _stream(self) -> str:
        """Wait until the link drops or goes silent; returns why ("dropped", "silent", "finished")."""
        self.touch()  # the silence is counted from the connection, not from the last link's last packet
        gone = asyncio.ensure_future(self.link.wait_disconnected())
        try:
            while True:
                done, _ = await asyncio.wait({gone}, timeout=self.settings.watchdog_period_s)
                if done:
                    exc = gone.exception()
                    if self.link.finished:
                        return "finished"
                    self.counters["link_drops"] += 1
                    log.warning("%s: link dropped%s", self.link.name, f" ({exc})" if exc else "")
                    return "dropped"
                silent_s = time.monotonic() - self.last_rx
                if silent_s > self.settings.silence_s and not self.link.finished:
                    self.counters["watchdog_reconnects"] += 1
                    log.warning("%s: watchdog: connected but silent for %.1f s; reconnecting (%d so far)",
                                self.link.name, silent_s, self.counters["watchdog_reconnects"])
                    return "silent"
        finally:
            if not gone.done():
                gone.cancel()
                await asyncio.gather(gone, return_exceptions=True)

    async def _close_link(self, reason: str) -> None:
        try:
            self.on_link_end(reason)
        finally:
            try:
                await self.link.disconnect()
            except LinkError as exc:  # the link is gone either way
                log.debug("%s: disconnect: %s", self.link.name, exc)
