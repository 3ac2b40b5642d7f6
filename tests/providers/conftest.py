"""A scripted provider API on a real local socket for the adapter tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.helpers import ScriptedHttp


@pytest.fixture
async def http() -> AsyncIterator[ScriptedHttp]:
    async with ScriptedHttp() as server:
        yield server
