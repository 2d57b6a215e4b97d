# The jointmon image: the gateway (simulated or Bluetooth) and the analysis service of docker-compose.yml.
#   docker build -t jointmon .          docker run --rm jointmon --help
# Two stages: wheels that need a compiler (vqf, ...) are built in the first, the second holds only the
# virtual environment, runs as an unprivileged user and keeps its state in /var/lib/jointmon.
FROM python:3.12-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY jointmon ./jointmon
COPY sensor_gateway ./sensor_gateway
COPY analysis ./analysis
COPY firmware_sim ./firmware_sim
RUN python -m venv /opt/jointmon \
 && /opt/jointmon/bin/pip install --no-cache-dir --disable-pip-version-check .

FROM python:3.12-slim-bookworm
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/jointmon --create-home jointmon
COPY --from=build /opt/jointmon /opt/jointmon
COPY deploy/jointmon/healthcheck.py /usr/local/lib/jointmon/healthcheck.py
# XDG_STATE_HOME: the gateway's store-and-forward queue lands on the state volume by default.
ENV PATH=/opt/jointmon/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    XDG_STATE_HOME=/var/lib/jointmon/state
USER jointmon
WORKDIR /var/lib/jointmon
VOLUME ["/var/lib/jointmon"]
ENTRYPOINT ["jointmon"]
CMD ["--help"]
