"""BatchWriteItem, the audit's hot call, without botocore's request pipeline.

Measured with `python -m bench.pipeline --audits dynamodb` (bench/RESULTS.md): botocore
turned each 25-item BatchWriteItem into ~0.7 ms of CPU, a third of the whole gateway's, most
of it walking the API model once per attribute of every item (JSONSerializer) and then its
endpoint, user-agent and event machinery. The items are already in DynamoDB's wire format
(`encode_item`), so the body is one orjson call; botocore still signs it (SigV4Auth) and
resolves and refreshes the credentials (the standard chain, instance roles included), and
the request goes over smsgw.transport's keep-alive pool. Every other call (CreateTable,
Query, ...) stays on aiobotocore.

Failures map as botocore's do for the store: an answer naming a retryable error type
(throttling, internal errors) raises RetryableBatchError for the caller's bounded retry;
any other error answer, and any transport failure, raises AuditUnavailable.
"""

from __future__ import annotations

from typing import Any

import orjson
from botocore.auth import SigV4Auth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]

from smsgw import transport
from smsgw.errors import AuditUnavailable

__all__ = ["BatchWriter", "RetryableBatchError", "endpoint_for"]

_TARGET = "DynamoDB_20120810.BatchWriteItem"
_CONTENT_TYPE = "application/x-amz-json-1.0"


class RetryableBatchError(Exception):
    """DynamoDB refused the call for now (throttled, or an error of its own): try again."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def endpoint_for(region: str, endpoint_url: str | None) -> str:
    """The regional endpoint, unless a local server (dynalite) is configured."""
    return endpoint_url or f"https://dynamodb.{region}.amazonaws.com"


class BatchWriter:
    """Signed BatchWriteItem calls to one endpoint. `credentials` is botocore's (frozen on
    each call, so refreshable ones renew themselves)."""

    def __init__(
        self,
        endpoint: str,
        region: str,
        credentials: Any,
        retryable_codes: frozenset[str],
        *,
        max_connections: int,
        connect_timeout_s: float,
        timeout_s: float,
    ) -> None:
        self._url = endpoint.rstrip("/") + "/"
        self._region = region
        self._credentials = credentials
        self._retryable = retryable_codes
        self._pool = transport.Pool(
            endpoint,
            max_connections=max_connections,
            connect_timeout_s=connect_timeout_s,
            timeout_s=timeout_s,
        )

    async def write(self, table: str, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send one BatchWriteItem; the requests DynamoDB left unprocessed."""
        body = orjson.dumps({"RequestItems": {table: requests}})
        headers = await self._signed_headers(body)
        try:
            connection = await self._pool.connection()
            template = self._pool.template("POST", "/", headers)
            response = await connection.send(template.build(body))
        except transport.TransportError as exc:
            raise AuditUnavailable(f"DynamoDB BatchWriteItem: {exc!r}") from exc
        answer = transport.json_object(response.body)
        if response.status == 200:
            unprocessed = answer.get("UnprocessedItems") or {}
            left: list[dict[str, Any]] = unprocessed.get(table, [])
            return left
        # "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"
        code = str(answer.get("__type", "")).rsplit("#", 1)[-1]
        message = str(answer.get("message") or answer.get("Message") or "")
        if code in self._retryable or (response.status >= 500 and not code):
            raise RetryableBatchError(code or f"HTTP {response.status}", message)
        raise AuditUnavailable(f"DynamoDB BatchWriteItem: {code or response.status}: {message}")

    async def close(self) -> None:
        await self._pool.close()

    async def _signed_headers(self, body: bytes) -> dict[str, str]:
        frozen = self._credentials.get_frozen_credentials()
        if hasattr(frozen, "__await__"):  # aiobotocore's refreshable credentials
            frozen = await frozen
        request = AWSRequest(
            method="POST",
            url=self._url,
            data=body,
            headers={"Content-Type": _CONTENT_TYPE, "X-Amz-Target": _TARGET},
        )
        SigV4Auth(frozen, "dynamodb", self._region).add_auth(request)
        # Host is the transport's own (the same host[:port] the signature covers).
        return {k: v for k, v in request.headers.items() if k.lower() != "host"}
