"""A fake SMS provider with fault injection, for tests and benchmarks.

One server answers three shapes: Twilio's Messages API, Vonage's SMS API (`POST /sms/json`)
and Airtel IQ (`POST /api/v1/send-sms`). Each applies the same faults in its own way:
throttling is a 429 for Twilio and Airtel, a 200 with status "1" for Vonage; a rejected
number is Twilio 21211, Vonage status "6", Airtel 400. Records keep every destination in
E.164, whichever shape it came in.

In-process (tests)::

    fake = FakeProvider(faults=Faults(throttle_429=0.1), seed=1)
    server = await aiohttp_server(fake.make_app())
    ...
    assert len(fake.accepted) == 1

As its own process (benchmarks)::

    python -m testkit.fake_provider --port 0 --port-file /tmp/fake.port --latency-ms 20

Control endpoints (any process): `POST /_control` (JSON, any `Faults` field plus `seed`),
`GET /_control`, `GET /_stats` (`?summary=1`: counts only), `POST /_reset`, `GET /healthz`.

It behaves as a real provider does where the gateway's pacing is judged (issue 14):

- every answer waits its own delay (`--latency-ms 250 --jitter-ms 80`: 170..330 ms,
  uniform; `--jitter-dist normal` for a bell with that standard deviation), while the
  arrival is stamped when the request is in, before the delay;
- `--max-concurrent N` is Twilio's account concurrency limit: a request arriving while N
  are open (received, not answered) gets 429/20429 at once and is not processed; every
  Twilio answer carries `Twilio-Concurrent-Requests` (open requests, this one included),
  and the stats keep the peak. Vonage and Airtel requests count as open, never refused;
- each accepted message's segments are counted by the fake's own counter
  (`testkit.segment_count`, not smsgw's), with the most segments in any sliding second and,
  given `--limit-segments N`, how many arrivals closed a sliding second over N.

The request path must sustain 5000+ req/s on two cores next to the system under test:
no per-request logging, one form parse, prebuilt error bodies, records appended to lists,
the sliding-second figures kept up to date per arrival (O(1)), so `?summary=1` stays cheap
enough to poll during a run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import functools
import gc
import os
import random
import ssl
import time
import urllib.request
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from testkit import airtel_shapes as at
from testkit import serving
from testkit import twilio_shapes as tw
from testkit import vonage_shapes as vs
from testkit.airtel_shapes import AirtelAccount
from testkit.faults import JITTER_DISTRIBUTIONS, Faults
from testkit.segment_count import count_segments
from testkit.vonage_shapes import VonageAccount

DEFAULT_ACCOUNT_SID: Final = "AC" + "0" * 32
DEFAULT_AUTH_TOKEN: Final = "fake-auth-token"
MESSAGES_ROUTE: Final = "/2010-04-01/Accounts/{account_sid}/Messages.json"

# Status recorded for a request that was held and never answered (`hang`).
HUNG: Final = 0
# How often a held request checks whether its client left or the server is stopping.
HANG_POLL_S: Final = 0.1

_JSON: Final = "application/json"
_AUTHENTICATE: Final = 'Basic realm="Twilio API"'
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Twilio's count of the account's open REST requests, on every answer.
CONCURRENT_HEADER: Final = "Twilio-Concurrent-Requests"

__all__ = [
    "CONCURRENT_HEADER",
    "DEFAULT_ACCOUNT_SID",
    "DEFAULT_AUTH_TOKEN",
    "HUNG",
    "Accepted",
    "AirtelAccount",
    "Arrival",
    "FakeProvider",
    "FakeTwilio",
    "Faults",
    "SlidingSegments",
    "VonageAccount",
    "fetch_stats",
    "main",
    "max_in_sliding_window",
    "segments_in_sliding_window",
    "twilio_provider_toml",
    "wait_taken",
]


@dataclass(slots=True)
class Arrival:
    """One POST to a send endpoint, whatever was answered.

    Stamped when the request is in (its body read; at once for a concurrency refusal,
    which reads nothing) and recorded without an await in between, so records are in
    stamp order. The status is decided then, before any injected latency: it is what was
    answered, or would have been had the client not left during the delay.
    """

    at: float  # time.monotonic() on arrival: CLOCK_MONOTONIC, comparable across processes
    status: int  # HTTP status answered; HUNG (0) if held unanswered
    to: str  # E.164 when the request's number was well formed
    body: str
    sid: str | None  # the provider's message id if accepted
    provider: str = "twilio"  # which shape: twilio, vonage or airtel
    # Vonage's per-message `status` (its verdict inside a 200), Airtel's errorCode.
    code: str | None = None
    segments: int = 0  # counted for accepted messages only


@dataclass(slots=True)
class Accepted:
    """A message the provider took (Twilio 201, Vonage status "0", Airtel 200).

    Field order is the `/_stats` JSON shape; `sid` is the provider's message id.
    """

    to: str
    body: str
    sid: str
    at: float
    segments: int


class SlidingSegments:
    """Segments of accepted arrivals per sliding window, kept up to date per arrival.

    Windows are half-open as in `max_in_sliding_window`: two arrivals share one iff they
    are less than `window_s` apart, so the busiest window always ends at an arrival.
    Arrivals must come in time order (the fake records them so); `add` is O(1) amortised.
    """

    def __init__(self, window_s: float = 1.0) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        self.window_s = window_s
        self._recent: deque[tuple[float, int]] = deque()
        self._in_window = 0
        self.total = 0  # segments of every arrival added
        self.max = 0  # most segments in any one window
        self.over = 0  # arrivals that closed a window holding more than their limit

    def add(self, at: float, segments: int, limit: int | None = None) -> None:
        recent = self._recent
        window_s = self.window_s
        # The same comparison as max_in_sliding_window, so both agree to the last bit.
        while recent and at - recent[0][0] >= window_s:
            self._in_window -= recent.popleft()[1]
        recent.append((at, segments))
        in_window = self._in_window = self._in_window + segments
        self.total += segments
        if in_window > self.max:
            self.max = in_window
        if limit is not None and in_window > limit:
            self.over += 1

    def clear(self) -> None:
        self._recent.clear()
        self._in_window = self.total = self.max = self.over = 0


class FakeProvider:
    """Configuration and records of one fake account per shape; serve it with `make_app()`.

    Records, readable directly in-process: `arrivals` (monotonic time of every POST to
    a send endpoint), `records` (an `Arrival` each), `accepted` (what was taken),
    `by_status` (count per status answered, HUNG for held requests), `in_flight` (open
    requests now) and `in_flight_peak`, `concurrency_429` (refusals for the concurrency
    cap) and `segments` (a `SlidingSegments` over the accepted messages).
    """

    def __init__(
        self,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        *,
        faults: Faults | None = None,
        seed: int | None = None,
        vonage: VonageAccount | None = None,
        airtel: AirtelAccount | None = None,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.vonage = vonage if vonage is not None else VonageAccount()
        self.airtel = airtel if airtel is not None else AirtelAccount()
        self.faults = faults if faults is not None else Faults()
        self._rng = random.Random(seed)
        # Exact match on the header as clients usually send it; parsed only otherwise.
        credentials = base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
        self._expected_authorization = f"Basic {credentials}"
        airtel_credentials = f"{self.airtel.username}:{self.airtel.password}".encode()
        self._expected_airtel = "Basic " + base64.b64encode(airtel_credentials).decode()
        self._stopping = False
        self.arrivals: list[float] = []
        self.records: list[Arrival] = []
        self.accepted: list[Accepted] = []
        self.by_status: dict[int, int] = {}
        self.in_flight = 0
        self.in_flight_peak = 0
        self.concurrency_429 = 0
        self.segments = SlidingSegments()

    @property
    def messages_path(self) -> str:
        """Path of this account's Messages endpoint."""
        return MESSAGES_ROUTE.format(account_sid=self.account_sid)

    def configure(self, changes: Mapping[str, object]) -> Faults:
        """Apply JSON-shaped fault changes (what `POST /_control` takes).

        The extra key `seed` (int or null) reseeds the fault draws.
        """
        changes = dict(changes)
        if "seed" in changes:
            seed = changes.pop("seed")
            if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
                raise ValueError(f"seed must be an integer or null, got {seed!r}")
            self._rng.seed(seed)
        self.faults = self.faults.updated(changes)
        return self.faults

    def reset(self) -> None:
        """Forget every record (in place, so references held by tests stay valid)."""
        self.arrivals.clear()
        self.records.clear()
        self.accepted.clear()
        self.by_status.clear()
        # Requests still open stay open: the peak starts again from them.
        self.in_flight_peak = self.in_flight
        self.concurrency_429 = 0
        self.segments.clear()

    def stats(self) -> dict[str, Any]:
        """What `GET /_stats` answers (`arrivals` and `accepted` are left out of a summary)."""
        segments = self.segments
        limit = self.faults.limit_segments
        return {
            "count": len(self.arrivals),
            "by_status": {str(status): n for status, n in self.by_status.items()},
            "in_flight": self.in_flight,
            "in_flight_peak": self.in_flight_peak,
            "concurrency_429": self.concurrency_429,
            "segments_total": segments.total,
            "max_segments_in_sliding_second": segments.max,
            # Counted against the limit in force at each arrival.
            "limit_segments": limit,
            "arrivals_over_segment_limit": segments.over if limit is not None else None,
            "arrivals": self.arrivals,
            "accepted": self.accepted,
        }

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(MESSAGES_ROUTE, self._create_message)
        app.router.add_post(vs.ROUTE, functools.partial(self._counted, self._vonage_send))
        app.router.add_post(at.ROUTE, functools.partial(self._counted, self._airtel_send))
        app.router.add_get("/_stats", self._get_stats)
        app.router.add_get("/_control", self._get_control)
        app.router.add_post("/_control", self._post_control)
        app.router.add_post("/_reset", self._post_reset)
        app.router.add_get("/healthz", _healthz)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        return app

    # -- request path ---------------------------------------------------------------

    async def _create_message(self, request: web.Request) -> web.StreamResponse:
        faults = self.faults
        open_now = self.in_flight = self.in_flight + 1  # this request included
        if open_now > self.in_flight_peak:
            self.in_flight_peak = open_now
        try:
            cap = faults.max_concurrent
            if cap is not None and open_now > cap:
                # Twilio's concurrency limit: refused at once, before reading or checking
                # anything, and never processed (always safe to retry).
                self.concurrency_429 += 1
                self._record(time.monotonic(), 429, "", "", None, 0)
                return web.Response(
                    body=tw.THROTTLED_BODY,
                    status=429,
                    content_type=_JSON,
                    headers={CONCURRENT_HEADER: str(open_now)},
                )
            raw = await request.read()
            at = time.monotonic()
            form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
            to = form.get("To", "")
            body = form.get("Body", "")
            status, payload, sid = self._decide(request, form, faults)
            segments = 0
            if sid is not None:
                segments = count_segments(body)
                self.segments.add(at, segments, faults.limit_segments)
            self._record(at, status, to, body, sid, segments)
            if status == HUNG:
                return await self._hold(request)
            delay_s = self.draw_delay_s(faults)
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            headers = {CONCURRENT_HEADER: str(self.in_flight)}
            if status == 401:
                headers["WWW-Authenticate"] = _AUTHENTICATE
            elif status == 429:
                headers["Retry-After"] = str(faults.retry_after_s)
            return web.Response(body=payload, status=status, content_type=_JSON, headers=headers)
        finally:
            self.in_flight -= 1

    def draw_delay_s(self, faults: Faults | None = None) -> float:
        """An answer's own delay, in seconds: latency plus a jitter draw, never below 0."""
        if faults is None:
            faults = self.faults
        delay_ms = faults.latency_ms
        if faults.jitter_ms:
            if faults.jitter_dist == "normal":
                delay_ms += self._rng.gauss(0.0, faults.jitter_ms)
            else:
                delay_ms += self._rng.uniform(-faults.jitter_ms, faults.jitter_ms)
        return max(delay_ms, 0.0) / 1000

    def _decide(
        self, request: web.Request, form: dict[str, str], faults: Faults
    ) -> tuple[int, bytes, str | None]:
        """Pick the answer: (status, JSON body, sid if accepted).

        Order: authentication, then injected faults (Twilio throttles before looking
        at a message), then validation of the fields.
        """
        if request.match_info["account_sid"] != self.account_sid or not self._authorized(
            request.headers.get("Authorization")
        ):
            return 401, tw.UNAUTHORIZED_BODY, None
        draw = self._rng.random()
        if draw < faults.hang:
            return HUNG, b"", None
        draw -= faults.hang
        if draw < faults.throttle_429:
            return 429, tw.THROTTLED_BODY, None
        if draw - faults.throttle_429 < faults.fail_5xx:
            return 500, tw.SERVER_ERROR_BODY, None
        return self._validate(form, faults)

    def _validate(self, form: dict[str, str], faults: Faults) -> tuple[int, bytes, str | None]:
        to = form.get("To")
        body = form.get("Body")
        from_ = form.get("From") or None
        service = form.get("MessagingServiceSid") or None
        if not to:
            return 400, tw.MISSING_TO_BODY, None
        if not body:
            return 400, tw.MISSING_BODY_BODY, None
        if from_ is None and service is None:
            return 400, tw.MISSING_FROM_BODY, None
        if from_ is not None and service is not None:
            return 400, tw.BOTH_SENDERS_BODY, None
        if len(body) > tw.MAX_BODY_CHARS:
            return 400, tw.BODY_TOO_LONG_BODY, None
        if not tw.E164.match(to) or to in faults.reject_numbers:
            return 400, tw.invalid_to_body(to), None
        sid = "SM" + os.urandom(16).hex()
        resource = tw.message_resource(
            account_sid=self.account_sid,
            sid=sid,
            to=to,
            from_=from_,
            messaging_service_sid=service,
            body=body,
        )
        return 201, orjson.dumps(resource), sid

    def _authorized(self, header: str | None) -> bool:
        if header == self._expected_authorization:
            return True
        return _basic_credentials(header) == (self.account_sid, self.auth_token)

    # -- Vonage and Airtel request paths --------------------------------------------
    # Kept apart from Twilio's: the benchmarked Twilio path pays nothing for them.

    async def _vonage_send(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        at_ = time.monotonic()
        form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        faults = self.faults
        status, code, payload, sid = vs.answer(
            form, self.vonage, faults.reject_numbers, lambda: self._draw_fault(faults)
        )
        to, text = vs.e164(form.get("to", "")), form.get("text", "")
        self._record_as("vonage", None if sid else code, at_, status, to, text, sid)
        return await self._answer(request, faults, status, payload)

    async def _airtel_send(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        at_ = time.monotonic()
        try:
            message: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            message = None
        faults = self.faults
        header = request.headers.get("Authorization")
        credentials = (self.airtel.username, self.airtel.password)
        authorized = header == self._expected_airtel or _basic_credentials(header) == credentials
        status, code, payload, sid = at.answer(
            authorized,
            message,
            self.airtel,
            faults.reject_numbers,
            lambda: self._draw_fault(faults),
        )
        text = message.get("message") if isinstance(message, dict) else None
        to = at.e164(at.destination(message))
        text = text if isinstance(text, str) else ""
        self._record_as("airtel", code, at_, status, to, text, sid)
        return await self._answer(request, faults, status, payload)

    def _draw_fault(self, faults: Faults) -> int | None:
        """HUNG, 429 or 500 when this request draws a fault, else None (as Twilio's)."""
        draw = self._rng.random()
        if draw < faults.hang:
            return HUNG
        draw -= faults.hang
        if draw < faults.throttle_429:
            return 429
        if draw - faults.throttle_429 < faults.fail_5xx:
            return 500
        return None

    async def _answer(
        self, request: web.Request, faults: Faults, status: int, payload: bytes
    ) -> web.StreamResponse:
        if status == HUNG:
            return await self._hold(request)
        delay_s = self.draw_delay_s(faults)
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        headers = {"Retry-After": str(faults.retry_after_s)} if status == 429 else None
        return web.Response(body=payload, status=status, content_type=_JSON, headers=headers)

    async def _counted(self, handler: _Handler, request: web.Request) -> web.StreamResponse:
        """Run a Vonage or Airtel handler as an open request (they have no cap)."""
        self.in_flight += 1
        if self.in_flight > self.in_flight_peak:
            self.in_flight_peak = self.in_flight
        try:
            return await handler(request)
        finally:
            self.in_flight -= 1

    def _record(
        self, at: float, status: int, to: str, body: str, sid: str | None, segments: int
    ) -> None:
        self.arrivals.append(at)
        self.records.append(Arrival(at, status, to, body, sid, segments=segments))
        self.by_status[status] = self.by_status.get(status, 0) + 1
        if sid is not None:
            self.accepted.append(Accepted(to, body, sid, at, segments))

    def _record_as(
        self,
        provider: str,
        code: str | None,
        at: float,
        status: int,
        to: str,
        body: str,
        sid: str | None,
    ) -> None:
        # As _record, which Twilio's hot path keeps to itself.
        segments = 0
        if sid is not None:
            segments = count_segments(body)
            self.segments.add(at, segments, self.faults.limit_segments)
        self.arrivals.append(at)
        self.records.append(Arrival(at, status, to, body, sid, provider, code, segments))
        self.by_status[status] = self.by_status.get(status, 0) + 1
        if sid is not None:
            self.accepted.append(Accepted(to, body, sid, at, segments))

    async def _hold(self, request: web.Request) -> web.StreamResponse:
        """Keep a request unanswered until its client gives up or the server stops.

        Polls the transport instead of waiting to be cancelled: a runner without
        handler cancellation would otherwise keep every abandoned request forever.
        """
        while not self._stopping:
            transport = request.transport
            if transport is None or transport.is_closing():
                break
            await asyncio.sleep(HANG_POLL_S)
        # Stopping: drop the connection so the client sees a disconnect, not an answer.
        transport = request.transport
        if transport is not None:
            transport.close()
        return web.Response(status=499)  # never reaches anyone

    # -- control endpoints ----------------------------------------------------------

    async def _get_stats(self, request: web.Request) -> web.Response:
        stats = self.stats()
        if request.query.get("summary"):
            # Serialising every record blocks this loop for tens of ms at 10^4+ records, and
            # arrivals held up meanwhile would be stamped as a burst: pollers ask for counts.
            del stats["arrivals"], stats["accepted"]
        return _json_response(stats)

    async def _get_control(self, request: web.Request) -> web.Response:
        return _json_response(self.faults.to_json())

    async def _post_control(self, request: web.Request) -> web.Response:
        try:
            changes = orjson.loads(await request.read())
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object")
            faults = self.configure(changes)
        except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
            return _json_response({"error": str(exc)}, status=400)
        return _json_response(faults.to_json())

    async def _post_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.Response(status=204)

    async def _on_startup(self, app: web.Application) -> None:
        self._stopping = False

    async def _on_shutdown(self, app: web.Application) -> None:
        # Release held requests so shutdown does not wait out its timeout.
        self._stopping = True


# Existing users know the fake by its first shape.
FakeTwilio = FakeProvider


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(login, password) of a Basic Authorization header in any spelling, else None.

    Parsed by hand: aiohttp 3.14 deprecates BasicAuth.
    """
    scheme, _, encoded = (header or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    login, _, password = decoded.partition(":")
    return login, password


def _json_response(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type=_JSON)


def max_in_sliding_window(times: Sequence[float], window_s: float = 1.0) -> int:
    """Largest number of `times` that fall in one half-open window [t, t + window_s).

    Two times share a window iff they are less than `window_s` apart, so events exactly
    `window_s` apart count in different windows. `times` need not be sorted.
    """
    if window_s <= 0:
        raise ValueError("window_s must be > 0")
    ordered = sorted(times)  # linear when already sorted, as arrivals are
    best = 0
    start = 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


def segments_in_sliding_window(
    times: Iterable[float],
    segments: Iterable[int],
    *,
    limit: int | None = None,
    window_s: float = 1.0,
) -> tuple[int, int]:
    """(most segments in one half-open window of `window_s`, how many arrivals closed a
    window holding more than `limit`): `max_in_sliding_window` weighted by each arrival's
    segments, computed from records (e.g. `/_stats` accepted) for any limit afterwards.
    `times` need not be sorted; arrivals at the same time count in the order given."""
    window = SlidingSegments(window_s)
    for stamp, weight in sorted(zip(times, segments, strict=True), key=lambda pair: pair[0]):
        window.add(stamp, weight, limit)
    return window.max, window.over


def fetch_stats(url: str, *, summary: bool = False, ca_file: str | None = None) -> dict[str, Any]:
    """`GET /_stats` of a fake running as its own process at `url` (`summary`: counts only;
    `ca_file`: what an https fake's certificate is trusted by). The fast fake answers the
    same path."""
    query = "?summary=1" if summary else ""
    context = ssl.create_default_context(cafile=ca_file) if url.startswith("https") else None
    # http(s) on loopback, built here: not a user-supplied scheme.
    with urllib.request.urlopen(f"{url}/_stats{query}", timeout=60, context=context) as response:
        stats: dict[str, Any] = orjson.loads(response.read())
    return stats


def wait_taken(url: str, messages: int, timeout_s: float, poll_s: float = 0.5) -> dict[str, Any]:
    """Wait until the fake at `url` has accepted (Twilio 201) `messages`; its summary then."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = fetch_stats(url, summary=True)
        if int(stats["by_status"].get("201", 0)) >= messages:
            return stats
        if time.monotonic() >= deadline:
            raise TimeoutError(f"the fake took fewer than {messages} messages in time: {stats}")
        time.sleep(poll_s)


def twilio_provider_toml(url: str, *, name: str = "twilio", **extra: Any) -> str:
    """An smsgw `[[providers]]` block for a Twilio provider sending to the fake at `url` with
    its default account; `extra` adds settings (values written as TOML, e.g. `rate=5000`)."""
    lines = [
        "[[providers]]",
        f'name = "{name}"',
        'kind = "twilio"',
        f'base_url = "{url}"',
        f'account_sid = "{DEFAULT_ACCOUNT_SID}"',
        f'auth_token = "{DEFAULT_AUTH_TOKEN}"',
        'from = "+15005550006"',
    ]
    return "\n".join(
        lines + [f"{key} = {orjson.dumps(value).decode()}" for key, value in extra.items()]
    )


# -- script mode --------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Faults]:
    parser = argparse.ArgumentParser(
        prog="python -m testkit.fake_provider",
        description="Fake SMS provider: Twilio, Vonage and Airtel IQ shapes.",
    )
    serving.add_listen_args(parser)
    parser.add_argument("--account-sid", default=DEFAULT_ACCOUNT_SID)
    parser.add_argument("--auth-token", default=DEFAULT_AUTH_TOKEN)
    vonage, airtel = VonageAccount(), AirtelAccount()
    parser.add_argument("--vonage-api-key", default=vonage.api_key)
    parser.add_argument("--vonage-api-secret", default=vonage.api_secret)
    parser.add_argument("--airtel-customer-id", default=airtel.customer_id)
    parser.add_argument("--airtel-username", default=airtel.username)
    parser.add_argument("--airtel-password", default=airtel.password)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before answering")
    parser.add_argument(
        "--jitter-ms", type=float, default=0.0, help="each delay is latency ± jitter (clipped at 0)"
    )
    parser.add_argument(
        "--jitter-dist",
        choices=JITTER_DISTRIBUTIONS,
        default="uniform",
        help="uniform in ±jitter, or normal with jitter as standard deviation",
    )
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=None,
        metavar="N",
        help="Twilio's concurrency limit: 429/20429 to a request arriving while N are open",
    )
    parser.add_argument(
        "--limit-segments",
        type=int,
        default=None,
        metavar="N",
        help="count arrivals that close a sliding second over N segments (stats only)",
    )
    parser.add_argument("--fail-5xx", type=float, default=0.0, help="probability of a 500")
    parser.add_argument("--throttle-429", type=float, default=0.0, help="probability of a 429")
    parser.add_argument("--retry-after-s", type=int, default=1, help="Retry-After of a 429")
    parser.add_argument("--hang", type=float, default=0.0, help="probability of no answer")
    parser.add_argument(
        "--reject-number",
        action="append",
        default=[],
        metavar="E164",
        help="refuse this number, E.164 (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the fault draws")
    args = parser.parse_args(argv)
    try:
        faults = Faults(
            latency_ms=args.latency_ms,
            jitter_ms=args.jitter_ms,
            jitter_dist=args.jitter_dist,
            fail_5xx=args.fail_5xx,
            throttle_429=args.throttle_429,
            retry_after_s=args.retry_after_s,
            hang=args.hang,
            reject_numbers=frozenset(args.reject_number),
            max_concurrent=args.max_concurrent,
            limit_segments=args.limit_segments,
        )
    except ValueError as exc:
        parser.error(str(exc))
    return args, faults


def main(argv: Sequence[str] | None = None) -> None:
    args, faults = _parse_args(argv)
    fake = FakeProvider(
        args.account_sid,
        args.auth_token,
        faults=faults,
        seed=args.seed,
        vonage=VonageAccount(args.vonage_api_key, args.vonage_api_secret),
        airtel=AirtelAccount(args.airtel_customer_id, args.airtel_username, args.airtel_password),
    )
    # The fake is a measuring instrument: a cyclic-GC pass over hundreds of thousands of
    # records stalls it for tens of milliseconds and then stamps a backlog of arrivals at
    # once, which would read as a burst we never sent. Records hold no cycles, so reference
    # counting frees everything without the collector.
    gc.disable()
    serving.run(fake.make_app, args)


if __name__ == "__main__":
    main()
