"""The one link interface the gateway talks to; bleak, the simulator and other stacks sit behind it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol


class NotifyCallback(Protocol):
    """What a link calls per notification: ``callback(data)`` or ``callback(data, arrival_ns)``.

    ``arrival_ns`` (Unix ns) is for links that know better than the receiver's clock when the
    notification arrived (a simulated link in fast mode, a replayed recording); None or omitted
    means "now", and the gateway stamps it with ``time.time_ns()``.
    """

    def __call__(self, data: bytes, arrival_ns: int | None = None, /) -> None: ...


class SensorLink(ABC):
    """A connection to one sensor. Notifications arrive as raw protocol-v1 packet bytes."""

    address: str
    name: str

    @abstractmethod
    async def connect(self) -> None:
        """Connect; raise :class:`jointmon.errors.LinkError` on failure."""

    @abstractmethod
    async def start_notify(self, char_uuid: str, callback: NotifyCallback) -> None:
        """Subscribe to a characteristic; ``callback`` gets each notification's bytes (and maybe its arrival time)."""

    @abstractmethod
    async def write(self, char_uuid: str, data: bytes) -> None:
        """Write a characteristic with response (the control characteristic: start/stop)."""

    @abstractmethod
    async def wait_disconnected(self) -> None:
        """Return when the link is gone (dropped by the sensor, or the session ended)."""

    @abstractmethod
    async def disconnect(self) -> None:
        """Close the link; safe to call twice. The supervisor may :meth:`connect` again afterwards."""

    @property
    def finished(self) -> bool:
        """True when the sensor has nothing more to send (a simulated or replayed session is over): the
        supervisor stops instead of reconnecting. A real sensor is never finished."""
        return False

    @property
    def rssi_dbm(self) -> int | None:
        """Signal strength of the last advertisement or connection, dBm (None: unknown)."""
        return None

    async def close(self) -> None:
        """Release everything for good (the gateway stops); default: :meth:`disconnect`."""
        await self.disconnect()
