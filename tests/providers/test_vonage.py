"""VonageProvider: request shape, every row of the status table, secrecy, settings, and end
to end against the fake provider server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer

from smsgw.app import create_app
from smsgw.errors import (
    ConfigError,
    PermanentProviderError,
    ProviderError,
    RetryableProviderError,
    ThrottledError,
)
from smsgw.providers import ReceiptRoute, ReceiptTagger, build_provider
from smsgw.providers.base import OutgoingSms
from smsgw.providers.vonage import (
    STATUS_OUTCOMES,
    VonageProvider,
    client_ref,
    parse_client_ref,
)
from smsgw.settings import VonageProviderSettings, parse_settings
from testkit.fake_provider import FakeProvider, Faults, VonageAccount
from tests.helpers import ScriptedHttp, code_in, make_settings

pytestmark = pytest.mark.timeout(30)

KEY = "abcd1234"
SECRET = "vonage-5ecret-9f8e7d"
FROM = "AcmeInc"
TO = "+447700900123"
BODY = "Your smsgw code is 493817. It expires in 10 minutes."
BASE = "http://vonage.test"
PATH = "/sms/json"


def settings(**overrides: Any) -> VonageProviderSettings:
    values: dict[str, Any] = {
        "name": "vonage",
        "api_key": KEY,
        "api_secret": SECRET,
        "from_": FROM,
        "base_url": BASE,
        "timeout_s": 5.0,
        "connect_timeout_s": 1.0,
    }
    values.update(overrides)
    return VonageProviderSettings(**values)


def sms(validity_s: int | None = 600, body: str = BODY, to: str = TO) -> OutgoingSms:
    return OutgoingSms(message_id="msg_1", to=to, body=body, validity_s=validity_s)


def ok(*ids: str) -> dict[str, Any]:
    parts = [{"to": TO[1:], "message-id": i, "status": "0"} for i in ids or ("0A00000001",)]
    return {"message-count": str(len(parts)), "messages": parts}


def refused(*statuses: str, text: str = "refused") -> dict[str, Any]:
    parts = [
        {"status": s, "message-id": f"ID{n}"} if s == "0" else {"status": s, "error-text": text}
        for n, s in enumerate(statuses)
    ]
    return {"message-count": str(len(parts)), "messages": parts}


@pytest.fixture
async def provider(http: ScriptedHttp) -> AsyncIterator[VonageProvider]:
    p = VonageProvider(settings(base_url=http.url))
    await p.start()
    yield p
    await p.close()


def form_of(http: ScriptedHttp, index: int = 0) -> dict[str, list[str]]:
    return http.sent(PATH)[index].form()


# --- request shape -----------------------------------------------------------------------


async def test_request_is_a_form_with_credentials_digits_only_to_and_client_ref(
    provider: VonageProvider, http: ScriptedHttp
) -> None:
    http.post(PATH, status=200, payload=ok("0A0000001"))

    receipt = await provider.send(sms(validity_s=600))

    assert (receipt.provider, receipt.provider_message_id) == ("vonage", "0A0000001")
    assert form_of(http) == {
        "api_key": [KEY],
        "api_secret": [SECRET],
        "from": [FROM],
        "to": [TO[1:]],
        "text": [BODY],
        "client-ref": ["msg_1"],
        "ttl": ["600000"],
    }
    headers = http.sent(PATH)[0].headers
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert "Authorization" not in headers


@pytest.mark.parametrize(
    ("validity_s", "ttl"),
    [(0, "20000"), (5, "20000"), (20, "20000"), (300, "300000"), (10**7, "604800000")],
)
async def test_ttl_is_milliseconds_clamped_to_vonage_range(
    provider: VonageProvider, http: ScriptedHttp, validity_s: int, ttl: str
) -> None:
    http.post(PATH, status=200, payload=ok())
    await provider.send(sms(validity_s=validity_s))
    assert form_of(http)["ttl"] == [ttl]


async def test_no_ttl_for_messages_without_expiry(
    provider: VonageProvider, http: ScriptedHttp
) -> None:
    http.post(PATH, status=200, payload=ok())
    await provider.send(sms(validity_s=None))
    assert "ttl" not in form_of(http)


@pytest.mark.parametrize(
    ("body", "unicode"),
    [
        ("Votre code est 1234. Écrivez-le vite ! {€}", False),  # GSM-7 incl. extension table
        ("आपका कोड 1234 है", True),
        ("Code 1234 ✓", True),
        ("back`tick 1234", True),  # ASCII, yet not in GSM-7
    ],
)
async def test_non_gsm_text_is_sent_as_unicode(
    provider: VonageProvider, http: ScriptedHttp, body: str, unicode: bool
) -> None:
    http.post(PATH, status=200, payload=ok())
    await provider.send(sms(body=body))
    form = form_of(http)
    assert form["text"] == [body]
    assert form.get("type") == (["unicode"] if unicode else None)


async def test_numeric_sender_loses_its_plus_and_callback_is_sent(http: ScriptedHttp) -> None:
    tagger = ReceiptTagger(b"k" * 32)
    p = VonageProvider(
        settings(from_="+15005550006", base_url=http.url),
        ReceiptRoute("https://sms.example.com/cb", tagger),
    )
    await p.start()
    try:
        http.post(PATH, status=200, payload=ok())
        await p.send(sms())
    finally:
        await p.close()
    form = form_of(http)
    assert form["from"] == ["15005550006"]
    assert form["callback"] == ["https://sms.example.com/cb"]
    # client-ref: our id, the send time and the tag proving we sent it through "vonage".
    [ref] = form["client-ref"]
    message_id, sent_at, tag = parse_client_ref(ref)
    assert message_id == "msg_1"
    assert sent_at is not None
    assert tag is not None
    assert tagger.verify("vonage", "msg_1", int(sent_at), tag)
    assert not tagger.verify("twilio", "msg_1", int(sent_at), tag)
    assert not ReceiptTagger(b"j" * 32).verify("vonage", "msg_1", int(sent_at), tag)


def test_a_tagged_client_ref_of_our_ids_fits_vonages_limit() -> None:
    message_id = "msg_" + "f" * 32
    sent_at = 10**10 - 1  # a send time of ten digits, until the year 2286
    tag = ReceiptTagger(b"k" * 32).tag("vonage", message_id, sent_at)
    assert len(client_ref(message_id, sent_at, tag)) == 80 <= 100


def test_overlong_callback_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="100"):
        VonageProvider(
            settings(), ReceiptRoute("https://x.test/" + "a" * 100, ReceiptTagger(b"k" * 32))
        )


def test_factory_builds_a_vonage_provider() -> None:
    assert isinstance(build_provider(settings()), VonageProvider)


# --- classification: every row of the status table ---------------------------------------


@pytest.mark.parametrize(("status", "row"), sorted(STATUS_OUTCOMES.items()))
async def test_each_status_in_the_table(
    provider: VonageProvider, http: ScriptedHttp, status: str, row: tuple[str, str]
) -> None:
    outcome, reason = row
    http.post(PATH, status=200, payload=refused(status))
    with pytest.raises(ProviderError) as info:
        await provider.send(sms())
    error = info.value
    assert (error.code, error.detail) == (status, reason)
    if outcome == "throttled":
        assert isinstance(error, ThrottledError)
        assert error.retry_after_s == 1.0
    elif outcome == "permanent":
        assert isinstance(error, PermanentProviderError)
    else:  # retryable and account: worth another try, never a possible duplicate
        assert type(error) is RetryableProviderError
    if isinstance(error, RetryableProviderError):
        assert error.ambiguous is False


def test_the_table_covers_the_documented_statuses() -> None:
    assert STATUS_OUTCOMES["1"][0] == "throttled"
    assert STATUS_OUTCOMES["5"][0] == "retryable"
    assert {s for s, (o, _) in STATUS_OUTCOMES.items() if o == "account"} >= {"4", "8", "9"}
    for status in ("2", "3", "6", "7", "15", "29"):
        assert STATUS_OUTCOMES[status][0] == "permanent"


async def test_unknown_status_is_permanent_with_generic_reason(
    provider: VonageProvider, http: ScriptedHttp
) -> None:
    http.post(PATH, status=200, payload=refused("99"))
    with pytest.raises(PermanentProviderError) as info:
        await provider.send(sms())
    assert (info.value.code, info.value.detail) == ("99", "rejected with status 99")


async def test_status_as_a_number_is_understood(
    provider: VonageProvider, http: ScriptedHttp
) -> None:
    http.post(PATH, status=200, payload={"messages": [{"status": 0, "message-id": "0C1"}]})
    assert (await provider.send(sms())).provider_message_id == "0C1"


async def test_multipart_success_returns_the_first_part_id(
    provider: VonageProvider, http: ScriptedHttp
) -> None:
    http.post(PATH, status=200, payload=ok("0D1", "0D2", "0D3"))
    assert (await provider.send(sms())).provider_message_id == "0D1"


@pytest.mark.parametrize(
    ("statuses", "error_type", "ambiguous"),
    [
        (("0", "1"), RetryableProviderError, True),  # some parts out: a retry duplicates them
        (("0", "5"), RetryableProviderError, True),
        (("0", "4"), RetryableProviderError, True),
        (("0", "3"), PermanentProviderError, None),
        (("1", "1"), ThrottledError, False),
        (("5", "0"), RetryableProviderError, True),
    ],
)
async def test_partly_sent_multipart(
    provider: VonageProvider,
    http: ScriptedHttp,
    statuses: tuple[str, ...],
    error_type: type[ProviderError],
    ambiguous: bool | None,
) -> None:
    http.post(PATH, status=200, payload=refused(*statuses))
    with pytest.raises(ProviderError) as info:
        await provider.send(sms())
    assert type(info.value) is error_type
    if ambiguous is not None:
        assert isinstance(info.value, RetryableProviderError)
        assert info.value.ambiguous is ambiguous


@pytest.mark.parametrize(
    "answer",
    [
        {"payload": {"message-count": "0", "messages": []}},
        {"payload": {"messages": "nope"}},
        {"payload": {"messages": ["0"]}},
        {"payload": {"messages": [{"message-id": "x"}]}},
        {"payload": {"messages": [{"status": True}]}},
        {"payload": {"messages": [{"status": "Throttled, retry"}]}},
        {"payload": {"messages": [{"status": "-1"}]}},
        {"payload": {"messages": [{"status": "0"}]}},  # success without a message-id
        {"payload": {"messages": [{"status": "0", "message-id": ""}]}},
        {"body": "<html>ok</html>", "content_type": "text/html"},
        {"payload": [1, 2]},
    ],
    ids=[
        "empty",
        "not-a-list",
        "part-not-object",
        "no-status",
        "bool-status",
        "text-status",
        "negative-status",
        "no-id",
        "empty-id",
        "html",
        "json-array",
    ],
)
async def test_unreadable_200_is_ambiguous(
    provider: VonageProvider, http: ScriptedHttp, answer: dict[str, Any]
) -> None:
    http.post(PATH, status=200, **answer)
    with pytest.raises(RetryableProviderError) as info:
        await provider.send(sms())
    assert info.value.ambiguous is True
    assert not isinstance(info.value, ThrottledError)


# --- secrecy ------------------------------------------------------------------------------


def _error_texts(exc: BaseException) -> list[str]:
    texts = [str(exc), repr(exc)]
    if isinstance(exc, ProviderError):
        texts += [exc.detail, str(exc.code)]
    if exc.__cause__ is not None:
        texts += [str(exc.__cause__), repr(exc.__cause__)]
    return texts


# Vonage's error-text can echo the request; none of it may reach our errors or logs.
_ECHO = f"api_secret={SECRET} to={TO[1:]} text={BODY}"


@pytest.mark.parametrize(
    "answer",
    [
        {"status": 200, "payload": refused("3", text=_ECHO)},
        {"status": 200, "payload": refused("4", text=_ECHO)},
        {"status": 200, "payload": refused("1", text=_ECHO)},
        {"status": 200, "payload": refused("5", text=_ECHO)},
        {"status": 200, "payload": refused("42", text=_ECHO)},
        {"status": 200, "payload": {"messages": [{"status": "0", "error-text": _ECHO}]}},
        {"status": 500, "body": _ECHO, "content_type": "text/plain"},
        {"status": 400, "body": _ECHO, "content_type": "text/plain"},
        {"hang": True},
    ],
    ids=[
        "invalid",
        "credentials",
        "throttled",
        "internal",
        "unknown",
        "no-id",
        "5xx",
        "4xx",
        "timeout",
    ],
)
async def test_no_error_or_log_carries_secret_body_or_number(
    http: ScriptedHttp, answer: dict[str, Any]
) -> None:
    http.post(PATH, **answer)
    provider = VonageProvider(settings(base_url=http.url, timeout_s=0.2))
    await provider.start()
    try:
        with structlog.testing.capture_logs() as logs, pytest.raises(ProviderError) as info:
            await provider.send(sms())
    finally:
        await provider.close()
    assert [entry["event"] for entry in logs] == ["provider_error"]  # the check has teeth
    texts = _error_texts(info.value) + [repr(entry) for entry in logs]
    for text in texts:
        for secret in (SECRET, BODY, "493817", TO, TO[1:]):
            assert secret not in text


# --- settings -----------------------------------------------------------------------------

ENTRY: dict[str, Any] = {
    "name": "vonage",
    "kind": "vonage",
    "api_key": KEY,
    "api_secret": SECRET,
    "from": FROM,
}


def config_error(entry: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_settings({"providers": [entry]}, env={})
    return info.value


def test_settings_defaults() -> None:
    [vonage] = parse_settings({"providers": [ENTRY]}, env={}).providers
    assert isinstance(vonage, VonageProviderSettings)
    assert vonage.base_url == "https://rest.nexmo.com"
    assert vonage.countries == ("*",)
    assert vonage.from_ == FROM


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"api_key": None}, "api_key"),
        ({"api_secret": None}, "api_secret"),
        ({"from": None}, "from"),
        ({"api_key": ""}, "api_key"),
        ({"api_secret": "  "}, "api_secret"),
        ({"from": "A very long sender"}, "from"),
        ({"from": "+1234567890123456"}, "from"),
        ({"from": "Acme-Inc"}, "from"),
        ({"base_url": "ftp://rest.nexmo.com"}, "base_url"),
        ({"base_url": "rest.nexmo.com"}, "base_url"),
        ({"weight": 0}, "weight"),
        ({"countries": ["GB", "XX"]}, "countries"),
    ],
)
def test_bad_settings_name_the_key(change: dict[str, Any], key: str) -> None:
    entry = {k: v for k, v in {**ENTRY, **change}.items() if v is not None}
    error = config_error(entry)
    assert error.key == f"providers[0].{key}"
    assert SECRET not in str(error)


def test_secret_from_the_environment_and_masked_in_repr() -> None:
    raw = {"providers": [{**ENTRY, "api_secret": "env:VONAGE_SECRET"}]}
    [vonage] = parse_settings(raw, env={"VONAGE_SECRET": SECRET}).providers
    assert isinstance(vonage, VonageProviderSettings)
    assert vonage.api_secret == SECRET
    assert SECRET not in repr(vonage)
    assert KEY in repr(vonage)


# --- end to end against the fake provider server -----------------------------------------

ACCOUNT = VonageAccount(api_key="e2ekey12", api_secret="e2e-vonage-secret")
PHONE = "+14155550100"


@pytest.fixture
async def served(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> Callable[..., Awaitable[tuple[FakeProvider, VonageProvider]]]:
    providers: list[VonageProvider] = []

    async def build(faults: Faults | None = None, **overrides: Any) -> tuple[Any, Any]:
        fake = FakeProvider(vonage=ACCOUNT, faults=faults, seed=5)
        server = await aiohttp_server(fake.make_app())
        values = {
            "api_key": ACCOUNT.api_key,
            "api_secret": ACCOUNT.api_secret,
            "base_url": str(server.make_url("")),
            **overrides,
        }
        provider = VonageProvider(settings(**values))
        await provider.start()
        providers.append(provider)
        return fake, provider

    yield build
    for provider in providers:
        await provider.close()


async def test_e2e_accepted_and_recorded_in_e164(served: Any) -> None:
    fake, provider = await served()
    receipt = await provider.send(sms(to=PHONE))
    [accepted] = fake.accepted
    assert (accepted.to, accepted.body, accepted.sid) == (PHONE, BODY, receipt.provider_message_id)
    [record] = fake.records
    assert (record.provider, record.status, record.code, record.to) == ("vonage", 200, None, PHONE)


async def test_e2e_long_unicode_message_is_several_parts(served: Any) -> None:
    fake, provider = await served()
    body = "आपका कोड 493817 है। " * 5  # > 70 UCS-2 units: several parts
    receipt = await provider.send(sms(to=PHONE, body=body))
    assert fake.accepted[0].body == body
    assert receipt.provider_message_id == fake.accepted[0].sid


@pytest.mark.parametrize(
    ("faults", "overrides", "error_type", "ambiguous", "code"),
    [
        (Faults(throttle_429=1.0), {}, ThrottledError, False, "1"),
        (Faults(fail_5xx=1.0), {}, RetryableProviderError, True, None),
        (Faults(reject_numbers=frozenset({PHONE})), {}, PermanentProviderError, None, "6"),
        (None, {"api_secret": "wrong-secret"}, RetryableProviderError, False, "4"),
    ],
    ids=["throttled", "5xx", "rejected", "bad-credentials"],
)
async def test_e2e_faults_classify_as_vonage_answers_them(
    served: Any,
    faults: Faults | None,
    overrides: dict[str, Any],
    error_type: type[ProviderError],
    ambiguous: bool | None,
    code: str | None,
) -> None:
    fake, provider = await served(faults, **overrides)
    with pytest.raises(ProviderError) as info:
        await provider.send(sms(to=PHONE))
    assert type(info.value) is error_type
    assert info.value.code == code
    if ambiguous is not None:
        assert isinstance(info.value, RetryableProviderError)
        assert info.value.ambiguous is ambiguous
    assert fake.accepted == []
    [record] = fake.records
    assert record.to == PHONE
    assert record.code == code


async def test_e2e_hang_times_out_as_ambiguous(served: Any) -> None:
    fake, provider = await served(Faults(hang=1.0), timeout_s=0.2)
    started = time.monotonic()
    with pytest.raises(RetryableProviderError) as info:
        await provider.send(sms(to=PHONE))
    assert info.value.ambiguous is True
    assert time.monotonic() - started < 2
    assert fake.by_status == {0: 1}


Client = TestClient[Any, Any]


async def test_e2e_otp_through_the_gateway(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    aiohttp_client: Callable[..., Awaitable[Client]],
    sms_path: Path,
) -> None:
    fake = FakeProvider(vonage=ACCOUNT, seed=1)
    server = await aiohttp_server(fake.make_app())
    entry = {
        **ENTRY,
        "api_key": ACCOUNT.api_key,
        "api_secret": ACCOUNT.api_secret,
        "base_url": str(server.make_url("")),
    }
    client = await aiohttp_client(create_app(make_settings(sms_path, providers=[entry])))
    response = await client.post("/v1/otp", json={"phone": PHONE, "ttl_s": 120})
    assert response.status == 202
    started = await response.json()
    deadline = time.monotonic() + 5
    while not fake.accepted:
        assert time.monotonic() < deadline, fake.records
        await asyncio.sleep(0.01)
    [accepted] = fake.accepted
    assert accepted.to == PHONE
    response = await client.post(
        "/v1/otp/verify", json={"id": started["id"], "code": code_in(accepted.body)}
    )
    assert (await response.json())["status"] == "approved"
