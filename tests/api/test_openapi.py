"""GET /openapi.json: an OpenAPI 3.1 document in step with the routes and the generator."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "smsgw" / "api" / "openapi.json"
GENERATOR = REPO / "scripts" / "openapi.py"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}

Client = TestClient[Any, Any]


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("smsgw_openapi_generator", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def served(client: Client) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    document: dict[str, Any] = json.loads(await response.read())
    return document


def spec_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def routed_operations(client: Client) -> set[tuple[str, str]]:
    operations = set()
    for route in client.app.router.routes():
        if route.method == "HEAD":
            continue
        assert route.resource is not None
        operations.add((route.method, route.resource.canonical))
    return operations


async def test_document_is_openapi_3_1(client: Client) -> None:
    document = await served(client)
    assert document["openapi"].startswith("3.1.")
    assert document["info"]["title"]
    assert document["info"]["version"]
    assert document["paths"]


async def test_every_route_is_in_the_spec_and_every_spec_path_is_routed(client: Client) -> None:
    document = await served(client)
    routed = routed_operations(client)
    in_spec = spec_operations(document)
    assert routed, "no routes found"
    assert routed - in_spec == set(), "routed but not documented"
    assert in_spec - routed == set(), "documented but not routed"


async def test_every_spec_operation_answers(client: Client) -> None:
    # Not an unrouted 404/405 for any documented operation: the router really serves it. A
    # lookup of an unknown resource may be 404, but then with its own problem type.
    document = await served(client)
    for method, template in sorted(spec_operations(document)):
        path = re.sub(r"\{[^}]+\}", "x", template)  # a sample value for each path parameter
        response = await client.request(method, path, json={} if method == "POST" else None)
        assert response.status != 405, (method, path)
        if response.status == 404:
            problem = await response.json()
            assert problem["type"] != "about:blank", (method, path, problem)


async def test_served_document_is_the_committed_file(client: Client) -> None:
    response = await client.get("/openapi.json")
    assert await response.read() == COMMITTED.read_bytes()


def test_committed_file_is_what_the_generator_renders() -> None:
    generator = load_generator()
    assert COMMITTED.read_text() == generator.render(), (
        "smsgw/api/openapi.json is stale: run `python scripts/openapi.py`"
    )


async def test_schema_refs_resolve(client: Client) -> None:
    document = await served(client)
    schemas = document["components"]["schemas"]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref is not None:
                prefix = "#/components/schemas/"
                assert ref.startswith(prefix), ref
                assert ref[len(prefix) :] in schemas, ref
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)


@pytest.mark.parametrize(
    ("path", "schema"),
    [
        ("/v1/otp", "OtpStartBody"),
        ("/v1/otp/verify", "OtpVerifyBody"),
        ("/v1/messages", "MessageBody"),
        ("/v1/messages/batch", "MessageBatchBody"),
    ],
)
async def test_required_fields_match_the_api(client: Client, path: str, schema: str) -> None:
    # What the spec calls required is what the API reports missing from an empty object.
    document = await served(client)
    operation = document["paths"][path]["post"]
    body_schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema == {"$ref": f"#/components/schemas/{schema}"}
    required = document["components"]["schemas"][schema].get("required", [])
    assert required, schema
    response = await client.post(path, json={})
    assert response.status == 400
    payload = await response.json(content_type=None)
    missing = payload["errors"][0]["pointer"].removeprefix("#/")
    assert missing in required
    for status in ("400", "401", "413", "415"):
        assert status in operation["responses"], (path, status)
