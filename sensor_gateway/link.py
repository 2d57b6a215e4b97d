"""The one link interface the gateway talks to; bleak, the simulator and other stacks sit behind it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

NotifyCallback = Callable[[bytes], None]


class SensorLink(ABC):
    """A connection to one sensor. Notifications arrive as raw protocol-v1 packet bytes."""

    address: str
    name: str

    @abstractmethod
    async def connect(self) -> None:
        """Connect; raise :class:`jointmon.errors.LinkError` on failure."""

    @abstractmethod
    async def start_notify(self, char_uuid: str, callback: NotifyCallback) -> None:
        """Subscribe to a stream characteristic; ``callback`` gets each notification's bytes."""

    @abstractmethod
    async def write(self, char_uuid: str, data: bytes) -> None:
        """Write a characteristic with response (the control characteristic: start/stop)."""

    @abstractmethod
    async def wait_disconnected(self) -> None:
        """Return when the link is gone (dropped by the sensor, or the session ended)."""

    @abstractmethod
    async def disconnect(self) -> None:
        """Close the link; safe to call twice."""
