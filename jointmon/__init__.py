"""jointmon: shared contracts (BLE packets, MQTT topics and frames, message schemas, config) and the CLI.

Every component (firmware_sim, sensor_gateway, analysis) imports its wire formats from here,
so there is exactly one definition of each contract.
"""

__version__ = "0.1.0"
