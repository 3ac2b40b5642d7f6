"""The fast fake Twilio (testkit/fast_fake.py): the Messages API shape on a raw protocol."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import orjson
import pytest

from testkit import twilio_shapes as tw
from testkit.fast_fake import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FastFakeTwilio

pytestmark = pytest.mark.timeout(20)

PATH = f"/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Messages.json"
AUTH = "Basic " + base64.b64encode(f"{DEFAULT_ACCOUNT_SID}:{DEFAULT_AUTH_TOKEN}".encode()).decode()
FORM = b"To=%2B14155550100&From=%2B15005550006&Body=Your+code+is+123456"


def request(body: bytes = FORM, *, auth: str = AUTH, extra: str = "", path: str = PATH) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n{extra}"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    lines = head.split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
    body = await reader.readexactly(int(headers["content-length"]))
    return int(lines[0].split()[1]), headers, body


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FastFakeTwilio, int]]:
    fake = FastFakeTwilio()
    server = await asyncio.get_running_loop().create_server(fake.protocol, "127.0.0.1", 0)
    yield fake, server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_created_message_matches_twilio_shapes(fake: tuple[FastFakeTwilio, int]) -> None:
    _, port = fake
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request())
    status, headers, body = await read_answer(reader)
    writer.close()
    await writer.wait_closed()
    assert status == 201
    assert headers["connection"] == "keep-alive"
    resource = orjson.loads(body)
    assert resource == tw.message_resource(
        account_sid=DEFAULT_ACCOUNT_SID,
        sid=resource["sid"],
        to="+14155550100",
        from_="+15005550006",
        messaging_service_sid=None,
        body="Your code is 123456",
    )


async def test_pipelined_requests_answered_in_order_and_counted(
    fake: tuple[FastFakeTwilio, int],
) -> None:
    _, port = fake
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # Two requests and a half in one write; the rest of the third later.
    third = request(b"To=%2B14155550101&MessagingServiceSid=MG1&Body=x")
    writer.write(request() + request(auth="Basic bm86bm8=") + third[:20])
    await asyncio.sleep(0.02)
    writer.write(third[20:])
    answers = [await read_answer(reader) for _ in range(3)]
    writer.write(b"GET /_stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, headers, body = await read_answer(reader)
    assert status == 200
    assert await reader.read() == b""  # closed as asked
    writer.close()
    await writer.wait_closed()
    assert [a[0] for a in answers] == [201, 401, 201]
    assert answers[1][1]["www-authenticate"] == 'Basic realm="Twilio API"'
    assert orjson.loads(answers[2][2])["status"] == "accepted"
    assert headers["connection"] == "close"
    stats = orjson.loads(body)
    assert (stats["requests"], stats["by_status"]) == (3, {"201": 2, "401": 1})
    assert stats["connections"] == 1
    assert stats["cpu_s"] > 0


@pytest.mark.parametrize(
    ("form", "code"),
    [
        (b"From=%2B15005550006&Body=x", tw.MISSING_TO),
        (b"To=%2B14155550100&From=%2B15005550006", tw.MISSING_BODY),
        (b"To=%2B14155550100&Body=x", tw.MISSING_FROM),
        (b"To=0800&From=%2B15005550006&Body=x", tw.INVALID_TO),
    ],
)
async def test_invalid_forms_get_twilio_codes(
    fake: tuple[FastFakeTwilio, int], form: bytes, code: int
) -> None:
    _, port = fake
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request(form))
    status, _, body = await read_answer(reader)
    writer.close()
    await writer.wait_closed()
    assert (status, orjson.loads(body)["code"]) == (400, code)


async def test_unknown_paths_and_chunked_uploads_are_refused(
    fake: tuple[FastFakeTwilio, int],
) -> None:
    _, port = fake
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request(path="/2010-04-01/Accounts/ACother/Messages.json"))
    assert (await read_answer(reader))[0] == 404
    writer.write(b"POST " + PATH.encode() + b" HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert (await read_answer(reader))[0] == 411
    assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()
