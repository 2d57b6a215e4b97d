"""GATT service and characteristic UUIDs of protocol v1 (see docs/protocol.md)."""

from collections.abc import Mapping

from jointmon.packets import StreamType

# Custom 128-bit UUIDs share one random base; only the 2nd..4th hex digits change.
SERVICE_UUID = "b6a90001-5c3e-4b8e-9d7a-1f2c3d4e5f60"
IMU_CHAR_UUID = "b6a90002-5c3e-4b8e-9d7a-1f2c3d4e5f60"  # notify: IMU packets
MIC_CHAR_UUID = "b6a90003-5c3e-4b8e-9d7a-1f2c3d4e5f60"  # notify: microphone packets
STATUS_CHAR_UUID = "b6a90004-5c3e-4b8e-9d7a-1f2c3d4e5f60"  # read/notify: JSON device status
CONTROL_CHAR_UUID = "b6a90005-5c3e-4b8e-9d7a-1f2c3d4e5f60"  # write: start/stop, rates

# Bluetooth SIG standard services the sensor also exposes.
DEVICE_INFO_SERVICE_UUID = "0000180a-0000-1000-8000-00805f9b34fb"
BATTERY_SERVICE_UUID = "0000180f-0000-1000-8000-00805f9b34fb"
BATTERY_LEVEL_CHAR_UUID = "00002a19-0000-1000-8000-00805f9b34fb"

STREAM_CHAR_UUID = {StreamType.IMU: IMU_CHAR_UUID, StreamType.MIC_PCM16: MIC_CHAR_UUID}

# Control characteristic commands (one byte opcode).
CONTROL_START = 0x01
CONTROL_STOP = 0x02

# Advertising data (docs/protocol.md §1, "Advertising"): besides the service UUID the sensor advertises
# manufacturer-specific data (AD type 0xFF) so a scanning gateway knows each sensor's battery without
# connecting. Company id 0xFFFF is the Bluetooth SIG's id for tests and prototypes: a shipping sensor
# needs an assigned company id (only this constant changes). Only devices that also advertise
# SERVICE_UUID are parsed, so other 0xFFFF users are never misread.
ADV_COMPANY_ID = 0xFFFF
ADV_FORMAT = 1  # byte 0 of the data: its format; a reader skips a format it does not know
ADV_BATTERY_UNKNOWN = 0xFF  # byte 1: battery 0..100 %, or this when the sensor cannot tell


def encode_adv_data(battery_pct: int | None) -> bytes:
    """The manufacturer-specific data bytes after the company id: ``[ADV_FORMAT, battery %]``."""
    if battery_pct is None:
        return bytes([ADV_FORMAT, ADV_BATTERY_UNKNOWN])
    return bytes([ADV_FORMAT, max(0, min(100, int(battery_pct)))])


def decode_adv_battery(manufacturer_data: Mapping[int, bytes]) -> int | None:
    """Battery % from an advertisement's manufacturer data (company id -> bytes, as bleak gives it);
    None when absent, of an unknown format, or out of range (never an error: it is only a hint)."""
    data = manufacturer_data.get(ADV_COMPANY_ID)
    if data is None or len(data) < 2 or data[0] != ADV_FORMAT or data[1] > 100:
        return None
    return int(data[1])
