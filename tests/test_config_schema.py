"""`smsgw config-schema`: the JSON Schema operators' files are checked with in editors and CI."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from smsgw import cli

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema_from_the_command())


def schema_from_the_command() -> dict[str, Any]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["config-schema"]) == 0
    schema: dict[str, Any] = json.loads(out.getvalue())
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def configmap_toml() -> str:
    documents = yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "configmap.yaml").read_text())
    [configmap] = [d for d in documents if d and d.get("kind") == "ConfigMap"]
    text: str = configmap["data"]["smsgw.toml"]
    return text


@pytest.mark.parametrize(
    "text",
    [
        (ROOT / "config" / "smsgw.example.toml").read_text(),
        (ROOT / "deploy" / "smsgw.docker.toml").read_text(),
        configmap_toml(),
    ],
    ids=["example", "docker", "kubernetes"],
)
def test_the_shipped_files_are_valid(validator: jsonschema.Draft202012Validator, text: str) -> None:
    errors = [
        f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(tomllib.loads(text))
    ]
    assert errors == []


TWILIO = {
    "name": "twilio",
    "kind": "twilio",
    "account_sid": "AC1",
    "auth_token": "env:TWILIO_AUTH_TOKEN",
    "from": "+15005550006",
}


@pytest.mark.parametrize(
    "document",
    [
        {"server": {"prot": 8080}},
        {"server": {"port": "8080"}},
        {"server": {"port": 70000}},
        {"otp": {"length": 3}},
        {"limiter": {"pace": 0.2}},
        {"queue": {"backend": "kafka"}},
        {"dispatch": {"provider_share": 0}},
        {"providers": [{**TWILIO, "kind": "carrier-pigeon"}]},
        {"providers": [{k: v for k, v in TWILIO.items() if k != "account_sid"}]},
        {"providers": [{**TWILIO, "colour": "red"}]},
        {"providers": [{**TWILIO, "rate": 0}]},
        {"clients": [{"name": "a", "key": "too-short"}]},
        {"otp": {"secret": "env:"}},
    ],
)
def test_what_the_loader_refuses_the_schema_refuses_too(
    validator: jsonschema.Draft202012Validator, document: dict[str, Any]
) -> None:
    assert not validator.is_valid(document)


def test_secrets_by_reference_are_valid_wherever_a_string_is(
    validator: jsonschema.Draft202012Validator,
) -> None:
    # "env:NAME" is resolved before the bounds apply: a short reference to a long secret.
    document = {
        "otp": {"secret": "env:S"},
        "queue": {"backend": "env:QUEUE_BACKEND"},
        "clients": [{"name": "a", "key": "env:K"}],
        "providers": [{**TWILIO, "auth_token": "env:T", "countries": ["env:C"]}],
    }
    assert list(validator.iter_errors(document)) == []
