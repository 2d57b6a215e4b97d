"""GATT service and characteristic UUIDs of protocol v1 (see docs/protocol.md)."""

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
