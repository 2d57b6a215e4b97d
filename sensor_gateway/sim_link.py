"""The simulated link: a firmware_sim peripheral behind the same interface as a BLE sensor."""

from __future__ import annotations

import asyncio

from firmware_sim.peripheral import SimulatedPeripheral
from jointmon.errors import LinkError
from jointmon.gatt import CONTROL_CHAR_UUID, CONTROL_START, CONTROL_STOP
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
        """Subscribe; the peripheral passes its arrival time to callbacks that take one (fast mode)."""
        await self.peripheral.start_notify(char_uuid, callback)

    def describe(self) -> dict[str, object]:
        """Sensor facts for a recording's metadata (rates, ranges, clock offset, simulated faults)."""
        return {"simulated": True, **self.peripheral.describe()}

    async def write(self, char_uuid: str, data: bytes) -> None:
        """The control characteristic: START begins streaming (like the firmware), STOP ends it."""
        if char_uuid.lower() != CONTROL_CHAR_UUID or len(data) != 1 or data[0] not in (CONTROL_START, CONTROL_STOP):
            raise LinkError(f"{self.name}: write {data!r} to {char_uuid} rejected (ATT error)")
        if data[0] == CONTROL_START and self._task is None:
            self._task = asyncio.create_task(self.peripheral.run())
        elif data[0] == CONTROL_STOP:
            self.peripheral.stop()

    async def wait_disconnected(self) -> None:
        if self._task is None:
            raise LinkError(f"{self.name}: never started (no START written to the control characteristic)")
        await self._task

    async def disconnect(self) -> None:
        self.peripheral.stop()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
