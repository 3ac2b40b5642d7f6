"""Property-based checks of every operation of the served spec (schemathesis).

`smsgw serve` runs as a real process on a free loopback port (console provider, SQLite audit,
one API client key, Twilio and Vonage providers on a fake provider process, so webhooks and
dispatch have real routes). The schema is loaded from its own `GET /openapi.json`, and each
operation gets a bounded number of generated requests, valid and invalid ones alike. For every
answer: no 5xx, the status is one the spec lists for the operation, and the content type,
headers and body match what the spec says for that status.

Bounded and reproducible: few examples per operation, derandomized Hypothesis, no deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from testkit.fake_provider import twilio_provider_toml
from testkit.vonage_shapes import VonageAccount
from tests.test_serve import fake_provider

REPO = Path(__file__).resolve().parents[2]
API_KEY = "schemathesis-key-0123456789abcdef"
OTP_SECRET = "schemathesis-secret-0123456789"
# More with SMSGW_TEST_SCHEMATHESIS_EXAMPLES=500 for a deeper (slower) run.
MAX_EXAMPLES = int(os.environ.get("SMSGW_TEST_SCHEMATHESIS_EXAMPLES", "150"))
PHONES = [f"+141555501{n:02d}" for n in range(20)]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")}
    env["SCHEMATHESIS_API_KEY"] = API_KEY
    return env


def _config(directory: Path, fake_url: str) -> Path:
    path = directory / "smsgw.toml"
    path.write_text(
        f"""
[server]
host = "127.0.0.1"
drain_timeout_s = 2
public_url = "http://127.0.0.1:9"

[otp]
secret = "{OTP_SECRET}"

[audit]
path = "{directory}/audit.sqlite3"
spool_dir = "{directory}/audit-spool"

[[clients]]
name = "schemathesis"
key = "env:SCHEMATHESIS_API_KEY"

[[providers]]
name = "console"
kind = "console"
path = "{directory}/sms.jsonl"
allow_beside_real = true

{twilio_provider_toml(fake_url)}

[[providers]]
name = "vonage"
kind = "vonage"
base_url = "{fake_url}"
api_key = "{VonageAccount().api_key}"
api_secret = "{VonageAccount().api_secret}"
from = "smsgw"
"""
    )
    return path


@contextlib.contextmanager
def _serve(directory: Path, fake_url: str) -> Iterator[str]:
    port_file = directory / "port"
    log_path = directory / "smsgw.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                *("-m", "smsgw", "serve", "--config", str(_config(directory, fake_url))),
                *("--port", "0", "--port-file", str(port_file)),
            ],
            cwd=directory,
            env=_clean_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists():
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "smsgw did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{int(port_file.read_text())}"
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("schemathesis")
    with fake_provider(directory) as fake_url, _serve(directory, fake_url) as base:
        yield base


@pytest.fixture(scope="module")
def api_schema(served: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{served}/openapi.json")


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def _operations() -> list[tuple[str, str]]:
    # Test ids from the committed spec; tests/api/test_openapi.py checks the served one is it.
    document = json.loads((REPO / "smsgw" / "api" / "openapi.json").read_text())
    return [
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    ]


OPERATIONS = _operations()
# Operations a well-formed request can succeed on: generated requests must reach that
# success at least once, or the run only ever tested the refusals.
MUST_SUCCEED = {
    ("POST", "/v1/otp"),
    ("POST", "/v1/otp/verify"),
    ("POST", "/v1/messages"),
    ("POST", "/v1/messages/batch"),
    ("GET", "/v1/messages"),
    ("GET", "/v1/messages/{message_id}"),
}


class _Realistic:
    """Valid values the schema cannot describe (real phone numbers, ids that exist), patched
    into some of the positive cases so the success paths are exercised too."""

    def __init__(self) -> None:
        self.message_ids: list[str] = []

    def patch(self, case: schemathesis.Case[Any], draw: dict[str, Any]) -> None:
        phones = draw["phones"]
        body = case.body
        if isinstance(body, dict):
            for field in ("phone", "to"):
                if field in body:
                    body[field] = phones[0]
            messages = body.get("messages")
            if isinstance(messages, list):
                for n, message in enumerate(messages):
                    if isinstance(message, dict) and "to" in message:
                        message["to"] = phones[n % len(phones)]
        if case.query is not None and "to" in case.query:
            case.query["to"] = phones[0]
        if case.path_parameters is not None:
            if "message_id" in case.path_parameters and self.message_ids:
                known = self.message_ids[draw["pick"] % len(self.message_ids)]
                case.path_parameters["message_id"] = known
            if "provider" in case.path_parameters:
                case.path_parameters["provider"] = draw["provider"]

    def learn(self, response: Any) -> None:
        if response.status_code != 202:
            return
        answer = response.json()
        ids = answer.get("ids") or [answer.get("id"), answer.get("message_id")]
        self.message_ids += [i for i in ids if isinstance(i, str) and i.startswith("msg_")]


REALISTIC = _Realistic()
PATCHES = st.fixed_dictionaries(
    {
        "phones": st.lists(st.sampled_from(PHONES), min_size=1, max_size=3),
        "pick": st.integers(min_value=0, max_value=10_000),
        "provider": st.sampled_from(["twilio", "vonage", "console", "nope"]),
    }
)
SEEN: dict[tuple[str, str], Counter[int]] = {}


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_operation_conforms(
    api_schema: schemathesis.BaseSchema,
    served: str,
    http: requests.Session,
    method: str,
    path: str,
) -> None:
    operation = api_schema[path][method]
    positive = operation.as_strategy(GenerationMode.POSITIVE)
    strategy = st.one_of(
        st.tuples(positive, st.none()),
        st.tuples(operation.as_strategy(GenerationMode.NEGATIVE), st.none()),
        st.tuples(positive, PATCHES),
    )
    seen = SEEN.setdefault((method, path), Counter())

    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        # No shrinking: it would replay failing requests without bound. The failure report
        # carries the request as a curl command.
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    @hypothesis.given(drawn=strategy)
    def check(drawn: tuple[schemathesis.Case[Any], dict[str, Any] | None]) -> None:
        case, patches = drawn
        if patches is not None:
            REALISTIC.patch(case, patches)
        response = case.call_and_validate(
            base_url=served,
            session=http,
            headers={"Authorization": f"Bearer {API_KEY}"},
            checks=CHECKS,
            timeout=10,
        )
        seen[response.status_code] += 1
        REALISTIC.learn(response)

    check()
    if (method, path) in MUST_SUCCEED:
        assert any(200 <= status < 300 for status in seen), f"never succeeded: {dict(seen)}"
