"""The single-table sections of the file: [server], [otp], [redis], [queue], [limiter],
[audit], [dispatch], [breaker], [scaling], [abuse], and the [[clients]] entries."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from smsgw.settings._base import (
    AtLeastOne,
    Fraction,
    NonNegative,
    NonNegativeInt,
    Positive,
    PositiveInt,
    Secret,
    Section,
    check_countries,
    check_template,
    check_url,
    invalid,
)

__all__ = [
    "APP_NAME_PATTERN",
    "DEFAULT_TEMPLATE",
    "AbuseSettings",
    "AuditSettings",
    "Backend",
    "BreakerSettings",
    "ClientSettings",
    "DispatchSettings",
    "IdempotencySettings",
    "LimiterSettings",
    "OtpSettings",
    "QueueSettings",
    "RedisSettings",
    "Role",
    "ScalingSettings",
    "ServerSettings",
]

# "auto": Redis when redis.url is set, memory otherwise — one switch for every part.
Backend = Literal["auto", "memory", "redis"]
Role = Literal["all", "api", "worker"]

DEFAULT_TEMPLATE = "Your {app} code is {code}. It expires in {minutes} minutes."
# The app name goes into the SMS, so it must not be something a phone shows as a link (or a
# number to call): letters, digits, space, '-' and '_'; a '.' only before a space or at the
# end ("Acme Inc.", never "evil.com" or "10.0.0.1"); at most 4 digits in all; no '/', ':',
# '@'. Ends in (?!\n)$ because Python's $ also matches before a final newline.
APP_NAME_PATTERN = (
    r"^(?![^0-9]*(?:[0-9][^0-9]*){5})[A-Za-z0-9](?:[A-Za-z0-9 _-]|\.(?![^ ])){0,31}(?!\n)$"
)


class ServerSettings(Section, frozen=True, kw_only=True):
    _secret_fields = frozenset({"receipt_secret", "receipt_previous_secret"})

    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 8080
    # all: API and dispatcher in one process. api: accept and enqueue only. worker: dispatch
    # only (serves health and metrics). Split roles hand work over through the Redis queue.
    role: Role = "all"
    public_url: str | None = None
    # Bound on a graceful stop: time to send what is queued before giving up.
    drain_timeout_s: NonNegative = 30.0
    # Key of the tags that prove a delivery receipt names a message we sent through that
    # provider; the same on every replica. None: derived from otp.secret (or, without that
    # either, an ephemeral key: receipts of other replicas and earlier runs are refused).
    receipt_secret: Secret | None = None
    # During a rotation, the secret being replaced: receipts of messages tagged under it
    # are still taken (keep it for 3 days, the longest a receipt is taken after its send).
    receipt_previous_secret: Secret | None = None

    def __post_init__(self) -> None:
        if self.receipt_previous_secret is not None and self.receipt_secret is None:
            raise invalid("receipt_previous_secret", "set receipt_secret too (the new one)")
        if self.public_url is not None:
            check_url("public_url", self.public_url)


class OtpSettings(Section, frozen=True, kw_only=True):
    _secret_fields = frozenset({"secret", "previous_secret"})

    # HMAC key for stored codes; None means an ephemeral key (codes die with the process).
    secret: Secret | None = None
    # During a rotation, the secret being replaced: codes made under it still verify.
    previous_secret: Secret | None = None
    length: Annotated[int, Meta(ge=4, le=10)] = 6
    ttl_s: PositiveInt = 600
    max_attempts: PositiveInt = 5
    max_sends: PositiveInt = 5
    send_window_s: PositiveInt = 600
    resend_cooldown_s: NonNegativeInt = 30
    # The {app} of requests that give none; the same rule as a request's app name.
    app_name: str = "smsgw"
    # Where verifications, send counters and idempotency keys live.
    store: Backend = "auto"
    # Keys: "default", "<locale>", "<app>", "<app>:<locale>"; most specific wins.
    templates: dict[str, str] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not re.search(APP_NAME_PATTERN, self.app_name):
            raise invalid("app_name", "letters, digits, ' ', '-', '_': nothing a phone would link")
        for name, template in self.templates.items():
            check_template(f"templates.{name}", template)


# host:port of a Sentinel (a name or an IPv4 address; IPv6 in brackets).
SentinelAddress = Annotated[str, Meta(pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}$")]


class RedisSettings(Section, frozen=True, kw_only=True):
    # redis://:password@host carries a secret
    _secret_fields = frozenset({"url", "sentinel_password"})

    # One Redis. With `sentinels`, the URL's scheme, credentials and database number are
    # used for the primary (its host is whatever the sentinels name); it may then be unset.
    url: str | None = None
    # Every key smsgw writes starts with this, so one Redis can serve several gateways.
    key_prefix: str = "smsgw:"
    # Redis Sentinel: the primary of `sentinel_master` is asked of these, and asked again
    # after every lost connection, so a failover needs no restart.
    sentinels: tuple[SentinelAddress, ...] = ()
    sentinel_master: Annotated[str, Meta(min_length=1)] = "smsgw"
    sentinel_password: str | None = None  # the sentinels' own (requirepass), often env:
    # Replicas that must have a message before its 202: a primary that dies right after a
    # write may not have passed it on. None: 1 with sentinels, 0 otherwise.
    min_replicas_ack: NonNegativeInt | None = None
    # How long a 202 waits for those replicas; then 503 with Retry-After. Below the 5 s
    # socket timeout, so a long wait reads as "not replicated", not as Redis gone.
    replica_ack_timeout_s: Annotated[float, Meta(gt=0, le=4)] = 0.5

    def __post_init__(self) -> None:
        if self.url is not None and not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise invalid("url", "must start with redis://, rediss:// or unix://")
        if self.sentinels and self.url is not None and self.url.startswith("unix://"):
            raise invalid("url", "a Sentinel primary is reached over TCP: redis:// or rediss://")

    @property
    def configured(self) -> bool:
        """Whether Redis is there at all (one server or a Sentinel-watched primary)."""
        return self.url is not None or bool(self.sentinels)

    @property
    def replica_acks(self) -> int:
        if self.min_replicas_ack is not None:
            return self.min_replicas_ack
        return 1 if self.sentinels else 0


class LimiterSettings(Section, frozen=True, kw_only=True):
    backend: Backend = "auto"
    # Send slots leased from Redis per call, and how far ahead they may reach: the two
    # together keep Redis calls far below one per SMS.
    lease_size: PositiveInt = 50
    # How far ahead a lease may reach. A send that holds one of the provider's open-request
    # places (max_in_flight) waits for its slot up to this long, so the place is held that
    # much longer than the request: at 0.05 a cap of 150 at 250 ms reached 94% of its
    # ceiling, at 0.02 96-97% (bench/send_path.py, scenario c), for ~2.5x the lease calls
    # at low rates (at high ones lease_size binds first).
    lookahead_s: Fraction = 0.02
    # Fraction of each provider's rate actually used. The provider counts arrivals: with a
    # spread J of delays between our slots and its clock (s per s), it sees up to
    # pace x rate x (1 + J), so the rest must cover J; 0.985 covers 15 ms a second
    # (measured here: 5-10 ms of our own at p99.9, more at a busy receiver; bench/RESULTS.md,
    # issue 14). At 0.99 a busy single replica put 1002 arrivals into one second at 1000.
    pace: Annotated[float, Meta(ge=0.5, le=1)] = 0.985
    # 0: while Redis is unreachable nothing is sent (fail closed). N > 0: each replica then
    # paces at rate / N on its own — only safe if at most N replicas ever run.
    degraded_replicas: NonNegativeInt = 0


class QueueSettings(Section, frozen=True, kw_only=True):
    _secret_fields = frozenset({"secret", "previous_secret"})

    backend: Backend = "auto"
    max_size: PositiveInt = 100_000
    # Redis queue: a message held this long by a consumer that stopped answering is
    # claimed by another replica.
    visibility_timeout_s: Positive = 30.0
    # Redis queue: messages are sealed (AES-256-GCM) under a key derived from this, the
    # same in every replica; None: derived from otp.secret instead.
    secret: Annotated[str, Meta(min_length=32)] | None = None
    # During a rotation, the secret being replaced (or the otp.secret the key was derived
    # from): messages sealed under it are still delivered. 16 like otp.secret: a former
    # otp.secret is a valid previous queue secret.
    previous_secret: Secret | None = None


class IdempotencySettings(Section, frozen=True, kw_only=True):
    """What Idempotency-Key answers may cost (smsgw/api/idempotency.py explains the policy)."""

    # Bytes of kept answers and claims in flight per client (in memory, or in Redis when the
    # OTP store is there). Over it, the client's own oldest answers are forgotten (before
    # their 24 h); claims in flight alone filling it get 429 for new keys. Size it as
    # keyed requests per second x how late a retry must still be recognised x ~500 bytes.
    client_budget_bytes: int = 8 * 1024 * 1024
    # An answer larger than this (after compression) is not kept: a success's replay is 410
    # `idempotent-answer-not-kept`, a refusal runs again. Above every success the API gives.
    max_answer_bytes: Annotated[int, Meta(ge=1024)] = 64 * 1024

    def __post_init__(self) -> None:
        if self.client_budget_bytes < 4 * self.max_answer_bytes:
            raise invalid("client_budget_bytes", "must be >= 4 x max_answer_bytes")


class AuditSettings(Section, frozen=True, kw_only=True):
    _secret_fields = frozenset({"secret_access_key"})

    backend: Literal["sqlite", "dynamodb"] = "sqlite"
    path: str = "./data/audit.sqlite3"
    table: str = "smsgw-audit"
    # DynamoDB: omit endpoint_url for AWS; credentials then come from the standard AWS chain
    # (environment, profile, instance role). The two keys are for local servers (dynalite).
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    # Events not yet stored wait in memory (at most max_buffer of them) and are written
    # every flush_interval_s, or sooner once batch_size are waiting.
    flush_interval_s: Positive = 0.2
    batch_size: PositiveInt = 500
    max_buffer: PositiveInt = 50_000
    # DynamoDB BatchWriteItem calls in flight at once.
    max_in_flight: PositiveInt = 8
    # Where events go while the database cannot take them, replayed in order later.
    spool_dir: str = "./data/audit-spool"
    # Stored events carry an expiry this many days out (DynamoDB TTL; SQLite sweeps).
    retention_days: PositiveInt = 400

    def __post_init__(self) -> None:
        if self.max_buffer < self.batch_size:
            raise invalid("max_buffer", "must be >= batch_size")
        if self.endpoint_url is not None:
            check_url("endpoint_url", self.endpoint_url)
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise invalid("access_key_id", "give both access_key_id and secret_access_key")


class DispatchSettings(Section, frozen=True, kw_only=True):
    # Messages one replica holds at once (waiting for their provider's rate or in flight).
    # A bound on memory, not the throughput knob: providers' rate limiters pace the sends,
    # and requests open follow from rate x latency (5000/s at 500 ms is 2500 open).
    concurrency: PositiveInt = 5000
    # Share of `concurrency` one provider may hold while another could take the message: a
    # provider that stops answering cannot hold every message of this replica.
    provider_share: Fraction = 0.75
    max_attempts: PositiveInt = 5
    backoff_base_s: Positive = 0.5
    backoff_max_s: float = 30.0
    # A message still unsent this long after it was accepted expires (OTPs sooner: their
    # validity).
    max_age_s: Positive = 86400.0

    def __post_init__(self) -> None:
        # Not NaN either: no comparison with NaN is true.
        if not self.backoff_max_s >= self.backoff_base_s:
            raise invalid("backoff_base_s", "must be > 0 and <= backoff_max_s")


class BreakerSettings(Section, frozen=True, kw_only=True):
    """A circuit breaker per provider (in each replica): opened, it gets no traffic."""

    # Opens after this many failed sends in a row ...
    failure_threshold: AtLeastOne = 10
    # ... or when more than this share of sends failed within window_s, once min_calls
    # were made there (GOV.UK Notify's habit: more than 50 errors in 60 s).
    error_rate: Fraction = 0.5
    window_s: Positive = 60.0
    min_calls: AtLeastOne = 50
    # Closed to traffic this long, then one probe message decides.
    cooldown_s: NonNegative = 30.0


class AbuseSettings(Section, frozen=True, kw_only=True):
    """Protections of the OTP endpoint against SMS pumping (toll fraud) and brute force."""

    # Destination countries (ISO codes) clients may send to unless a client lists its own;
    # empty: every country a provider serves.
    countries: tuple[str, ...] = ()
    # OTP codes one number may receive in 24 h (AWS's default), beside otp.max_sends.
    daily_sends_per_number: AtLeastOne = 10
    # Wrong codes for one number, across all its verifications, before its checks are
    # refused; the lock ends at most failed_check_window_s after the last counted failure.
    failed_checks_per_number: AtLeastOne = 10
    failed_check_window_s: Positive = 3600.0
    # SMS pumping: OTP starts are counted per destination prefix (the first prefix_digits
    # digits of the E.164 number) and per country over pumping_window_s. Beyond the floor
    # (prefix_floor / country_floor) and beyond spike_factor x the same window's average of
    # the previous day, further starts there are refused (429 suspected-pumping).
    prefix_digits: Annotated[int, Meta(ge=3, le=12)] = 7
    pumping_window_s: Positive = 600.0
    prefix_floor: AtLeastOne = 30
    country_floor: AtLeastOne = 600
    spike_factor: Annotated[float, Meta(gt=1)] = 10.0
    # Prefixes (digits after '+') an operator vouches for: exempt from the pumping guard.
    allowed_prefixes: tuple[str, ...] = ()
    # A number that completed a verification this recently is never refused as suspected
    # pumping (its starts still count), so its owner gets codes while its range is attacked.
    # 0: no such exemption.
    verified_exempt_s: NonNegative = 30 * 86400.0

    def __post_init__(self) -> None:
        check_countries("countries", self.countries)
        for prefix in self.allowed_prefixes:
            if not re.fullmatch(r"[0-9]{1,15}", prefix):
                raise invalid("allowed_prefixes", f"{prefix!r}: digits only, without '+'")


class ScalingSettings(Section, frozen=True, kw_only=True):
    """How many queue workers a backlog needs (smsgw/scaling.py explains it):
    followed by `smsgw supervise`, published as smsgw_desired_workers."""

    min_workers: NonNegativeInt = 1
    max_workers: AtLeastOne = 4
    backlog_per_worker: PositiveInt = 5000
    worker_rate: Positive = 2000.0
    drain_s: Positive = 30.0
    max_age_s: Positive = 30.0
    up_cooldown_s: NonNegative = 15.0
    down_cooldown_s: NonNegative = 120.0

    def __post_init__(self) -> None:
        if self.min_workers > self.max_workers:
            raise invalid("min_workers", "must be between 0 and max_workers")


class ClientSettings(Section, frozen=True, kw_only=True):
    _secret_fields = frozenset({"key", "previous_key"})

    name: str
    # Either the key itself (normally as "env:NAME") or the hex SHA-256 of it.
    key: Secret | None = None
    key_sha256: str | None = None
    # During a rotation, the key being replaced, still valid (same two forms).
    previous_key: Secret | None = None
    previous_key_sha256: str | None = None
    # API request quotas for this client (None: no quota); 429 + Retry-After beyond.
    requests_per_second: PositiveInt | None = None
    requests_per_minute: PositiveInt | None = None
    # Destination countries (ISO codes) this client may send to; None: abuse.countries.
    countries: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.previous_key is not None and self.previous_key_sha256 is not None:
            raise invalid("previous_key", "give at most one of previous_key, previous_key_sha256")
        if self.previous_key_sha256 is not None and not re.fullmatch(
            r"[0-9a-f]{64}", self.previous_key_sha256
        ):
            raise invalid("previous_key_sha256", "must be 64 lowercase hex digits")
        if self.countries is not None:
            check_countries("countries", self.countries)
        if (self.key is None) == (self.key_sha256 is None):
            raise invalid("key", "give exactly one of key and key_sha256")
        if self.key_sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.key_sha256):
            raise invalid("key_sha256", "must be 64 lowercase hex digits")
