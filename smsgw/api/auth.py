"""Bearer API keys, one per internal client app, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from aiohttp import web

from smsgw.api.problems import Problem
from smsgw.settings import ClientSettings

__all__ = ["ANONYMOUS_CLIENT", "ClientAuth"]

# The client name used when no [[clients]] are configured (loopback-only development).
ANONYMOUS_CLIENT = "local"


class ClientAuth:
    def __init__(self, clients: Sequence[ClientSettings]) -> None:
        # Only hashes are kept: a memory dump does not hand out usable keys.
        self._clients = tuple((client.name, _key_hash(client)) for client in clients)

    @property
    def required(self) -> bool:
        return bool(self._clients)

    def authenticate(self, request: web.Request) -> str:
        """The calling client's name, or a 401 problem."""
        if not self._clients:
            return ANONYMOUS_CLIENT
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("send 'Authorization: Bearer <api key>'")
        presented = hashlib.sha256(token.strip().encode()).digest()
        found: str | None = None
        # No early exit: the time taken does not depend on which client (if any) matched.
        for name, expected in self._clients:
            if hmac.compare_digest(presented, expected) and found is None:
                found = name
        if found is None:
            raise _unauthorized("the API key is not valid")
        return found


def _key_hash(client: ClientSettings) -> bytes:
    if client.key_sha256 is not None:
        return bytes.fromhex(client.key_sha256)
    assert client.key is not None  # settings guarantee exactly one of the two
    return hashlib.sha256(client.key.encode()).digest()


def _unauthorized(detail: str) -> Problem:
    return Problem(
        401,
        "unauthorized",
        "Unauthorized",
        detail,
        headers={"WWW-Authenticate": 'Bearer realm="smsgw"'},
    )
