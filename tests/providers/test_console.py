"""ConsoleProvider: one flushed JSON line per SMS, on stdout or appended to a file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from smsgw.providers.base import OutgoingSms
from smsgw.providers.console import ConsoleProvider
from smsgw.settings import ConsoleProviderSettings

pytestmark = pytest.mark.timeout(30)


def sms(n: int, body: str = "Your smsgw code is 123456.") -> OutgoingSms:
    return OutgoingSms(message_id=f"msg_{n}", to="+14155550100", body=body, validity_s=600)


def lines(raw: bytes) -> list[dict[str, object]]:
    assert raw.endswith(b"\n"), raw
    return [orjson.loads(line) for line in raw.split(b"\n")[:-1]]


def assert_recent_utc(stamp: object) -> None:
    assert isinstance(stamp, str)
    assert stamp.endswith("Z"), stamp
    at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert abs(datetime.now(UTC) - at) < timedelta(seconds=30)


async def test_file_mode_appends_one_json_line_per_sms(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "sms.jsonl"
    provider = ConsoleProvider(ConsoleProviderSettings(name="console", path=str(path)))
    await provider.start()
    try:
        first = await provider.send(sms(1))
        # Flushed at once: a reader sees the line before the provider closes.
        written = lines(path.read_bytes())
        assert len(written) == 1
        second = await provider.send(sms(2, body="hello"))
    finally:
        await provider.close()

    written = lines(path.read_bytes())
    assert [set(entry) for entry in written] == [{"to", "body", "message_id", "at"}] * 2
    assert written[0]["to"] == "+14155550100"
    assert written[0]["body"] == "Your smsgw code is 123456."
    assert written[0]["message_id"] == "msg_1"
    assert written[1]["message_id"] == "msg_2"
    assert written[1]["body"] == "hello"
    for entry in written:
        assert_recent_utc(entry["at"])
    assert first.provider == "console"
    assert first.provider_message_id != second.provider_message_id


async def test_file_mode_keeps_what_was_there(tmp_path: Path) -> None:
    path = tmp_path / "sms.jsonl"
    path.write_bytes(b'{"old": true}\n')
    provider = ConsoleProvider(ConsoleProviderSettings(name="console", path=str(path)))
    await provider.start()
    try:
        await provider.send(sms(1))
    finally:
        await provider.close()
    written = lines(path.read_bytes())
    assert written[0] == {"old": True}
    assert written[1]["message_id"] == "msg_1"

    # A restart appends too.
    provider = ConsoleProvider(ConsoleProviderSettings(name="console", path=str(path)))
    await provider.start()
    try:
        await provider.send(sms(2))
    finally:
        await provider.close()
    assert [entry.get("message_id") for entry in lines(path.read_bytes())] == [
        None,
        "msg_1",
        "msg_2",
    ]


async def test_multiline_and_unicode_body_stays_on_one_line(tmp_path: Path) -> None:
    path = tmp_path / "sms.jsonl"
    body = 'Code 1234\nsecond line "quoted" é 😀'
    provider = ConsoleProvider(ConsoleProviderSettings(name="console", path=str(path)))
    await provider.start()
    try:
        await provider.send(sms(1, body=body))
    finally:
        await provider.close()
    raw = path.read_bytes()
    assert raw.count(b"\n") == 1
    assert lines(raw)[0]["body"] == body


async def test_stdout_mode_writes_json_lines(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    provider = ConsoleProvider(ConsoleProviderSettings(name="console"))
    await provider.start()
    try:
        await provider.send(sms(1))
        await provider.send(sms(2))
    finally:
        await provider.close()
    out, _ = capsysbinary.readouterr()
    written = lines(out)
    assert [entry["message_id"] for entry in written] == ["msg_1", "msg_2"]
    assert written[0]["to"] == "+14155550100"
    assert written[0]["body"] == "Your smsgw code is 123456."
    assert_recent_utc(written[0]["at"])
