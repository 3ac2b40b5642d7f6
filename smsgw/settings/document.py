"""The whole configuration document, with the checks that span sections."""

from __future__ import annotations

from smsgw.settings._base import Section, invalid
from smsgw.settings.providers import ConsoleProviderSettings, ProviderSettings
from smsgw.settings.sections import (
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
    ScalingSettings,
    ServerSettings,
)

__all__ = ["Settings"]


class Settings(Section, frozen=True, kw_only=True):
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
                raise invalid(kind, f"duplicate name {duplicates[0]!r}")
        _check_console_alone(self.providers)
        for part, backend in (
            ("queue.backend", self.queue.backend),
            ("limiter.backend", self.limiter.backend),
            ("otp.store", self.otp.store),
        ):
            if backend == "redis" and not self.redis.configured:
                raise invalid(part, "'redis' needs redis.url or redis.sentinels")
        if (
            self.uses_redis(self.queue.backend)
            and self.queue.secret is None
            and self.otp.secret is None
        ):
            # A key made up at start-up would die with the process: what it sealed would be
            # unreadable after a restart and to every other replica, i.e. lost messages.
            raise invalid(
                "queue.secret",
                "the Redis queue seals messages under a key every replica must share: "
                "set queue.secret (or otp.secret, which it is then derived from)",
            )
        if self.server.role != "all" and not self.uses_redis(self.queue.backend):
            raise invalid(
                "server.role",
                f"role {self.server.role!r} hands messages over through the Redis queue: "
                "set redis.url (and leave queue.backend auto or redis)",
            )

    def uses_redis(self, backend: Backend) -> bool:
        """Whether a part configured with `backend` lives in Redis."""
        return backend == "redis" or (backend == "auto" and self.redis.configured)

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
            raise invalid(
                f"providers[{index}].allow_beside_real",
                f"the console provider {entry.name!r} beside {real[0]!r} would get a share of "
                "live traffic and every failover, and write those SMS (codes in clear) to "
                "its file: remove it, or set allow_beside_real = true on it",
            )
