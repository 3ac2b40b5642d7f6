"""Shared fixtures: a real app built through its factory, with the console provider."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from aiohttp.test_utils import TestClient

from smsgw.app import create_app
from smsgw.settings import AuditSettings, Settings
from testkit.services import DynaliteServer, RedisServer
from tests.helpers import make_settings


@pytest.fixture
def sms_path(tmp_path: Path) -> Path:
    return tmp_path / "sms.jsonl"


@pytest.fixture
def settings(sms_path: Path) -> Settings:
    return make_settings(sms_path)


@pytest.fixture
async def client(aiohttp_client: Callable[..., Any], settings: Settings) -> TestClient[Any, Any]:
    """The real app from its factory, on a real socket, with the console provider."""
    test_client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    return test_client


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One private redis-server for the whole run (started on first use)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A clean private Redis for this test (restarted if a previous test stopped it)."""
    try:
        redis_server.flush()
    except Exception:
        redis_server.restart()
    return redis_server.url


@pytest.fixture(scope="session")
def dynalite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DynaliteServer]:
    """One private dynalite for the whole run (started on first use); tests use own tables."""
    server = DynaliteServer(tmp_path_factory.mktemp("dynalite"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def dynamodb_settings(dynalite_server: DynaliteServer, tmp_path: Path) -> AuditSettings:
    """Audit settings on the private dynalite, with a table of this test's own."""
    if not dynalite_server.running:  # a previous test stopped it
        dynalite_server.start()
    return AuditSettings(
        backend="dynamodb",
        endpoint_url=dynalite_server.url,
        region="us-east-1",
        access_key_id="test",
        secret_access_key="test",
        table=f"audit-{uuid4().hex[:8]}",
        spool_dir=str(tmp_path / "spool"),
        path=str(tmp_path / "audit.sqlite3"),
    )
