"""OTP codes never reach a log line, even at debug level where every message is logged."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from aiohttp.test_utils import TestClient

from smsgw.app import create_app
from smsgw.log import configure_logging
from testkit.fake_provider import FakeTwilio, Faults
from tests.helpers import code_in, make_settings, read_sms

PHONE = "+14155550100"
ACCOUNT_SID = "AC" + "ab" * 16
AUTH_TOKEN = "log-test-auth-token"

Client = TestClient[Any, Any]


def _forget_cached_loggers() -> None:
    """Drop loggers that structlog's lazy proxies cached under an earlier configuration.

    configure_logging() caches on first use, so a module-level logger first used here would
    keep writing to this test's captured stderr after it ends (and vice versa).
    """
    for name, module in list(sys.modules.items()):
        if name == "smsgw" or name.startswith("smsgw."):
            for value in list(vars(module).values()):
                if isinstance(value, structlog._config.BoundLoggerLazyProxy):
                    vars(value).pop("bind", None)


@pytest.fixture
def json_debug_logs(capfd: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    """JSON logs at debug level on the captured stderr, reset afterwards."""
    _forget_cached_loggers()
    try:
        yield capfd
    finally:
        structlog.reset_defaults()
        _forget_cached_loggers()


def start_json_debug_logging() -> None:
    # Called in the test body: the stderr that capfd shows during setup is not the one it
    # reads during the call, and configure_logging() binds to the current sys.stderr.
    configure_logging("debug", json=True)
    # Same processors and level, without caching: no logger keeps this test's stderr.
    structlog.configure(cache_logger_on_first_use=False)


def log_lines(captured: str) -> list[dict[str, Any]]:
    lines = [line for line in captured.splitlines() if line.strip()]
    return [orjson.loads(line) for line in lines]


async def wait_for(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def otp_round(client: Client, code_of: Callable[[str], Any]) -> str:
    """Start, check a wrong code, check the right one; returns the code."""
    response = await client.post("/v1/otp", json={"phone": PHONE, "length": 10})
    assert response.status == 202
    started = await response.json()
    code: str = await code_of(started["message_id"])
    wrong = "".join(str((int(d) + 1) % 10) for d in code)
    response = await client.post("/v1/otp/verify", json={"id": started["id"], "code": wrong})
    assert response.status == 200
    assert (await response.json())["valid"] is False
    response = await client.post("/v1/otp/verify", json={"id": started["id"], "code": code})
    assert response.status == 200
    assert (await response.json())["status"] == "approved"
    return code


async def test_no_code_in_logs_console_provider(
    json_debug_logs: pytest.CaptureFixture[str], aiohttp_client: Any, sms_path: Path
) -> None:
    start_json_debug_logging()
    client: Client = await aiohttp_client(create_app(make_settings(sms_path)))

    async def code_of(message_id: str) -> str:
        await wait_for(lambda: any(s["message_id"] == message_id for s in read_sms(sms_path)))
        sms = next(s for s in read_sms(sms_path) if s["message_id"] == message_id)
        return code_in(sms["body"])

    code = await otp_round(client, code_of)
    await client.close()  # drain and stop: the shutdown lines are checked too

    captured = json_debug_logs.readouterr()
    lines = log_lines(captured.err)
    events = [line["event"] for line in lines]
    # The capture works and per-message debug lines were written...
    assert "sent" in events, events
    assert "drained" in events, events
    assert all("level" in line and "timestamp" in line for line in lines)
    # ... the test can see the code (the SMS file has it) ...
    assert code in sms_path.read_text()
    # ... and no log line holds it.
    assert code not in captured.err
    assert code not in captured.out


async def test_no_code_in_logs_twilio_with_errors_and_retries(
    json_debug_logs: pytest.CaptureFixture[str],
    aiohttp_server: Any,
    aiohttp_client: Any,
    sms_path: Path,
) -> None:
    # Provider errors and retries log at debug level too: none of them may carry the body.
    start_json_debug_logging()
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN, faults=Faults(fail_5xx=1.0), seed=1)
    server = await aiohttp_server(fake.make_app())
    provider = {
        "name": "twilio",
        "kind": "twilio",
        "account_sid": ACCOUNT_SID,
        "auth_token": AUTH_TOKEN,
        "from": "+15005550006",
        "base_url": str(server.make_url("")),
    }
    settings = make_settings(
        sms_path,
        providers=[provider],
        dispatch={"backoff_base_s": 0.02, "backoff_max_s": 0.05, "max_attempts": 50},
    )
    client: Client = await aiohttp_client(create_app(settings))

    async def code_of(message_id: str) -> str:
        await wait_for(lambda: fake.by_status.get(500, 0) >= 2)
        fake.configure({"fail_5xx": 0.0})
        await wait_for(lambda: len(fake.accepted) == 1)
        return code_in(fake.accepted[0].body)

    code = await otp_round(client, code_of)
    await client.close()

    captured = json_debug_logs.readouterr()
    events = [line["event"] for line in log_lines(captured.err)]
    assert "provider_error" in events, events
    assert "retry" in events, events
    assert "sent" in events, events
    assert code not in captured.err
    assert code not in captured.out
    assert AUTH_TOKEN not in captured.err
