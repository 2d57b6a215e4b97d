"""The simulated link: a firmware_sim peripheral behind the same interface as a BLE sensor."""

from __future__ import annotations

import asyncio

from firmware_sim.peripheral import SimulatedPeripheral
from sensor_gateway.link import NotifyCallback, SensorLink


class SimLink(SensorLink):
    """Streams a :class:`SimulatedPeripheral`'s session; the link ends when the session does."""

    def __init__(self, peripheral: SimulatedPeripheral) -> None:
        self.peripheral = peripheral
        self.address = peripheral.address
        self.name = peripheral.name
        self._task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self._task = None

    async def start_notify(self, char_uuid: str, callback: NotifyCallback) -> None:
        await self.peripheral.start_notify(char_uuid, callback)

    async def wait_disconnected(self) -> None:
        # Streaming starts once the gateway waits on the link, after every notify is registered.
        if self._task is None:
            self._task = asyncio.create_task(self.peripheral.run())
        await self._task

    async def disconnect(self) -> None:
        self.peripheral.stop()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
