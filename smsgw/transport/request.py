"""Request bytes built once per provider: only the length and the body change per send."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

__all__ = ["RequestTemplate"]

_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Visible ASCII only: no spaces, controls or non-ASCII in a request target.
_TARGET: Final = re.compile(r"/[\x21-\x7e]*")
_BAD_VALUE: Final = re.compile(r"[\x00\r\n]")
# Set by the template itself: a caller's copy would contradict the framing.
_OWN_HEADERS: Final = frozenset({"host", "content-length", "transfer-encoding", "connection"})


class RequestTemplate:
    """`METHOD target HTTP/1.1` with fixed headers; `build(body)` adds the length and body.

    Everything is validated here, once, so no header can smuggle a line break into the
    request. Not for HEAD (the connection could not tell that its answer has no body).
    """

    __slots__ = ("_prefix", "method", "target")

    def __init__(
        self,
        method: str,
        target: str,
        host: str,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    ) -> None:
        if not _TOKEN.fullmatch(method) or method.upper() == "HEAD":
            raise ValueError(f"unsupported method {method!r}")
        if not _TARGET.fullmatch(target):
            raise ValueError("the request target must be an origin-form path (/...)")
        if _BAD_VALUE.search(host) or not host:
            raise ValueError("invalid Host")
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        lines = [f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"]
        for name, value in pairs:
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"invalid header name {name!r}")
            if name.lower() in _OWN_HEADERS:
                raise ValueError(f"header {name} is set by the transport")
            if _BAD_VALUE.search(value):
                # The value is not quoted: it may be a credential.
                raise ValueError(f"header {name} has a line break or NUL in its value")
            lines.append(f"{name}: {value}\r\n")
        lines.append("Content-Length: ")
        self._prefix = "".join(lines).encode("latin-1")
        self.method = method
        self.target = target

    def build(self, body: bytes = b"") -> bytes:
        """The whole request with `body`."""
        return b"%s%d\r\n\r\n%s" % (self._prefix, len(body), body)

    def __repr__(self) -> str:
        # Not the headers: they carry credentials.
        return f"<RequestTemplate {self.method} {self.target}>"
