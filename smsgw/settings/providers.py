"""Provider entries ([[providers]]): the fields every kind shares, and the built-in kinds.

Each kind is a tagged subclass of ProviderSettings (`kind = "twilio"` picks
TwilioProviderSettings). Subclasses register themselves, so a provider kind defined in
another module is accepted by the loader like the built-in ones, once that module is imported.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec
import phonenumbers

from smsgw.settings._base import Positive, PositiveInt, Section, check_present, check_url, invalid

__all__ = [
    "AirtelMessageType",
    "AirtelProviderSettings",
    "ConsoleProviderSettings",
    "ProviderSettings",
    "RateUnit",
    "TwilioProviderSettings",
    "VonageProviderSettings",
    "VonageSignatureMethod",
    "provider_kinds",
]

RateUnit = Literal["segments", "requests"]

# Every subclass of ProviderSettings, in the order defined (see provider_kinds()).
_SUBCLASSES: list[type[ProviderSettings]] = []


class ProviderSettings(Section, frozen=True, kw_only=True, tag_field="kind"):
    """What every [[providers]] entry has. A kind is a subclass with its own tag:

    class CarrierSettings(ProviderSettings, frozen=True, kw_only=True, tag="carrier"):
        api_key: str
    """

    name: str
    # SMS per second across all replicas; None = not limited (console, tests).
    rate: Positive | None = None
    weight: Positive = 1.0
    countries: tuple[str, ...] = ("*",)
    # What `rate` counts: "segments" (Twilio's MPS and price count each part of a long
    # message) or "requests" (Vonage: one API request per message, however long).
    rate_unit: RateUnit = "segments"
    # Sends this provider may have open at once across every replica together (Twilio's
    # per-account concurrency limit: 429 / 20429 above it); None = only what the rate and
    # the observed latency need.
    max_in_flight: PositiveInt | None = None
    # The most segments one message may take here (a longer body is refused, 422, at intake
    # when no other provider serving its country takes it); None: whatever fits the API's
    # 1600 characters (Twilio's own limit: up to 11 GSM-7 or 24 UCS-2 segments).
    max_segments: PositiveInt | None = None
    connect_timeout_s: Positive = 2.0
    timeout_s: Positive = 10.0
    # PEM file of CA certificates to verify the provider's TLS certificate; None = the
    # system's store.
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", self.name):
            raise invalid("name", "use 1-32 lowercase letters, digits, '-' or '_'")
        for country in self.countries:
            if country != "*" and country not in phonenumbers.SUPPORTED_REGIONS:
                raise invalid("countries", f"unknown ISO country code {country!r}")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # msgspec sets the subclass's tag only after this returns: provider_kinds() reads it.
        _SUBCLASSES.append(cls)


def provider_kinds() -> dict[str, type[ProviderSettings]]:
    """Every provider kind defined so far, by its `kind` tag. A subclass that keeps its
    parent's tag is a variant of that kind, not a kind of its own."""
    kinds: dict[str, type[ProviderSettings]] = {}
    for cls in _SUBCLASSES:
        tag = cls.__struct_config__.tag
        parent = next(b for b in cls.__mro__[1:] if issubclass(b, ProviderSettings))
        if not isinstance(tag, str) or tag == parent.__struct_config__.tag:
            continue
        if tag in kinds and kinds[tag] is not cls:
            raise TypeError(f"two provider kinds named {tag!r}: {kinds[tag]} and {cls}")
        kinds[tag] = cls
    return kinds


class TwilioProviderSettings(ProviderSettings, frozen=True, kw_only=True, tag="twilio"):
    _secret_fields = frozenset({"auth_token"})

    account_sid: str
    auth_token: str
    from_: str | None = msgspec.field(default=None, name="from")
    messaging_service_sid: str | None = None
    base_url: str = "https://api.twilio.com"

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.from_ is None) == (self.messaging_service_sid is None):
            raise invalid("from", "give exactly one of from and messaging_service_sid")
        check_url("base_url", self.base_url)


class ConsoleProviderSettings(ProviderSettings, frozen=True, kw_only=True, tag="console"):
    # Append one JSON line per SMS here; None = stdout.
    path: str | None = None
    # The console stands in for phones (codes in clear). Beside a real provider it is routed
    # like one: a share of live traffic and every failover would land in its file. Refused
    # at start-up unless this is set (a demo or test that wants exactly that).
    allow_beside_real: bool = False


VonageSignatureMethod = Literal["md5hash", "md5", "sha1", "sha256", "sha512"]


class VonageProviderSettings(ProviderSettings, frozen=True, kw_only=True, tag="vonage"):
    _secret_fields = frozenset({"api_secret", "signature_secret"})

    api_key: str
    api_secret: str
    # A number (E.164, with or without '+') or an alphanumeric sender id.
    from_: str = msgspec.field(name="from")
    base_url: str = "https://rest.nexmo.com"
    # Vonage's 30/s per API key counts requests; it splits long texts itself.
    rate_unit: RateUnit = "requests"
    # Signed webhooks (enabled on the Vonage account): receipts must then carry a valid
    # `sig` and a recent `timestamp`. The method is the one chosen in Vonage's dashboard:
    # "md5hash" (its default) or an HMAC ("md5", "sha1", "sha256", "sha512").
    signature_secret: str | None = None
    signature_method: VonageSignatureMethod = "md5hash"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_present("api_key", self.api_key)
        check_present("api_secret", self.api_secret)
        if self.signature_secret is not None:
            check_present("signature_secret", self.signature_secret)
        if not re.fullmatch(r"\+?[0-9]{1,15}|[A-Za-z0-9 ]{1,11}", self.from_):
            raise invalid("from", "use a number of up to 15 digits or up to 11 letters/digits")
        check_url("base_url", self.base_url)


AirtelMessageType = Literal["SERVICE_IMPLICIT", "SERVICE_EXPLICIT", "TRANSACTIONAL", "PROMOTIONAL"]


class AirtelProviderSettings(ProviderSettings, frozen=True, kw_only=True, tag="airtel"):
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
            raise invalid("countries", 'Airtel IQ serves India only: use ["IN"]')
        for key in ("customer_id", "username", "password"):
            check_present(key, getattr(self, key))
        if not re.fullmatch(r"[A-Za-z0-9]{1,11}", self.source_address):
            raise invalid("source_address", "use the registered DLT header (letters/digits)")
        for key in ("dlt_entity_id", "dlt_template_id"):
            if not re.fullmatch(r"[0-9]{1,30}", getattr(self, key)):
                raise invalid(key, "must be the numeric id registered on the DLT platform")
        check_url("base_url", self.base_url)
