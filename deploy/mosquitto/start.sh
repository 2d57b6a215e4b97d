#!/bin/sh
# Starts mosquitto in the eclipse-mosquitto image (docker-compose.yml) with the password file that
# mosquitto.conf names, made from MQTT_USER / MQTT_PASSWORD at every start: the password never sits in
# a file of the checkout, and changing it in .env takes effect on the next `docker compose up`.
# The plain "user:password" line is hashed in place by mosquitto_passwd -U (never on a command line).
set -eu
: "${MQTT_USER:?set MQTT_USER in .env}"
: "${MQTT_PASSWORD:?set MQTT_PASSWORD in .env}"
passwd=/mosquitto/config/passwd
umask 077
printf '%s:%s\n' "$MQTT_USER" "$MQTT_PASSWORD" > "$passwd"
mosquitto_passwd -U "$passwd"
# mosquitto drops to its own user before it reads the file, and refuses files others can read.
chown mosquitto:mosquitto "$passwd"
chmod 0700 "$passwd"
exec mosquitto -c /mosquitto/config/mosquitto.conf
