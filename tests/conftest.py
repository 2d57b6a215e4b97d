"""Shared fixtures: real servers (see tests/servers.py) and the test-artifacts directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest
from servers import InfluxDB1Server, MosquittoServer, ServerNotInstalledError, ServerProcess, VictoriaMetricsServer

S = TypeVar("S", bound=ServerProcess)


def _unavailable(exc: ServerNotInstalledError) -> NoReturn:
    """Skip locally; in CI a missing server must fail, not turn into a quietly green run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {exc}", pytrace=False)
    pytest.skip(str(exc))


def _make(cls: type[S], **kwargs: Any) -> S:
    try:
        return cls(**kwargs)
    except ServerNotInstalledError as exc:
        _unavailable(exc)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoServer]:
    """A fresh mosquitto broker on a free port; ``.url`` is ``mqtt://127.0.0.1:PORT``."""
    with _make(MosquittoServer, workdir=tmp_path / "mosquitto") as server:
        yield server


@pytest.fixture
def influxdb1(tmp_path: Path) -> Iterator[InfluxDB1Server]:
    """A fresh influxd (1.x API) with an empty database ``.database`` (= "jointmon_test")."""
    with _make(InfluxDB1Server, workdir=tmp_path / "influxd", database="jointmon_test") as server:
        yield server


@pytest.fixture
def victoria_metrics(tmp_path: Path) -> Iterator[VictoriaMetricsServer]:
    """A fresh VictoriaMetrics accepting the InfluxDB 2.x write API at ``.url + "/api/v2/write"``."""
    with _make(VictoriaMetricsServer, workdir=tmp_path / "victoria-metrics") as server:
        yield server


@pytest.fixture(scope="session")
def artifacts_dir(pytestconfig: pytest.Config) -> Path:
    """``test-artifacts/`` at the repository root (gitignored), created: screenshots, dumps."""
    path = pytestconfig.rootpath / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path
