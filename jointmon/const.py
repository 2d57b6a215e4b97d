"""Timeouts, limits and rates in one place, each with the reason it has the value it has."""

# ~50 ms of a stream per MQTT frame: short enough for < 250 ms event latency, long enough that
# per-message overhead (topic, header, broker work) stays small next to 800 mic samples.
FRAME_DURATION_S = 0.05

# paho keeps unacknowledged QoS 1 messages in memory; a window of 100 keeps a 16 kHz stream
# flowing over a high-latency link without hurting a loopback broker.
MQTT_MAX_INFLIGHT = 100
MQTT_QOS = 1
MQTT_CONNECT_TIMEOUT_S = 10.0

# BLE: a connection attempt that takes longer than this is treated as failed (bleak's default is
# 10 s; sensors sit within a few metres of the gateway).
BLE_CONNECT_TIMEOUT_S = 15.0
BLE_SCAN_TIMEOUT_S = 10.0

# A forward sequence jump beyond this is not packet loss (a link never loses 1000 notifications
# and stays connected) but a sensor reboot: the stream restarts.
SEQ_REBOOT_JUMP = 1000
# A duplicated or re-ordered notification is at most this far behind the newest one; a sensor
# clock that goes back further than this restarted.
REORDER_WINDOW_US = 1_000_000

# Angle series are stored at 50 Hz: dashboards and reports need no more, and it divides storage
# by 4 against the 200 Hz IMU rate.
ANGLE_STORE_RATE_HZ = 50

# Repeated warnings (a dead server, a stream of corrupt packets) are logged at most this often.
WARN_INTERVAL_S = 10.0
