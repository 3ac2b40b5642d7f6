"""Transport failures, split by the one question an SMS sender must answer: was it sent?

TransportError
 ├── NotSent              no byte of the request was written: safe to send again, anywhere
 │    ├── ConnectFailed   refused, unreachable, name not resolved, TLS handshake or
 │    │                   certificate verification failed
 │    ├── ConnectTimeout  no connection (TCP and TLS) within the connect timeout
 │    ├── PoolTimeout     every connection stayed busy and the pool was full
 │    └── PoolClosed      the pool is closing or closed
 └── ResponseFailed       the request was written (perhaps partly) and no whole answer came:
      │                   the provider may have processed it (ambiguous)
      ├── ResponseTimeout no whole answer within the response timeout
      ├── ConnectionLost  the connection closed before or during the answer
      ├── BadResponse     not an HTTP/1.x answer we can parse
      └── ResponseTooLarge the answer's head or body exceeds the bound

`ambiguous` says the same on every instance. Messages name the kind of failure (and an OS
or TLS reason) only: never the request, its URL or its headers (they carry credentials).
"""

from __future__ import annotations

from typing import ClassVar

from smsgw.errors import SmsgwError

__all__ = [
    "BadResponse",
    "ConnectFailed",
    "ConnectTimeout",
    "ConnectionLost",
    "NotSent",
    "PoolClosed",
    "PoolTimeout",
    "ResponseFailed",
    "ResponseTimeout",
    "ResponseTooLarge",
    "TransportError",
]


class TransportError(SmsgwError):
    """The HTTP exchange failed below HTTP: no status code to judge."""

    ambiguous: ClassVar[bool]


class NotSent(TransportError):
    ambiguous = False


class ConnectFailed(NotSent):
    pass


class ConnectTimeout(NotSent):
    pass


class PoolTimeout(NotSent):
    pass


class PoolClosed(NotSent):
    pass


class ResponseFailed(TransportError):
    ambiguous = True


class ResponseTimeout(ResponseFailed):
    pass


class ConnectionLost(ResponseFailed):
    pass


class BadResponse(ResponseFailed):
    pass


class ResponseTooLarge(ResponseFailed):
    pass
