"""Connection settings for MQTT and InfluxDB, from URLs, TOML files and the environment.

Secrets (MQTT password, InfluxDB token/password) come from the environment or a file, never
from the command line, where ``ps`` would show them.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from jointmon.errors import ConfigError

ENV_MQTT_PASSWORD = "JOINTMON_MQTT_PASSWORD"
ENV_INFLUX_TOKEN = "JOINTMON_INFLUX_TOKEN"
ENV_INFLUX_PASSWORD = "JOINTMON_INFLUX_PASSWORD"
# A file holding the secret (docker secrets: /run/secrets/...), instead of the secret in the environment.
ENV_INFLUX_TOKEN_FILE = "JOINTMON_INFLUX_TOKEN_FILE"
ENV_INFLUX_PASSWORD_FILE = "JOINTMON_INFLUX_PASSWORD_FILE"
ENV_INFLUX_SPOOL_DIR = "JOINTMON_INFLUX_SPOOL_DIR"
INFLUX_SPOOL_MAX_BYTES = 256 * 1024 * 1024  # compressed line protocol: ~36 h of one joint's 50 Hz angles


def secret_from_env(name: str, file_name: str) -> str | None:
    """A secret from ``$name``, or read from the file ``$file_name`` names (trailing newline stripped).

    Both set is a :class:`ConfigError` (which one was meant?), as is a file that cannot be read or is
    empty. The error names the variable and the file, never the secret.
    """
    value, path = os.environ.get(name), os.environ.get(file_name)
    if value is not None and path is not None:
        raise ConfigError(f"both ${name} and ${file_name} are set: set one")
    if path is None:
        return value
    try:
        text = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"${file_name} = {path}: cannot read the secret file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"${file_name} = {path}: the secret file is not UTF-8 text") from None
    if not text:
        raise ConfigError(f"${file_name} = {path}: the secret file is empty")
    return text


@dataclass(frozen=True)
class MqttSettings:
    """Where and how to reach the broker. TLS: ``ca_file`` (else the system CAs), a client certificate
    (``cert_file`` + ``key_file``) for brokers that authenticate clients by certificate.

    ``protocol``: 4 = MQTT 3.1.1 (the default: the demo's fallback broker speaks nothing newer), 5 =
    MQTT 5, whose persistent session is ``clean_start = false`` + ``session_expiry_s`` (s). With 3.1.1
    a persistent session is ``clean_session = false`` and the broker decides how long it lives.
    ``reconnect_min_s`` / ``reconnect_max_s``: paho's reconnect backoff (doubles from min to max).
    """

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False
    keepalive_s: int = 30
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    protocol: int = 4
    session_expiry_s: int = 24 * 3600  # a gateway offline for a day still finds its session
    # A LAN broker that restarts is back in seconds: retrying every few seconds costs nothing and
    # bounds how long frames wait on disk after it is back.
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 4.0

    def __post_init__(self) -> None:
        if self.protocol not in (4, 5):
            raise ConfigError(f"mqtt protocol = {self.protocol!r}: must be 4 (MQTT 3.1.1) or 5 (MQTT 5)")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ConfigError(f"mqtt reconnect_min_s = {self.reconnect_min_s}, reconnect_max_s = "
                              f"{self.reconnect_max_s}: need 0 < min <= max")
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("mqtt cert_file and key_file go together (client certificate and its key)")
        if self.session_expiry_s < 0 or self.keepalive_s <= 0:
            raise ConfigError("mqtt session_expiry_s must be >= 0 and keepalive_s > 0")

    @classmethod
    def from_url(cls, url: str) -> MqttSettings:
        """``mqtt://[user@]host[:port]`` or ``mqtts://...``; the password comes from the environment."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp"):
            raise ConfigError(f"MQTT URL {url!r}: scheme must be mqtt:// or mqtts://")
        if not parts.hostname:
            raise ConfigError(f"MQTT URL {url!r}: no host")
        if parts.password is not None:
            raise ConfigError(f"MQTT URL: put the password in ${ENV_MQTT_PASSWORD}, not in the URL")
        try:
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"MQTT URL {url!r}: {exc}") from None
        if port == 0:
            raise ConfigError(f"MQTT URL {url!r}: port 0")
        port = port or (8883 if parts.scheme == "mqtts" else 1883)
        username = unquote(parts.username) if parts.username else None
        return cls(host=parts.hostname, port=port, username=username,
                   password=os.environ.get(ENV_MQTT_PASSWORD), tls=parts.scheme == "mqtts")

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


@dataclass(frozen=True)
class InfluxSettings:
    """Where results go. ``api`` is ``"v1"`` (``/write``, database) or ``"v2"`` (``/api/v2/write``, bucket).

    ``batch_size`` points per request at most; ``flush_interval_s``: the longest a point waits in memory
    (s). ``spool_dir``: where the writer keeps batches on disk while the server is unreachable (None: no
    spool, batches are retried in memory and then given up); ``spool_max_bytes``: its bound (compressed).
    The token and password never appear in ``repr()`` (logs, tracebacks).
    """

    url: str = "http://127.0.0.1:8086"
    api: str = "v2"
    database: str = "jointmon"  # v1 database, or v2 bucket
    org: str = "jointmon"
    token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    batch_size: int = 5000
    flush_interval_s: float = 0.1  # a coach sees an event within ~0.1 s of its decision; ~10 requests/s at most
    spool_dir: str | None = None
    spool_max_bytes: int = INFLUX_SPOOL_MAX_BYTES

    def __post_init__(self) -> None:
        if self.api not in ("v1", "v2"):
            raise ConfigError(f"influx api {self.api!r}: must be 'v1' or 'v2'")
        if urlsplit(self.url).scheme not in ("http", "https"):
            raise ConfigError(f"influx url {self.url!r}: must start with http:// or https://")
        if self.batch_size < 1 or self.flush_interval_s <= 0:
            raise ConfigError("influx batch_size must be >= 1 and flush_interval_s > 0")
        if self.spool_max_bytes <= 0:
            raise ConfigError(f"influx spool_max_bytes = {self.spool_max_bytes}: must be > 0")
        parts = urlsplit(self.url)
        if parts.password is not None or parts.username is not None:
            raise ConfigError(f"influx url: no credentials in the URL (the password would show in logs and `ps`); "
                              f"use ${ENV_INFLUX_TOKEN}(_FILE) or ${ENV_INFLUX_PASSWORD}(_FILE)")

    @classmethod
    def from_env(cls, **kwargs: Any) -> InfluxSettings:
        """Settings with secrets from the environment: ``JOINTMON_INFLUX_TOKEN`` / ``_PASSWORD``, or the
        file named by ``JOINTMON_INFLUX_TOKEN_FILE`` / ``_PASSWORD_FILE`` (docker secrets); the spool
        directory from ``JOINTMON_INFLUX_SPOOL_DIR``. Keyword arguments win over the environment."""
        if "token" not in kwargs:
            kwargs["token"] = secret_from_env(ENV_INFLUX_TOKEN, ENV_INFLUX_TOKEN_FILE)
        if "password" not in kwargs:
            kwargs["password"] = secret_from_env(ENV_INFLUX_PASSWORD, ENV_INFLUX_PASSWORD_FILE)
        kwargs.setdefault("spool_dir", os.environ.get(ENV_INFLUX_SPOOL_DIR) or None)
        return cls(**kwargs)


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a missing or malformed file is a :class:`ConfigError` naming it."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _type_ok(value: Any, default: Any) -> bool:
    """``value`` fits a field whose default is ``default`` (bool is not a number; an int is a float)."""
    if default is None or default is MISSING:
        return True
    if isinstance(value, bool) or isinstance(default, bool):
        return type(value) is type(default)
    if isinstance(default, float):
        return isinstance(value, int | float)
    return isinstance(value, type(default))


def section(data: dict[str, Any], cls: type, name: str, path: str | Path) -> Any:
    """Build dataclass ``cls`` from table ``name`` of a config; unknown keys and bad types name the key."""
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{name}] must be a table")
    known = {f.name: f for f in fields(cls)}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"{path}: [{name}] unknown key {key!r} (known: {', '.join(sorted(known))})")
        default = known[key].default
        if not _type_ok(value, default):
            raise ConfigError(f"{path}: [{name}] {key} = {value!r} should be {type(default).__name__}")
    try:
        return cls(**table)
    except ConfigError as exc:
        raise ConfigError(f"{path}: [{name}] {exc}") from None
