"""sensor_gateway: BLE sensors -> decoded, time-stamped frames -> MQTT."""
