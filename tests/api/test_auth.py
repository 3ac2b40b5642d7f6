"""Bearer API keys per client app; verifications belong to the client that started them."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.helpers import app_client, code_in, read_sms, wait_sms

PHONE = "+14155550100"
LOGIN_KEY = "k" * 20
SHOP_KEY = "shop-key-0123456789"
PROBLEM = "application/problem+json"
POST_ROUTES = {
    "/v1/otp": {"phone": PHONE},
    "/v1/otp/verify": {"id": "otp_x", "code": "123456"},
    "/v1/messages": {"to": PHONE, "body": "x"},
    "/v1/messages/batch": {"messages": [{"to": PHONE, "body": "x"}]},
}

Client = TestClient[Any, Any]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def slug(payload: dict[str, Any]) -> str:
    problem_type = payload["type"]
    assert isinstance(problem_type, str)
    return problem_type.rsplit(":", 1)[-1]


@pytest.fixture
async def secured(aiohttp_client: Any, sms_path: Path) -> Client:
    return await app_client(
        aiohttp_client, sms_path, clients=[{"name": "login-app", "key": LOGIN_KEY}]
    )


async def assert_401(response: Any) -> None:
    assert response.status == 401
    assert response.headers["Content-Type"] == PROBLEM
    assert response.headers["WWW-Authenticate"].lower().startswith("bearer")
    payload = await response.json(content_type=None)
    assert payload["status"] == 401
    assert payload["title"]
    assert slug(payload) == "unauthorized"


@pytest.mark.parametrize("route", list(POST_ROUTES))
@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("wrong-key-0123456789"),
        bearer(LOGIN_KEY + "x"),
        bearer(LOGIN_KEY[:-1]),
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": LOGIN_KEY},
        {"Authorization": f"Basic {LOGIN_KEY}"},
        {"Authorization": f"Token {LOGIN_KEY}"},
        {"X-Api-Key": LOGIN_KEY},
    ],
    ids=[
        "none",
        "wrong",
        "longer",
        "shorter",
        "scheme-only",
        "empty-token",
        "no-scheme",
        "basic",
        "token-scheme",
        "other-header",
    ],
)
async def test_missing_or_wrong_key_is_401(
    secured: Client, sms_path: Path, route: str, headers: dict[str, str]
) -> None:
    response = await secured.post(route, json=POST_ROUTES[route], headers=headers)
    await assert_401(response)
    await asyncio.sleep(0.05)
    assert read_sms(sms_path) == []


async def test_auth_comes_before_body_checks(secured: Client, sms_path: Path) -> None:
    # An anonymous caller learns nothing about the API from validation errors.
    response = await secured.post(
        "/v1/otp", data=b"{not json", headers={"Content-Type": "text/plain"}
    )
    await assert_401(response)


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_right_key_is_accepted(secured: Client, sms_path: Path, scheme: str) -> None:
    response = await secured.post(
        "/v1/messages",
        json={"to": PHONE, "body": "hi"},
        headers={"Authorization": f"{scheme} {LOGIN_KEY}"},
    )
    assert response.status == 202
    assert len(await wait_sms(sms_path, 1)) == 1


async def test_key_sha256_form(aiohttp_client: Any, sms_path: Path) -> None:
    digest = hashlib.sha256(SHOP_KEY.encode()).hexdigest()
    client = await app_client(
        aiohttp_client, sms_path, clients=[{"name": "shop", "key_sha256": digest}]
    )
    response = await client.post(
        "/v1/messages", json={"to": PHONE, "body": "hi"}, headers=bearer(SHOP_KEY)
    )
    assert response.status == 202
    # The hash is not itself a key.
    response = await client.post(
        "/v1/messages", json={"to": PHONE, "body": "hi"}, headers=bearer(digest)
    )
    await assert_401(response)


async def test_several_clients_each_with_their_key(aiohttp_client: Any, sms_path: Path) -> None:
    clients = [
        {"name": "login-app", "key": LOGIN_KEY},
        {"name": "shop", "key_sha256": hashlib.sha256(SHOP_KEY.encode()).hexdigest()},
    ]
    client = await app_client(aiohttp_client, sms_path, clients=clients)
    for key in (LOGIN_KEY, SHOP_KEY):
        response = await client.post(
            "/v1/messages", json={"to": PHONE, "body": key[:4]}, headers=bearer(key)
        )
        assert response.status == 202
    assert len(await wait_sms(sms_path, 2)) == 2


async def test_verification_belongs_to_its_client(aiohttp_client: Any, sms_path: Path) -> None:
    clients = [{"name": "login-app", "key": LOGIN_KEY}, {"name": "shop", "key": SHOP_KEY}]
    client = await app_client(aiohttp_client, sms_path, clients=clients)
    response = await client.post("/v1/otp", json={"phone": PHONE}, headers=bearer(LOGIN_KEY))
    assert response.status == 202
    started = await response.json()
    sms = await wait_sms(sms_path, 1)
    code = code_in(sms[0]["body"])

    for attempt in (code, "000000" if code != "000000" else "111111"):
        response = await client.post(
            "/v1/otp/verify", json={"id": started["id"], "code": attempt}, headers=bearer(SHOP_KEY)
        )
        assert response.status == 404
        assert slug(await response.json(content_type=None)) == "verification-not-found"
        # By phone, the other client has nothing pending: even the right code is a wrong one.
        response = await client.post(
            "/v1/otp/verify", json={"phone": PHONE, "code": attempt}, headers=bearer(SHOP_KEY)
        )
        assert response.status == 200
        assert (await response.json())["valid"] is False

    # The other client's tries used none of the owner's attempts.
    response = await client.post(
        "/v1/otp/verify",
        json={"id": started["id"], "code": code},
        headers=bearer(LOGIN_KEY),
    )
    assert response.status == 200
    assert await response.json() == {
        "id": started["id"],
        "status": "approved",
        "valid": True,
        "attempts_left": 4,
    }


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json"])
async def test_operational_endpoints_need_no_key(secured: Client, path: str) -> None:
    response = await secured.get(path)
    assert response.status == 200


async def test_no_clients_means_open_on_loopback(client: Client, sms_path: Path) -> None:
    response = await client.post("/v1/messages", json={"to": PHONE, "body": "open"})
    assert response.status == 202
    assert len(await wait_sms(sms_path, 1)) == 1
