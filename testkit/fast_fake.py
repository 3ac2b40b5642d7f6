"""A fast fake Twilio for transport benchmarks: a raw asyncio Protocol server on uvloop.

    python -m testkit.fast_fake --port 0 --port-file /tmp/fast.port [--tls-dir DIR]

It answers the Messages API shape only (`POST /2010-04-01/Accounts/{sid}/Messages.json`,
Basic auth checked, the form parsed for To/Body/From/MessagingServiceSid, 201 with the
Message resource of `testkit.twilio_shapes`), with keep-alive and Content-Length answers, so a
client can be measured without the server being the limit: `testkit.fake_provider` (aiohttp)
does ~8k req/s on one core, this one several times that. No faults, no latency, no records
beyond counters: use `testkit.fake_provider` for behaviour, this one for cost.

Control paths: `GET /_stats` (JSON: `requests` to the Messages endpoint, `by_status`, the
server's own CPU seconds `cpu_s` = user + system of its process, `connections` accepted),
`GET /healthz`. At exit (SIGTERM/SIGINT) the same stats are printed as one `STATS {json}` line.

With `--tls-dir DIR` it serves HTTPS with a certificate for `localhost`, 127.0.0.1 and ::1
signed by a private CA, both made at start with `cryptography` (`DIR/ca.pem` is the CA file
a client trusts); `--tls` does the same in a private temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import gc
import ipaddress
import os
import re
import resource
import signal
import ssl
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final, cast
from urllib.parse import unquote_to_bytes

import orjson
import uvloop

from testkit import serving
from testkit import twilio_shapes as tw

DEFAULT_ACCOUNT_SID: Final = "AC" + "0" * 32
DEFAULT_AUTH_TOKEN: Final = "fake-auth-token"
# A request head larger than this is refused (431) and the connection closed.
MAX_HEAD_BYTES: Final = 64 * 1024
MAX_BODY_BYTES: Final = 1024 * 1024

__all__ = ["FastFakeTwilio", "main", "self_signed_certificate", "server_ssl_context"]

_REASONS: Final = {
    200: b"OK",
    201: b"Created",
    400: b"Bad Request",
    401: b"Unauthorized",
    404: b"Not Found",
    405: b"Method Not Allowed",
    411: b"Length Required",
    413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
}
# Roughly the header set Twilio answers with (names and sizes): the client's header parsing
# is part of what is measured, so an answer with two headers would flatter the heavier clients.
_TWILIO_HEADERS: Final = (
    b"Content-Type: application/json;charset=utf-8\r\n"
    b"Connection: keep-alive\r\n"
    b"Twilio-Concurrent-Requests: 1\r\n"
    b"Twilio-Request-Id: RQ0123456789abcdef0123456789abcdef\r\n"
    b"Twilio-Request-Duration: 0.063\r\n"
    b"Access-Control-Allow-Origin: *\r\n"
    b"Access-Control-Allow-Headers: Accept, Authorization, Content-Type, If-Match, "
    b"If-Modified-Since, If-None-Match, If-Unmodified-Since, Idempotency-Key\r\n"
    b"Access-Control-Allow-Methods: GET, POST, DELETE, OPTIONS\r\n"
    b"Access-Control-Expose-Headers: ETag\r\n"
    b"Access-Control-Allow-Credentials: true\r\n"
    b"X-Powered-By: AT-5000\r\n"
    b"X-Shenanigans: none\r\n"
    b"X-Home-Region: us1\r\n"
    b"X-API-Domain: api.twilio.com\r\n"
    b"Strict-Transport-Security: max-age=31536000\r\n"
)
_UNAUTHORIZED_EXTRA: Final = b'WWW-Authenticate: Basic realm="Twilio API"\r\n'


class _Counters:
    """Shared by every connection of one server."""

    __slots__ = ("by_status", "connections", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.connections = 0
        self.by_status: dict[int, int] = {}


class FastFakeTwilio:
    """One fake account; `protocol()` makes the per-connection protocol for create_server."""

    def __init__(
        self, account_sid: str = DEFAULT_ACCOUNT_SID, auth_token: str = DEFAULT_AUTH_TOKEN
    ) -> None:
        self.account_sid = account_sid
        self.messages_path = f"/{tw.API_VERSION}/Accounts/{account_sid}/Messages.json".encode()
        credentials = base64.b64encode(f"{account_sid}:{auth_token}".encode())
        self._expected_auth = b"Basic " + credentials
        self._credentials = (account_sid, auth_token)
        self.counters = _Counters()
        self._sid_prefix = os.urandom(8).hex()
        self._sids = 0

    def protocol(self) -> _ServerProtocol:
        return _ServerProtocol(self)

    def stats(self) -> dict[str, object]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        counters = self.counters
        return {
            "requests": counters.requests,
            "by_status": {str(status): n for status, n in counters.by_status.items()},
            "connections": counters.connections,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "user_s": usage.ru_utime,
            "sys_s": usage.ru_stime,
        }

    def authorized(self, header: bytes | None) -> bool:
        if header == self._expected_auth:
            return True
        # Any other spelling of the same credentials (scheme case, spaces) is still right.
        if header is None:
            return False
        scheme, _, encoded = header.strip().partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            login, _, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
        except ValueError:  # binascii.Error is a ValueError
            return False
        return (login.decode(errors="replace"), password.decode(errors="replace")) == (
            self._credentials
        )

    def answer(self, auth: bytes | None, body: bytes) -> tuple[int, bytes, bytes]:
        """(status, JSON body, extra header lines) of one Messages request."""
        if not self.authorized(auth):
            return 401, tw.UNAUTHORIZED_BODY, _UNAUTHORIZED_EXTRA
        fields = _form_fields(body)
        to = fields.get("To")
        text = fields.get("Body")
        from_ = fields.get("From") or None
        service = fields.get("MessagingServiceSid") or None
        if not to:
            return 400, tw.MISSING_TO_BODY, b""
        if not text:
            return 400, tw.MISSING_BODY_BODY, b""
        if from_ is None and service is None:
            return 400, tw.MISSING_FROM_BODY, b""
        if from_ is not None and service is not None:
            return 400, tw.BOTH_SENDERS_BODY, b""
        if len(text) > tw.MAX_BODY_CHARS:
            return 400, tw.BODY_TOO_LONG_BODY, b""
        if not tw.E164.match(to):
            return 400, tw.invalid_to_body(to), b""
        self._sids += 1
        resource_ = tw.message_resource(
            account_sid=self.account_sid,
            # Unique in this process and cheaper than random bytes per answer.
            sid=f"SM{self._sid_prefix}{self._sids:016x}",
            to=to,
            from_=from_,
            messaging_service_sid=service,
            body=text,
        )
        return 201, orjson.dumps(resource_), b""


# The four fields the fake looks at, found in one pass; the rest of the form is skipped.
_FIELD: Final = re.compile(rb"(?:^|&)(To|Body|From|MessagingServiceSid)=([^&]*)")


def _form_fields(body: bytes) -> dict[str, str]:
    """Bytes all the way: unquote_plus on str costs several times more per field."""
    fields: dict[str, str] = {}
    for name, value in _FIELD.findall(body):
        value = value.replace(b"+", b" ")
        if b"%" in value:
            value = unquote_to_bytes(value)
        fields[name.decode()] = value.decode("utf-8", "replace")
    return fields


class _ServerProtocol(asyncio.Protocol):
    """One client connection: parses request heads by hand, answers each in order."""

    __slots__ = ("_buffer", "_fake", "_transport")

    def __init__(self, fake: FastFakeTwilio) -> None:
        self._fake = fake
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport = cast(asyncio.Transport, transport)
        self._fake.counters.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        transport = self._transport
        while transport is not None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    self._reply(431, b"", b"", close=True)
                    return
                break
            head = buffer[:end]
            line_end = head.find(b"\r\n")
            request_line = head if line_end < 0 else head[:line_end]
            parts = request_line.split(b" ")
            if len(parts) != 3:
                self._reply(400, b"", b"", close=True)
                return
            method, target, version = parts
            length = 0
            auth = None
            close = version == b"HTTP/1.0"
            chunked = False
            if line_end >= 0:
                for line in head[line_end + 2 :].split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    name = name.lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"authorization":
                        auth = value.strip()
                    elif name == b"connection":
                        token = value.strip().lower()
                        close = token == b"close" or (close and token != b"keep-alive")
                    elif name == b"transfer-encoding":
                        chunked = True
            if chunked:
                # Clients under test send Content-Length; a chunked upload is not parsed here.
                self._reply(411, b"", b"", close=True)
                return
            if length > MAX_BODY_BYTES:
                self._reply(413, b"", b"", close=True)
                return
            need = end + 4 + length
            if len(buffer) < need:
                break
            body = buffer[end + 4 : need]
            buffer = buffer[need:]
            self._dispatch(method, target, auth, body, close)
            if close:
                return
        self._buffer = buffer

    def _dispatch(
        self, method: bytes, target: bytes, auth: bytes | None, body: bytes, close: bool
    ) -> None:
        fake = self._fake
        if target == fake.messages_path:
            if method != b"POST":
                self._reply(405, b"", b"", close=close)
                return
            status, payload, extra = fake.answer(auth, body)
            counters = fake.counters
            counters.requests += 1
            counters.by_status[status] = counters.by_status.get(status, 0) + 1
            self._reply(status, payload, _TWILIO_HEADERS + extra, close=close)
        elif target.startswith(b"/_stats"):
            self._reply(200, orjson.dumps(fake.stats()), b"", close=close)
        elif target == b"/healthz":
            self._reply(200, b'"ok"', b"", close=close)
        else:
            self._reply(404, b"", b"", close=close)

    def _reply(self, status: int, payload: bytes, headers: bytes, *, close: bool) -> None:
        transport = self._transport
        if transport is None:
            return
        head = b"HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Length: %d\r\n" % (
            status,
            _REASONS.get(status, b"Unknown"),
            _http_date(),
            len(payload),
        )
        headers = headers or b"Content-Type: application/json\r\n"
        if close:
            headers = headers.replace(b"Connection: keep-alive\r\n", b"") + b"Connection: close\r\n"
        transport.write(head + headers + b"\r\n" + payload)
        if close:
            transport.close()
            self._transport = None


def _http_date() -> bytes:
    """IMF-fixdate of now: Twilio's body date with GMT for +0000 (both cached per second)."""
    return tw.rfc2822_now().replace("+0000", "GMT").encode()


# -- TLS ---------------------------------------------------------------------------


def self_signed_certificate(
    directory: Path,
    *,
    hostnames: Sequence[str] = ("localhost",),
    addresses: Sequence[str] = ("127.0.0.1", "::1"),
) -> tuple[Path, Path]:
    """Make a private CA and a server certificate it signs; return (cert.pem, key.pem).

    Written into `directory`: `ca.pem` (the CA a client trusts), `cert.pem` (the server's
    certificate), `key.pem` (its key), all EC P-256. Two certificates rather than one that is
    its own CA: strict verifiers (rustls/webpki) refuse a CA certificate as a server's.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def build(
        subject: str, issuer: x509.Name | None, signer: ec.EllipticCurvePrivateKey | None
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        is_ca = issuer is None
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name if issuer is None else issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=is_ca,
                    crl_sign=is_ca,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        )
        if not is_ca:
            alt_names: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
            alt_names += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
            builder = builder.add_extension(
                x509.SubjectAlternativeName(alt_names), critical=False
            ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        return builder.sign(signer or key, hashes.SHA256()), key

    ca, ca_key = build("smsgw bench CA", None, None)
    server, server_key = build(hostnames[0] if hostnames else "server", ca.subject, ca_key)
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(server.public_bytes(pem))
    key_path.write_bytes(
        server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def server_ssl_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context


# -- script mode --------------------------------------------------------------------


async def _serve(args: argparse.Namespace, tls_dir: Path | None) -> None:
    fake = FastFakeTwilio(args.account_sid, args.auth_token)
    context = None
    if tls_dir is not None:
        context = server_ssl_context(*self_signed_certificate(tls_dir))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        fake.protocol, args.host, args.port, ssl=context, backlog=serving.BACKLOG
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    bound = int(server.sockets[0].getsockname()[1])
    if args.port_file is not None:
        serving.write_port_file(args.port_file, bound)
    scheme = "https" if context is not None else "http"
    print(f"listening on {scheme}://{args.host}:{bound}", flush=True)
    try:
        await stop.wait()
    finally:
        server.close()
        print("STATS " + orjson.dumps(fake.stats()).decode(), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m testkit.fast_fake", description=__doc__)
    serving.add_listen_args(parser)
    parser.add_argument("--account-sid", default=DEFAULT_ACCOUNT_SID)
    parser.add_argument("--auth-token", default=DEFAULT_AUTH_TOKEN)
    parser.add_argument("--tls", action="store_true", help="HTTPS, certificate in a temp dir")
    parser.add_argument(
        "--tls-dir", type=Path, default=None, help="HTTPS; write ca.pem (what to trust) here"
    )
    args = parser.parse_args(argv)
    # Counters only, no records: nothing for the cyclic collector to do but stall the loop.
    gc.disable()
    if args.tls_dir is not None:
        uvloop.run(_serve(args, args.tls_dir))
    elif args.tls:
        with tempfile.TemporaryDirectory(prefix="fast-fake-tls-") as tmp:
            uvloop.run(_serve(args, Path(tmp)))
    else:
        uvloop.run(_serve(args, None))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
