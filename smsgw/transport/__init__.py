"""HTTP/1.1 client transport for the provider adapters: a keep-alive pool per origin.

Chosen by measurement (bench/transports.py): an asyncio Protocol per connection with
llhttp parsing (httptools) costs about a fifth of aiohttp's CPU per request and lets the
caller write a request with no await between taking its rate-limiter slot and the write.
A leaf package: it imports nothing of smsgw but the error base class.

    pool = Pool("https://api.twilio.com", max_connections=200, ca_file=None)
    template = pool.template("POST", "/2010-04-01/Accounts/AC.../Messages.json", headers)
    conn = await pool.connection()          # NotSent if none can be had
    # ... take the limiter slot here, no await after it ...
    pending = conn.send(template.build(body))
    response = await pending                # ResponseFailed (ambiguous) if no whole answer
"""

from smsgw.transport.bodies import json_object
from smsgw.transport.connection import Connection, Response
from smsgw.transport.errors import (
    BadResponse,
    ConnectFailed,
    ConnectionLost,
    ConnectTimeout,
    NotSent,
    PoolClosed,
    PoolTimeout,
    ResponseFailed,
    ResponseTimeout,
    ResponseTooLarge,
    TransportError,
)
from smsgw.transport.pool import Pool, PoolStats
from smsgw.transport.request import RequestTemplate

__all__ = [
    "BadResponse",
    "ConnectFailed",
    "ConnectTimeout",
    "Connection",
    "ConnectionLost",
    "NotSent",
    "Pool",
    "PoolClosed",
    "PoolStats",
    "PoolTimeout",
    "RequestTemplate",
    "Response",
    "ResponseFailed",
    "ResponseTimeout",
    "ResponseTooLarge",
    "TransportError",
    "json_object",
]
