#!/usr/bin/env bash
# Installs the servers the test suite starts by itself (Debian packages): mosquitto, InfluxDB 1.x,
# VictoriaMetrics (the InfluxDB 2.x write API), and Chromium, the headless browser the live web view's
# test drives through playwright (playwright's own browser download cannot work offline; Debian's can).
# Needs root; without it, prints what to install.
set -u
missing=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
have mosquitto || missing+=(mosquitto)
have influxd || missing+=(influxdb)
have victoria-metrics || missing+=(victoria-metrics)
have chromium || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "install-servers: not root; please run: sudo apt-get install ${missing[*]}" >&2
  echo "install-servers: tests that need them are skipped (and fail when CI=true)" >&2
  exit 0
fi
echo "install-servers: apt-get install ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
# Debian's packages start their services where systemd runs; the tests start their own instances
# on free ports, so stop any that started to keep the default ports and CPU free.
for svc in mosquitto influxdb victoria-metrics; do
  (command -v systemctl >/dev/null && systemctl stop "$svc") >/dev/null 2>&1 || true
done
exit 0
