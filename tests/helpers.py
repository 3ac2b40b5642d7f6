"""Helpers shared by tests: settings builder, console SMS reader, code extraction."""

from __future__ import annotations

import asyncio
import re
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from aioresponses import aioresponses
from yarl import URL

from smsgw.app import create_app
from smsgw.settings import Settings, parse_settings

OTP_SECRET = "test-secret-0123456789abcdef"


def make_settings(sms_path: Path, **sections: Any) -> Settings:
    """Settings for tests: console provider writing to `sms_path`, short drain, fixed secret.

    Keyword arguments are TOML sections (dicts) or arrays (lists) merged over the defaults.
    """
    raw: dict[str, Any] = {
        "server": {"drain_timeout_s": 5.0},
        "audit": {
            "path": str(sms_path.parent / "audit.sqlite3"),
            "spool_dir": str(sms_path.parent / "audit-spool"),
        },
        "otp": {"secret": OTP_SECRET},
        "providers": [{"name": "console", "kind": "console", "path": str(sms_path)}],
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return parse_settings(raw, env={})


class RecordedAudit:
    """An AuditRecorder that keeps (message_id, kind, details) in order, for assertions."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def record(self, message_id: str, kind: str, at: float | None = None, **details: Any) -> None:
        self.events.append((message_id, kind, details))

    def accepted(self, message_id: str, at: float, **details: Any) -> None:
        self.record(message_id, "accepted", at, **details)
        self.record(message_id, "queued")

    def kinds(self, message_id: str) -> list[str]:
        return [kind for mid, kind, _ in self.events if mid == message_id]


def read_sms(path: Path) -> list[dict[str, Any]]:
    """The SMS the console provider wrote, one dict per line."""
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


def code_in(sms_body: str) -> str:
    match = re.search(r"code is (\d+)", sms_body)
    assert match, sms_body
    return match.group(1)


class CompatResponse(ClientResponse):
    # aioresponses 0.7.9 does not pass the `stream_writer` that aiohttp 3.14 requires
    # (pnuckowski/aioresponses#289); a finished request only needs its output size.
    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", types.SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


class FakeHttp(aioresponses):  # type: ignore[misc]
    """aioresponses whose faked answers work with aiohttp 3.14 (see CompatResponse)."""

    def add(self, url: Any, method: str = "GET", **kwargs: Any) -> None:
        kwargs.setdefault("response_class", CompatResponse)
        super().add(url, method, **kwargs)


async def wait_sms(path: Path, count: int, timeout: float = 2.0) -> list[dict[str, Any]]:
    """The SMS lines once at least `count` arrived, or whatever is there after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        sms = read_sms(path)
        if len(sms) >= count or time.monotonic() > deadline:
            return sms
        await asyncio.sleep(0.01)


async def app_client(
    aiohttp_client: Callable[..., Any], sms_path: Path, **sections: Any
) -> TestClient[Any, Any]:
    """The real app from its factory with settings from make_settings(sms_path, **sections)."""
    client: TestClient[Any, Any] = await aiohttp_client(
        create_app(make_settings(sms_path, **sections))
    )
    return client
