#!/bin/bash
# Run once by the influxdb:2 image after its first setup (DOCKER_INFLUXDB_INIT_MODE=setup; the image runs
# every executable *.sh in /docker-entrypoint-initdb.d with the influx CLI already configured and
# DOCKER_INFLUXDB_INIT_BUCKET_ID exported). Maps the InfluxQL database/retention policy
# <bucket>/autogen to the bucket, so that the Grafana dashboards (InfluxQL) and 1.x-API clients read it
# (docs/influxdb-schema.md).
set -euo pipefail
influx v1 dbrp create \
  --org "${DOCKER_INFLUXDB_INIT_ORG}" \
  --bucket-id "${DOCKER_INFLUXDB_INIT_BUCKET_ID}" \
  --db "${DOCKER_INFLUXDB_INIT_BUCKET}" \
  --rp autogen \
  --default
influx v1 dbrp list --org "${DOCKER_INFLUXDB_INIT_ORG}"
