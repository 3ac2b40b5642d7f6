"""Settings: frozen, typed, validated once at start-up and passed explicitly.

The shape mirrors the TOML file of ARCHITECTURE.md. msgspec does the type checking, so a wrong
type or an unknown key fails with the key's path instead of surfacing later as a mysterious
error deep in the code. `env:NAME` strings are resolved from the environment before checking,
and `SMSGW_<SECTION>_<KEY>` variables override scalar keys of the single-table sections.
"""

from __future__ import annotations

import itertools
import os
import re
import string
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import msgspec
import phonenumbers

from smsgw.errors import ConfigError

__all__ = [
    "APP_NAME_PATTERN",
    "DEFAULT_TEMPLATE",
    "AbuseSettings",
    "AirtelMessageType",
    "AirtelProviderSettings",
    "AuditSettings",
    "Backend",
    "BreakerSettings",
    "ClientSettings",
    "ConsoleProviderSettings",
    "DispatchSettings",
    "IdempotencySettings",
    "LimiterSettings",
    "OtpSettings",
    "ProviderSettings",
    "QueueSettings",
    "RedisSettings",
    "Role",
    "ScalingSettings",
    "ServerSettings",
    "Settings",
    "TwilioProviderSettings",
    "VonageProviderSettings",
    "load_settings",
    "parse_settings",
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
TEMPLATE_FIELDS = frozenset({"app", "code", "minutes"})
ENV_PREFIX = "SMSGW_"
SECRET_PREFIX = "env:"  # noqa: S105 - a marker, not a secret


def _invalid(key: str, problem: str) -> ValueError:
    # msgspec reports errors raised in __post_init__ at the struct's path; prefixing the key
    # (in backticks, as msgspec quotes names, since template names may hold ':' or '.') lets
    # _config_error() point at the exact key.
    return ValueError(f"`{key}`: {problem}")


def _check_countries(key: str, countries: tuple[str, ...]) -> None:
    known = phonenumbers.SUPPORTED_REGIONS
    for country in countries:
        if country not in known:
            raise _invalid(key, f"{country!r} is not an ISO country code phonenumbers knows")


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # Fields whose values repr() masks, so logged or printed settings never show a secret.
    _secret_fields: ClassVar[frozenset[str]] = frozenset()

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{f.name}={'***' if f.name in self._secret_fields else repr(getattr(self, f.name))}"
            for f in msgspec.structs.fields(self)
        )
        return f"{type(self).__name__}({fields})"


class ServerSettings(_Section, frozen=True, kw_only=True):
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
            raise _invalid("port", "must be between 0 and 65535")
        for key in ("receipt_secret", "receipt_previous_secret"):
            value = getattr(self, key)
            if value is not None and len(value) < 16:
                raise _invalid(key, "must be at least 16 characters")
        if self.receipt_previous_secret is not None and self.receipt_secret is None:
            raise _invalid("receipt_previous_secret", "set receipt_secret too (the new one)")
        if self.drain_timeout_s < 0:
            raise _invalid("drain_timeout_s", "must be >= 0")
        if self.public_url is not None:
            _check_url("public_url", self.public_url)


class OtpSettings(_Section, frozen=True, kw_only=True):
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
            raise _invalid("length", "must be between 4 and 10")
        for key in ("ttl_s", "max_attempts", "max_sends", "send_window_s"):
            if getattr(self, key) <= 0:
                raise _invalid(key, "must be > 0")
        if self.resend_cooldown_s < 0:
            raise _invalid("resend_cooldown_s", "must be >= 0")
        if self.secret is not None and len(self.secret) < 16:
            raise _invalid("secret", "must be at least 16 characters")
        if self.previous_secret is not None and len(self.previous_secret) < 16:
            raise _invalid("previous_secret", "must be at least 16 characters")
        if not re.search(APP_NAME_PATTERN, self.app_name):
            raise _invalid("app_name", "letters, digits, ' ', '-', '_': nothing a phone would link")
        for name, template in self.templates.items():
            _check_template(f"templates.{name}", template)


class RedisSettings(_Section, frozen=True, kw_only=True):
    _secret_fields = frozenset({"url"})  # redis://:password@host carries a secret

    url: str | None = None
    # Every key smsgw writes starts with this, so one Redis can serve several gateways.
    key_prefix: str = "smsgw:"


class LimiterSettings(_Section, frozen=True, kw_only=True):
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
            raise _invalid("lease_size", "must be > 0")
        if not 0 < self.lookahead_s <= 1:
            raise _invalid("lookahead_s", "must be in (0, 1]")
        if not 0.5 <= self.pace <= 1:
            raise _invalid("pace", "must be between 0.5 and 1")
        if self.degraded_replicas < 0:
            raise _invalid("degraded_replicas", "must be >= 0")


class QueueSettings(_Section, frozen=True, kw_only=True):
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
            raise _invalid("max_size", "must be > 0")
        if self.visibility_timeout_s <= 0:
            raise _invalid("visibility_timeout_s", "must be > 0")
        if self.secret is not None and len(self.secret) < 32:
            raise _invalid("secret", "must be at least 32 characters")
        # 16 like otp.secret: a former otp.secret is a valid previous queue secret.
        if self.previous_secret is not None and len(self.previous_secret) < 16:
            raise _invalid("previous_secret", "must be at least 16 characters")


class IdempotencySettings(_Section, frozen=True, kw_only=True):
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
            raise _invalid("max_answer_bytes", "must be >= 1024")
        if self.client_budget_bytes < 4 * self.max_answer_bytes:
            raise _invalid("client_budget_bytes", "must be >= 4 x max_answer_bytes")


class AuditSettings(_Section, frozen=True, kw_only=True):
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
            raise _invalid("flush_interval_s", "must be > 0")
        for key in ("batch_size", "max_buffer", "max_in_flight", "retention_days"):
            if getattr(self, key) <= 0:
                raise _invalid(key, "must be > 0")
        if self.max_buffer < self.batch_size:
            raise _invalid("max_buffer", "must be >= batch_size")
        if self.endpoint_url is not None:
            _check_url("endpoint_url", self.endpoint_url)
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise _invalid("access_key_id", "give both access_key_id and secret_access_key")


class DispatchSettings(_Section, frozen=True, kw_only=True):
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
            raise _invalid("concurrency", "must be > 0")
        if self.max_attempts <= 0:
            raise _invalid("max_attempts", "must be > 0")
        if not 0 < self.provider_share <= 1:
            raise _invalid("provider_share", "must be in (0, 1]")
        if self.max_age_s <= 0:
            raise _invalid("max_age_s", "must be > 0")
        if self.backoff_base_s <= 0 or self.backoff_max_s < self.backoff_base_s:
            raise _invalid("backoff_base_s", "must be > 0 and <= backoff_max_s")


class BreakerSettings(_Section, frozen=True, kw_only=True):
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
                raise _invalid(key, "must be >= 1")
        if not 0 < self.error_rate <= 1:
            raise _invalid("error_rate", "must be in (0, 1]")
        if self.window_s <= 0:
            raise _invalid("window_s", "must be > 0")
        if self.cooldown_s < 0:
            raise _invalid("cooldown_s", "must be >= 0")


class AbuseSettings(_Section, frozen=True, kw_only=True):
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
        _check_countries("countries", self.countries)
        for key in (
            "daily_sends_per_number",
            "failed_checks_per_number",
            "prefix_floor",
            "country_floor",
        ):
            if getattr(self, key) < 1:
                raise _invalid(key, "must be >= 1")
        if not 3 <= self.prefix_digits <= 12:
            raise _invalid("prefix_digits", "must be between 3 and 12")
        for key in ("failed_check_window_s", "pumping_window_s"):
            if getattr(self, key) <= 0:
                raise _invalid(key, "must be > 0")
        if self.verified_exempt_s < 0:
            raise _invalid("verified_exempt_s", "must be >= 0")
        if self.spike_factor <= 1:
            raise _invalid("spike_factor", "must be > 1")
        for prefix in self.allowed_prefixes:
            if not re.fullmatch(r"[0-9]{1,15}", prefix):
                raise _invalid("allowed_prefixes", f"{prefix!r}: digits only, without '+'")


class ScalingSettings(_Section, frozen=True, kw_only=True):
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
            raise _invalid("max_workers", "must be >= 1")
        if not 0 <= self.min_workers <= self.max_workers:
            raise _invalid("min_workers", "must be between 0 and max_workers")
        for key in ("backlog_per_worker", "worker_rate", "drain_s", "max_age_s"):
            if getattr(self, key) <= 0:
                raise _invalid(key, "must be > 0")
        for key in ("up_cooldown_s", "down_cooldown_s"):
            if getattr(self, key) < 0:
                raise _invalid(key, "must be >= 0")


class ClientSettings(_Section, frozen=True, kw_only=True):
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
            raise _invalid("previous_key", "give at most one of previous_key, previous_key_sha256")
        if self.previous_key is not None and len(self.previous_key) < 16:
            raise _invalid("previous_key", "must be at least 16 characters")
        if self.previous_key_sha256 is not None and not re.fullmatch(
            r"[0-9a-f]{64}", self.previous_key_sha256
        ):
            raise _invalid("previous_key_sha256", "must be 64 lowercase hex digits")
        if self.countries is not None:
            _check_countries("countries", self.countries)
        for quota in ("requests_per_second", "requests_per_minute"):
            value = getattr(self, quota)
            if value is not None and value <= 0:
                raise _invalid(quota, "must be > 0 (omit it for no quota)")
        if (self.key is None) == (self.key_sha256 is None):
            raise _invalid("key", "give exactly one of key and key_sha256")
        if self.key is not None and len(self.key) < 16:
            raise _invalid("key", "must be at least 16 characters")
        if self.key_sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.key_sha256):
            raise _invalid("key_sha256", "must be 64 lowercase hex digits")


class _ProviderBase(_Section, frozen=True, kw_only=True, tag_field="kind"):
    name: str
    # SMS per second across all replicas; None = not limited (console, tests).
    rate: float | None = None
    weight: float = 1.0
    countries: tuple[str, ...] = ("*",)
    connect_timeout_s: float = 2.0
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", self.name):
            raise _invalid("name", "use 1-32 lowercase letters, digits, '-' or '_'")
        if self.rate is not None and self.rate <= 0:
            raise _invalid("rate", "must be > 0 (omit it for no limit)")
        if self.weight <= 0:
            raise _invalid("weight", "must be > 0")
        if self.connect_timeout_s <= 0 or self.timeout_s <= 0:
            raise _invalid("timeout_s", "timeouts must be > 0")
        for country in self.countries:
            if country != "*" and country not in phonenumbers.SUPPORTED_REGIONS:
                raise _invalid("countries", f"unknown ISO country code {country!r}")


class TwilioProviderSettings(_ProviderBase, frozen=True, kw_only=True, tag="twilio"):
    _secret_fields = frozenset({"auth_token"})

    account_sid: str
    auth_token: str
    from_: str | None = msgspec.field(default=None, name="from")
    messaging_service_sid: str | None = None
    base_url: str = "https://api.twilio.com"

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.from_ is None) == (self.messaging_service_sid is None):
            raise _invalid("from", "give exactly one of from and messaging_service_sid")
        _check_url("base_url", self.base_url)


class ConsoleProviderSettings(_ProviderBase, frozen=True, kw_only=True, tag="console"):
    # Append one JSON line per SMS here; None = stdout.
    path: str | None = None
    # The console stands in for phones (codes in clear). Beside a real provider it is routed
    # like one: a share of live traffic and every failover would land in its file. Refused
    # at start-up unless this is set (a demo or test that wants exactly that).
    allow_beside_real: bool = False


VonageSignatureMethod = Literal["md5hash", "md5", "sha1", "sha256", "sha512"]


class VonageProviderSettings(_ProviderBase, frozen=True, kw_only=True, tag="vonage"):
    _secret_fields = frozenset({"api_secret", "signature_secret"})

    api_key: str
    api_secret: str
    # A number (E.164, with or without '+') or an alphanumeric sender id.
    from_: str = msgspec.field(name="from")
    base_url: str = "https://rest.nexmo.com"
    # Signed webhooks (enabled on the Vonage account): receipts must then carry a valid
    # `sig` and a recent `timestamp`. The method is the one chosen in Vonage's dashboard:
    # "md5hash" (its default) or an HMAC ("md5", "sha1", "sha256", "sha512").
    signature_secret: str | None = None
    signature_method: VonageSignatureMethod = "md5hash"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_present("api_key", self.api_key)
        _check_present("api_secret", self.api_secret)
        if self.signature_secret is not None:
            _check_present("signature_secret", self.signature_secret)
        if not re.fullmatch(r"\+?[0-9]{1,15}|[A-Za-z0-9 ]{1,11}", self.from_):
            raise _invalid("from", "use a number of up to 15 digits or up to 11 letters/digits")
        _check_url("base_url", self.base_url)


AirtelMessageType = Literal["SERVICE_IMPLICIT", "SERVICE_EXPLICIT", "TRANSACTIONAL", "PROMOTIONAL"]


class AirtelProviderSettings(_ProviderBase, frozen=True, kw_only=True, tag="airtel"):
    _secret_fields = frozenset({"password"})

    # Airtel IQ sends to Indian numbers only, so that is also the default route.
    countries: tuple[str, ...] = ("IN",)
    customer_id: str
    username: str
    password: str
    # The DLT header (sender id) registered with the operator.
    source_address: str
    dlt_entity_id: str
    # One template per provider entry: the SMS text must match it, so this is the OTP one.
    dlt_template_id: str
    message_type: AirtelMessageType = "SERVICE_IMPLICIT"
    # Sends `"otp": true` with each message when set.
    otp: bool = False
    # No public default: Airtel gives each customer its endpoint.
    base_url: str

    def __post_init__(self) -> None:
        super().__post_init__()
        if set(self.countries) != {"IN"}:
            raise _invalid("countries", 'Airtel IQ serves India only: use ["IN"]')
        for key in ("customer_id", "username", "password"):
            _check_present(key, getattr(self, key))
        if not re.fullmatch(r"[A-Za-z0-9]{1,11}", self.source_address):
            raise _invalid("source_address", "use the registered DLT header (letters/digits)")
        for key in ("dlt_entity_id", "dlt_template_id"):
            if not re.fullmatch(r"[0-9]{1,30}", getattr(self, key)):
                raise _invalid(key, "must be the numeric id registered on the DLT platform")
        _check_url("base_url", self.base_url)


ProviderSettings = (
    TwilioProviderSettings
    | VonageProviderSettings
    | AirtelProviderSettings
    | ConsoleProviderSettings
)


class Settings(_Section, frozen=True, kw_only=True):
    server: ServerSettings = ServerSettings()
    otp: OtpSettings = OtpSettings()
    redis: RedisSettings = RedisSettings()
    queue: QueueSettings = QueueSettings()
    limiter: LimiterSettings = LimiterSettings()
    audit: AuditSettings = AuditSettings()
    dispatch: DispatchSettings = DispatchSettings()
    breaker: BreakerSettings = BreakerSettings()
    scaling: ScalingSettings = ScalingSettings()
    abuse: AbuseSettings = AbuseSettings()
    idempotency: IdempotencySettings = IdempotencySettings()
    clients: tuple[ClientSettings, ...] = ()
    providers: tuple[ProviderSettings, ...] = ()

    def __post_init__(self) -> None:
        for kind, names in (
            ("clients", [c.name for c in self.clients]),
            ("providers", [p.name for p in self.providers]),
        ):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise _invalid(kind, f"duplicate name {duplicates[0]!r}")
        _check_console_alone(self.providers)
        for part, backend in (
            ("queue.backend", self.queue.backend),
            ("limiter.backend", self.limiter.backend),
            ("otp.store", self.otp.store),
        ):
            if backend == "redis" and self.redis.url is None:
                raise _invalid(part, "'redis' needs redis.url")
        if (
            self.uses_redis(self.queue.backend)
            and self.queue.secret is None
            and self.otp.secret is None
        ):
            # A key made up at start-up would die with the process: what it sealed would be
            # unreadable after a restart and to every other replica, i.e. lost messages.
            raise _invalid(
                "queue.secret",
                "the Redis queue seals messages under a key every replica must share: "
                "set queue.secret (or otp.secret, which it is then derived from)",
            )
        if self.server.role != "all" and not self.uses_redis(self.queue.backend):
            raise _invalid(
                "server.role",
                f"role {self.server.role!r} hands messages over through the Redis queue: "
                "set redis.url (and leave queue.backend auto or redis)",
            )

    def uses_redis(self, backend: Backend) -> bool:
        """Whether a part configured with `backend` lives in Redis."""
        return backend == "redis" or (backend == "auto" and self.redis.url is not None)

    @property
    def active_providers(self) -> tuple[ProviderSettings, ...]:
        """The configured providers, or the console provider when none is configured."""
        return self.providers or (ConsoleProviderSettings(name="console"),)


def _check_console_alone(providers: tuple[ProviderSettings, ...]) -> None:
    real = [p.name for p in providers if not isinstance(p, ConsoleProviderSettings)]
    if not real:
        return
    for index, entry in enumerate(providers):
        if isinstance(entry, ConsoleProviderSettings) and not entry.allow_beside_real:
            raise _invalid(
                f"providers[{index}].allow_beside_real",
                f"the console provider {entry.name!r} beside {real[0]!r} would get a share of "
                "live traffic and every failover, and write those SMS (codes in clear) to "
                "its file: remove it, or set allow_beside_real = true on it",
            )


def _check_present(key: str, value: str) -> None:
    # msgspec catches a missing key; an empty or blank one would only fail at the first send.
    if not value.strip():
        raise _invalid(key, "must not be empty")


def _check_url(key: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _invalid(key, f"not an http(s) URL: {url!r}")


def _check_template(key: str, template: str) -> None:
    if any(ord(char) < 0x20 and char != "\n" for char in template):
        # Nothing an SMS needs, and NUL would collide with the marker render() uses.
        raise _invalid(key, "control characters other than a line break are not allowed")
    try:
        parsed = [p for p in string.Formatter().parse(template) if p[1] is not None]
    except ValueError as exc:
        raise _invalid(key, f"bad template: {exc}") from exc
    if any(spec or conversion for _, _, spec, conversion in parsed):
        raise _invalid(key, "placeholders take no format spec or conversion")
    names = [name for _, name, _, _ in parsed if name is not None]
    if names.count("code") != 1:
        # Exactly once: the audit masks the code by its position in the body.
        raise _invalid(key, "template must contain {code} exactly once")
    unknown = sorted({name for name in names if name not in TEMPLATE_FIELDS})
    if unknown:
        raise _invalid(key, f"unknown placeholder {{{unknown[0]}}}")
    # The app name comes from the client's request: next to "://", "x." or "@" in the
    # template it would become a link even though the name itself is plain.
    pieces = template.split("{app}")
    for before, after in itertools.pairwise(pieces):
        if _LINK_BEFORE_APP.search(before) or _LINK_AFTER_APP.match(after):
            raise _invalid(key, "{app} must not touch '.', '/', ':' or '@' that would make a link")


_LINK_BEFORE_APP = re.compile(r"[./:@]\Z")
_LINK_AFTER_APP = re.compile(r"[./:@][A-Za-z0-9/]")


_SCALAR_SECTIONS: Mapping[str, type[_Section]] = {
    "server": ServerSettings,
    "otp": OtpSettings,
    "redis": RedisSettings,
    "queue": QueueSettings,
    "limiter": LimiterSettings,
    "audit": AuditSettings,
    "dispatch": DispatchSettings,
    "idempotency": IdempotencySettings,
}


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file (None: embedded defaults), apply environment overrides, validate.

    Raises ConfigError naming the offending key.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as file:
                raw = tomllib.load(file)
        except OSError as exc:
            raise ConfigError(str(path), f"cannot read: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), f"not valid TOML: {exc}") from exc
    return parse_settings(raw, env)


def parse_settings(raw: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Settings:
    """Validate an already parsed TOML document (a plain mapping) with environment overrides."""
    env = os.environ if env is None else env
    # A shallow copy per section: overrides must not write into the caller's mapping.
    document = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
    _apply_env_overrides(document, env)
    resolved = _resolve_secrets(document, env, "")
    try:
        return msgspec.convert(resolved, Settings)
    except msgspec.ValidationError as exc:
        raise _config_error(str(exc)) from exc


# Kubernetes service links: a Service named e.g. "smsgw-redis" puts SMSGW_REDIS_SERVICE_HOST,
# SMSGW_REDIS_SERVICE_PORT_* and SMSGW_REDIS_PORT_6379_TCP_* into every pod's environment.
# They are not settings; an unknown key would otherwise stop the start.
_SERVICE_LINK = re.compile(r"_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT_\d+_(TCP|UDP|SCTP)(_\w+)?)$")


def _apply_env_overrides(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == "SMSGW_CONFIG":
            continue
        if _SERVICE_LINK.search(name):
            continue
        section_name, _, key = name[len(ENV_PREFIX) :].lower().partition("_")
        section = _SCALAR_SECTIONS.get(section_name)
        if section is None:
            continue  # SMSGW_-prefixed variables of other purposes (e.g. secrets) pass through
        field = next((f for f in msgspec.structs.fields(section) if f.encode_name == key), None)
        if field is None or field.name == "templates":
            raise ConfigError(name, f"no setting {section_name}.{key} to override")
        try:
            converted = msgspec.convert(value, field.type, strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(name, str(exc).split(" - at ")[0]) from exc
        table = raw.setdefault(section_name, {})
        if not isinstance(table, dict):
            raise ConfigError(section_name, "must be a table")
        table[key] = converted


def _resolve_secrets(value: Any, env: Mapping[str, str], key: str) -> Any:
    if isinstance(value, str) and value.startswith(SECRET_PREFIX):
        variable = value[len(SECRET_PREFIX) :]
        if variable not in env or env[variable] == "":
            raise ConfigError(key, f"environment variable {variable} is not set")
        return env[variable]
    if isinstance(value, dict):
        return {k: _resolve_secrets(v, env, f"{key}.{k}" if key else k) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_secrets(v, env, f"{key}[{i}]") for i, v in enumerate(value)]
    return value


_LOCATION = re.compile(r"^(?P<message>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
_FIELD_IN_MESSAGE = re.compile(r"field `(?P<field>[^`]+)`")
_FIELD_PREFIX = re.compile(r"^`(?P<field>[^`]+)`: (?P<message>.*)$", re.DOTALL)


def _config_error(text: str) -> ConfigError:
    """Turn msgspec's "problem - at `$.a[0].b`" into ConfigError("a[0].b.field", problem)."""
    match = _LOCATION.match(text)
    message, path = (match["message"], match["path"]) if match else (text, "")
    prefixed = _FIELD_PREFIX.match(message)
    if prefixed:
        path, message = f"{path}.{prefixed['field']}", prefixed["message"]
    elif named := _FIELD_IN_MESSAGE.search(message):
        path = f"{path}.{named['field']}"
    return ConfigError(path.lstrip(".") or "(root)", message)
