"""Settings: frozen, typed, validated once at start-up and passed explicitly.

The shape mirrors the TOML file of ARCHITECTURE.md. msgspec does the type checking, so a wrong
type or an unknown key fails with the key's path instead of surfacing later as a mysterious
error deep in the code. `env:NAME` strings are resolved from the environment before checking,
and `SMSGW_<SECTION>_<KEY>` variables override scalar keys of the single-table sections.
"""

from smsgw.settings.document import Settings
from smsgw.settings.loader import document_type, load_settings, parse_settings
from smsgw.settings.providers import (
    AirtelMessageType,
    AirtelProviderSettings,
    ConsoleProviderSettings,
    ProviderSettings,
    RateUnit,
    TwilioProviderSettings,
    VonageProviderSettings,
    VonageSignatureMethod,
    provider_kinds,
)
from smsgw.settings.schema import config_schema
from smsgw.settings.sections import (
    APP_NAME_PATTERN,
    DEFAULT_TEMPLATE,
    AbuseSettings,
    AuditSettings,
    Backend,
    BreakerSettings,
    ClientSettings,
    DispatchSettings,
    IdempotencySettings,
    LimiterSettings,
    OtpSettings,
    QueueSettings,
    RedisSettings,
    Role,
    ScalingSettings,
    ServerSettings,
)

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
    "RateUnit",
    "RedisSettings",
    "Role",
    "ScalingSettings",
    "ServerSettings",
    "Settings",
    "TwilioProviderSettings",
    "VonageProviderSettings",
    "VonageSignatureMethod",
    "config_schema",
    "document_type",
    "load_settings",
    "parse_settings",
    "provider_kinds",
]
