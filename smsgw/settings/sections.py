"""The single-table sections of the file: [server], [otp], [redis], [queue], [limiter],
[audit], [dispatch], [breaker], [scaling], [abuse], and the [[clients]] entries."""

from __future__ import annotations

import re
from typing import Literal

import msgspec

from smsgw.settings._base import Section, check_countries, check_template, check_url, invalid

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
    port: int = 8080
    # all: API and dispatcher in one process. api: accept and enqueue only. worker: dispatch
    # only (serves health and metrics). Split roles hand work over through the Redis queue.
    role: Role = "all"
    public_url: str | None = None
    # Bound on a graceful stop: time to send what is queued before giving up.
    drain_timeout_s: float = 30.0
    # Key of the tags that prove a delivery receipt names a message we sent through that
    # provider; the same on every replica. None: derived from otp.secret (or, without that
    # either, an ephemeral key: receipts of other replicas and earlier runs are refused).
    receipt_secret: str | None = None
    # During a rotation, the secret being replaced: receipts of messages tagged under it
    # are still taken (keep it for 3 days, the longest a receipt is taken after its send).
    receipt_previous_secret: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise invalid("port", "must be between 0 and 65535")
        for key in ("receipt_secret", "receipt_previous_secret"):
            value = getattr(self, key)
            if value is not None and len(value) < 16:
                raise invalid(key, "must be at least 16 characters")
        if self.receipt_previous_secret is not None and self.receipt_secret is None:
            raise invalid("receipt_previous_secret", "set receipt_secret too (the new one)")
        if self.drain_timeout_s < 0:
            raise invalid("drain_timeout_s", "must be >= 0")
        if self.public_url is not None:
            check_url("public_url", self.public_url)


class OtpSettings(Section, frozen=True, kw_only=True):
    _secret_fields = frozenset({"secret", "previous_secret"})

    # HMAC key for stored codes; None means an ephemeral key (codes die with the process).
    secret: str | None = None
    # During a rotation, the secret being replaced: codes made under it still verify.
    previous_secret: str | None = None
    length: int = 6
    ttl_s: int = 600
    max_attempts: int = 5
    max_sends: int = 5
    send_window_s: int = 600
    resend_cooldown_s: int = 30
    # The {app} of requests that give none; the same rule as a request's app name.
    app_name: str = "smsgw"
    # Where verifications, send counters and idempotency keys live.
    store: Backend = "auto"
    # Keys: "default", "<locale>", "<app>", "<app>:<locale>"; most specific wins.
    templates: dict[str, str] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 4 <= self.length <= 10:
            raise invalid("length", "must be between 4 and 10")
        for key in ("ttl_s", "max_attempts", "max_sends", "send_window_s"):
            if getattr(self, key) <= 0:
                raise invalid(key, "must be > 0")
        if self.resend_cooldown_s < 0:
            raise invalid("resend_cooldown_s", "must be >= 0")
        if self.secret is not None and len(self.secret) < 16:
            raise invalid("secret", "must be at least 16 characters")
        if self.previous_secret is not None and len(self.previous_secret) < 16:
            raise invalid("previous_secret", "must be at least 16 characters")
        if not re.search(APP_NAME_PATTERN, self.app_name):
            raise invalid("app_name", "letters, digits, ' ', '-', '_': nothing a phone would link")
        for name, template in self.templates.items():
            check_template(f"templates.{name}", template)


class RedisSettings(Section, frozen=True, kw_only=True):
    _secret_fields = frozenset({"url"})  # redis://:password@host carries a secret

    url: str | None = None
    # Every key smsgw writes starts with this, so one Redis can serve several gateways.
    key_prefix: str = "smsgw:"


class LimiterSettings(Section, frozen=True, kw_only=True):
    backend: Backend = "auto"
    # Send slots leased from Redis per call, and how far ahead they may reach: the two
    # together keep Redis calls far below one per SMS.
    lease_size: int = 50
    lookahead_s: float = 0.05
    # Fraction of each provider's rate actually used, leaving room for network jitter.
    pace: float = 0.99
    # 0: while Redis is unreachable nothing is sent (fail closed). N > 0: each replica then
    # paces at rate / N on its own — only safe if at most N replicas ever run.
    degraded_replicas: int = 0

    def __post_init__(self) -> None:
        if self.lease_size <= 0:
            raise invalid("lease_size", "must be > 0")
        if not 0 < self.lookahead_s <= 1:
            raise invalid("lookahead_s", "must be in (0, 1]")
        if not 0.5 <= self.pace <= 1:
            raise invalid("pace", "must be between 0.5 and 1")
        if self.degraded_replicas < 0:
            raise invalid("degraded_replicas", "must be >= 0")


class QueueSettings(Section, frozen=True, kw_only=True):
    _secret_fields = frozenset({"secret", "previous_secret"})

    backend: Backend = "auto"
    max_size: int = 100_000
    # Redis queue: a message held this long by a consumer that stopped answering is
    # claimed by another replica.
    visibility_timeout_s: float = 30.0
    # Redis queue: messages are sealed (AES-256-GCM) under a key derived from this, the
    # same in every replica; None: derived from otp.secret instead.
    secret: str | None = None
    # During a rotation, the secret being replaced (or the otp.secret the key was derived
    # from): messages sealed under it are still delivered.
    previous_secret: str | None = None

    def __post_init__(self) -> None:
        if self.max_size <= 0:
            raise invalid("max_size", "must be > 0")
        if self.visibility_timeout_s <= 0:
            raise invalid("visibility_timeout_s", "must be > 0")
        if self.secret is not None and len(self.secret) < 32:
            raise invalid("secret", "must be at least 32 characters")
        # 16 like otp.secret: a former otp.secret is a valid previous queue secret.
        if self.previous_secret is not None and len(self.previous_secret) < 16:
            raise invalid("previous_secret", "must be at least 16 characters")


class IdempotencySettings(Section, frozen=True, kw_only=True):
    """What Idempotency-Key answers may cost (smsgw/api/idempotency.py explains the policy)."""

    # Bytes of kept answers and claims in flight per client (in memory, or in Redis when the
    # OTP store is there). Over it, the client's own oldest answers are forgotten (before
    # their 24 h); claims in flight alone filling it get 429 for new keys. Size it as
    # keyed requests per second x how late a retry must still be recognised x ~500 bytes.
    client_budget_bytes: int = 8 * 1024 * 1024
    # An answer larger than this (after compression) is not kept: a success's replay is 410
    # `idempotent-answer-not-kept`, a refusal runs again. Above every success the API gives.
    max_answer_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        if self.max_answer_bytes < 1024:
            raise invalid("max_answer_bytes", "must be >= 1024")
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
    flush_interval_s: float = 0.2
    batch_size: int = 500
    max_buffer: int = 50_000
    # DynamoDB BatchWriteItem calls in flight at once.
    max_in_flight: int = 8
    # Where events go while the database cannot take them, replayed in order later.
    spool_dir: str = "./data/audit-spool"
    # Stored events carry an expiry this many days out (DynamoDB TTL; SQLite sweeps).
    retention_days: int = 400

    def __post_init__(self) -> None:
        if self.flush_interval_s <= 0:
            raise invalid("flush_interval_s", "must be > 0")
        for key in ("batch_size", "max_buffer", "max_in_flight", "retention_days"):
            if getattr(self, key) <= 0:
                raise invalid(key, "must be > 0")
        if self.max_buffer < self.batch_size:
            raise invalid("max_buffer", "must be >= batch_size")
        if self.endpoint_url is not None:
            check_url("endpoint_url", self.endpoint_url)
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise invalid("access_key_id", "give both access_key_id and secret_access_key")


class DispatchSettings(Section, frozen=True, kw_only=True):
    # Sends in flight at once; each waits on the network, so this is far above the core count.
    concurrency: int = 128
    # Share of `concurrency` one provider may hold while another could take the message: a
    # provider that stops answering cannot starve the others of workers.
    provider_share: float = 0.75
    max_attempts: int = 5
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    # A message still unsent this long after it was accepted expires (OTPs sooner: their
    # validity).
    max_age_s: float = 86400.0

    def __post_init__(self) -> None:
        if self.concurrency <= 0:
            raise invalid("concurrency", "must be > 0")
        if self.max_attempts <= 0:
            raise invalid("max_attempts", "must be > 0")
        if not 0 < self.provider_share <= 1:
            raise invalid("provider_share", "must be in (0, 1]")
        if self.max_age_s <= 0:
            raise invalid("max_age_s", "must be > 0")
        if self.backoff_base_s <= 0 or self.backoff_max_s < self.backoff_base_s:
            raise invalid("backoff_base_s", "must be > 0 and <= backoff_max_s")


class BreakerSettings(Section, frozen=True, kw_only=True):
    """A circuit breaker per provider (in each replica): opened, it gets no traffic."""

    # Opens after this many failed sends in a row ...
    failure_threshold: int = 10
    # ... or when more than this share of sends failed within window_s, once min_calls
    # were made there (GOV.UK Notify's habit: more than 50 errors in 60 s).
    error_rate: float = 0.5
    window_s: float = 60.0
    min_calls: int = 50
    # Closed to traffic this long, then one probe message decides.
    cooldown_s: float = 30.0

    def __post_init__(self) -> None:
        for key in ("failure_threshold", "min_calls"):
            if getattr(self, key) < 1:
                raise invalid(key, "must be >= 1")
        if not 0 < self.error_rate <= 1:
            raise invalid("error_rate", "must be in (0, 1]")
        if self.window_s <= 0:
            raise invalid("window_s", "must be > 0")
        if self.cooldown_s < 0:
            raise invalid("cooldown_s", "must be >= 0")


class AbuseSettings(Section, frozen=True, kw_only=True):
    """Protections of the OTP endpoint against SMS pumping (toll fraud) and brute force."""

    # Destination countries (ISO codes) clients may send to unless a client lists its own;
    # empty: every country a provider serves.
    countries: tuple[str, ...] = ()
    # OTP codes one number may receive in 24 h (AWS's default), beside otp.max_sends.
    daily_sends_per_number: int = 10
    # Wrong codes for one number, across all its verifications, before its checks are
    # refused; the lock ends at most failed_check_window_s after the last counted failure.
    failed_checks_per_number: int = 10
    failed_check_window_s: float = 3600.0
    # SMS pumping: OTP starts are counted per destination prefix (the first prefix_digits
    # digits of the E.164 number) and per country over pumping_window_s. Beyond the floor
    # (prefix_floor / country_floor) and beyond spike_factor x the same window's average of
    # the previous day, further starts there are refused (429 suspected-pumping).
    prefix_digits: int = 7
    pumping_window_s: float = 600.0
    prefix_floor: int = 30
    country_floor: int = 600
    spike_factor: float = 10.0
    # Prefixes (digits after '+') an operator vouches for: exempt from the pumping guard.
    allowed_prefixes: tuple[str, ...] = ()
    # A number that completed a verification this recently is never refused as suspected
    # pumping (its starts still count), so its owner gets codes while its range is attacked.
    # 0: no such exemption.
    verified_exempt_s: float = 30 * 86400.0

    def __post_init__(self) -> None:
        check_countries("countries", self.countries)
        for key in (
            "daily_sends_per_number",
            "failed_checks_per_number",
            "prefix_floor",
            "country_floor",
        ):
            if getattr(self, key) < 1:
                raise invalid(key, "must be >= 1")
        if not 3 <= self.prefix_digits <= 12:
            raise invalid("prefix_digits", "must be between 3 and 12")
        for key in ("failed_check_window_s", "pumping_window_s"):
            if getattr(self, key) <= 0:
                raise invalid(key, "must be > 0")
        if self.verified_exempt_s < 0:
            raise invalid("verified_exempt_s", "must be >= 0")
        if self.spike_factor <= 1:
            raise invalid("spike_factor", "must be > 1")
        for prefix in self.allowed_prefixes:
            if not re.fullmatch(r"[0-9]{1,15}", prefix):
                raise invalid("allowed_prefixes", f"{prefix!r}: digits only, without '+'")


class ScalingSettings(Section, frozen=True, kw_only=True):
    """How many queue workers a backlog needs (smsgw/supervise/policy.py explains it):
    followed by `smsgw supervise`, published as smsgw_desired_workers."""

    min_workers: int = 1
    max_workers: int = 4
    backlog_per_worker: int = 5000
    worker_rate: float = 2000.0
    drain_s: float = 30.0
    max_age_s: float = 30.0
    up_cooldown_s: float = 15.0
    down_cooldown_s: float = 120.0

    def __post_init__(self) -> None:
        if self.max_workers < 1:
            raise invalid("max_workers", "must be >= 1")
        if not 0 <= self.min_workers <= self.max_workers:
            raise invalid("min_workers", "must be between 0 and max_workers")
        for key in ("backlog_per_worker", "worker_rate", "drain_s", "max_age_s"):
            if getattr(self, key) <= 0:
                raise invalid(key, "must be > 0")
        for key in ("up_cooldown_s", "down_cooldown_s"):
            if getattr(self, key) < 0:
                raise invalid(key, "must be >= 0")


class ClientSettings(Section, frozen=True, kw_only=True):
    _secret_fields = frozenset({"key", "previous_key"})

    name: str
    # Either the key itself (normally as "env:NAME") or the hex SHA-256 of it.
    key: str | None = None
    key_sha256: str | None = None
    # During a rotation, the key being replaced, still valid (same two forms).
    previous_key: str | None = None
    previous_key_sha256: str | None = None
    # API request quotas for this client (None: no quota); 429 + Retry-After beyond.
    requests_per_second: int | None = None
    requests_per_minute: int | None = None
    # Destination countries (ISO codes) this client may send to; None: abuse.countries.
    countries: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.previous_key is not None and self.previous_key_sha256 is not None:
            raise invalid("previous_key", "give at most one of previous_key, previous_key_sha256")
        if self.previous_key is not None and len(self.previous_key) < 16:
            raise invalid("previous_key", "must be at least 16 characters")
        if self.previous_key_sha256 is not None and not re.fullmatch(
            r"[0-9a-f]{64}", self.previous_key_sha256
        ):
            raise invalid("previous_key_sha256", "must be 64 lowercase hex digits")
        if self.countries is not None:
            check_countries("countries", self.countries)
        for quota in ("requests_per_second", "requests_per_minute"):
            value = getattr(self, quota)
            if value is not None and value <= 0:
                raise invalid(quota, "must be > 0 (omit it for no quota)")
        if (self.key is None) == (self.key_sha256 is None):
            raise invalid("key", "give exactly one of key and key_sha256")
        if self.key is not None and len(self.key) < 16:
            raise invalid("key", "must be at least 16 characters")
        if self.key_sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.key_sha256):
            raise invalid("key_sha256", "must be 64 lowercase hex digits")
