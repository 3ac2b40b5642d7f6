"""Shared fixtures: a real app built through its factory, with the console provider."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from smsgw.app import create_app
from smsgw.settings import Settings
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
