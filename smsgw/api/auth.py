"""Bearer API keys, one per internal client app, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from aiohttp import web

from smsgw.api.inputs import header_bytes
from smsgw.api.problems import Problem
from smsgw.settings import ClientSettings

__all__ = ["ANONYMOUS_CLIENT", "ClientAuth"]

# The client name used when no [[clients]] are configured (loopback-only development).
ANONYMOUS_CLIENT = "local"


class ClientAuth:
    def __init__(self, clients: Sequence[ClientSettings]) -> None:
        # Only hashes are kept: a memory dump does not hand out usable keys. A client in the
        # middle of a key rotation has two valid keys, its new one and its previous one.
        self._clients = tuple(
            (client.name, digest) for client in clients for digest in _key_hashes(client)
        )

    def authenticate(self, request: web.Request) -> str:
        """The calling client's name, or a 401 problem."""
        if not self._clients:
            return ANONYMOUS_CLIENT
        # The bytes as sent: a header that is not UTF-8 is simply a key that matches none.
        header = header_bytes(request, "Authorization") or b""
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            raise _unauthorized("send 'Authorization: Bearer <api key>'")
        presented = hashlib.sha256(token.strip()).digest()
        found: str | None = None
        # No early exit: the time taken does not depend on which client (if any) matched.
        for name, expected in self._clients:
            if hmac.compare_digest(presented, expected) and found is None:
                found = name
        if found is None:
            raise _unauthorized("the API key is not valid")
        return found


def _key_hashes(client: ClientSettings) -> list[bytes]:
    hashes = [_hash(client.key, client.key_sha256)]
    if client.previous_key is not None or client.previous_key_sha256 is not None:
        hashes.append(_hash(client.previous_key, client.previous_key_sha256))
    return hashes


def _hash(key: str | None, key_sha256: str | None) -> bytes:
    if key_sha256 is not None:
        return bytes.fromhex(key_sha256)
    assert key is not None  # settings guarantee one of the two
    return hashlib.sha256(key.encode()).digest()


def _unauthorized(detail: str) -> Problem:
    return Problem(
        401,
        "unauthorized",
        "Unauthorized",
        detail,
        headers={"WWW-Authenticate": 'Bearer realm="smsgw"'},
    )
