"""The provider plugin protocol: a base class times and logs around one abstract send, and
receives the provider's delivery receipts when it sends them."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, cast

import structlog

from smsgw.errors import ProviderError
from smsgw.providers.receipt_tags import ReceiptRoute
from smsgw.providers.receipts import Receipt, ReceiptRequest
from smsgw.settings import ProviderSettings

__all__ = [
    "OutgoingSms",
    "Provider",
    "SendHandle",
    "SendReceipt",
    "kind_of",
    "provider_class",
    "providers_by_kind",
]

_log = structlog.get_logger("smsgw.providers")


@dataclass(frozen=True, slots=True)
class OutgoingSms:
    message_id: str
    to: str  # E.164
    body: str
    # Seconds the SMS is still worth delivering (an OTP's remaining life); None = no limit.
    validity_s: int | None = None


@dataclass(frozen=True, slots=True)
class SendReceipt:
    provider: str
    provider_message_id: str
    latency_s: float


class SendHandle:
    """One send made ready (Provider.ready): `launch` starts it with no await before the
    request is on its way, so the rate-limiter slot taken just before is what the provider
    sees; `cancel` gives back what ready() held when the send is not made after all.

    This default, for providers with nothing to prepare (the console, test doubles), starts
    the whole send when the returned awaitable is awaited.
    """

    __slots__ = ("_provider",)

    def __init__(self, provider: Provider) -> None:
        self._provider = provider

    def launch(self, sms: OutgoingSms) -> Awaitable[SendReceipt]:
        return self._provider.send(sms)

    def cancel(self) -> None:
        pass


class Provider(ABC):
    """One SMS provider. Receives its own settings; never reads global config.

    Subclasses implement `_try_send` and raise the errors of smsgw.errors: ThrottledError,
    RetryableProviderError (with `ambiguous` when the request may have been processed) or
    PermanentProviderError. A class that sets `settings_type` is the provider of that
    settings class's kind (the registry below); one that sends receipts to our
    webhook sets `receives_receipts` and implements `parse_receipt`.
    """

    # The entry this provider is built from; declaring it registers the kind.
    settings_type: ClassVar[type[ProviderSettings]]
    # Its sends ask for receipts at our webhook when server.public_url is set.
    receives_receipts: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "settings_type" in cls.__dict__:
            _register(cls)

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def from_settings(cls, settings: ProviderSettings, receipts: ReceiptRoute | None) -> Provider:
        """Build from the entry. `receipts`: our webhook for this provider and the tagger
        proving its receipts are ours (None without server.public_url). Only a provider
        that receives receipts takes them: its constructor is `(settings, receipts)`, any
        other's `(settings)`."""
        # A concrete provider's constructor takes its own settings class.
        make = cast(Any, cls)
        provider: Provider = make(settings, receipts) if cls.receives_receipts else make(settings)
        return provider

    @classmethod
    def receipt_warnings(cls, settings: ProviderSettings) -> list[tuple[str, str]]:
        """(event, detail) to log at start-up where this entry's receipts are less protected
        than they should be; logged only where its receipts are taken."""
        return []

    def takes_receipts(self) -> bool:
        """Whether its webhook is open: it sends receipts there (see from_settings)."""
        return False

    async def parse_receipt(self, request: ReceiptRequest) -> Receipt | None:
        """Check one webhook request and say what it reports (None: nothing to record);
        raises ReceiptRefused. Called only when takes_receipts()."""
        raise NotImplementedError(f"{type(self).__name__} takes no receipts")

    async def start(self) -> None:
        """Open pooled connections or files; called once inside the running loop."""

    async def close(self) -> None:
        """Release what start() opened."""

    async def ready(self) -> SendHandle:
        """Prepare one send (an HTTP provider holds a pooled, connected connection), so
        that launching it costs no wait; raises RetryableProviderError (not ambiguous:
        nothing was sent) when it cannot."""
        return SendHandle(self)

    async def send(self, sms: OutgoingSms) -> SendReceipt:
        started = time.perf_counter()
        try:
            provider_message_id = await self._try_send(sms)
        except ProviderError as exc:
            self.log_failure(sms.message_id, exc)
            raise
        return SendReceipt(self.name, provider_message_id, time.perf_counter() - started)

    def log_failure(self, message_id: str, exc: ProviderError) -> None:
        # Per-message detail at debug level: at thousands of SMS/s an info line each would
        # cost more than the send itself. Never the body (it may hold a code) or the number.
        _log.debug(
            "provider_error",
            provider=self.name,
            message_id=message_id,
            error=type(exc).__name__,
            provider_code=exc.code,
            detail=exc.detail,
        )

    @abstractmethod
    async def _try_send(self, sms: OutgoingSms) -> str:
        """Send one SMS; return the provider's id for it."""


# -- the provider kinds: `kind` -> (its settings class, its provider class) --------------
# A provider class joins by declaring the settings class it takes (`settings_type`); the
# settings class joins the loader by subclassing ProviderSettings with its own tag. So a new
# provider is one module (and its tests): the factory, the settings loader and the webhook
# find it here.

_BY_KIND: dict[str, tuple[type[ProviderSettings], type[Provider]]] = {}


def kind_of(settings_type: type[ProviderSettings]) -> str:
    """The `kind` tag of a settings class (a subclass without its own tag: its parent's)."""
    tag = settings_type.__struct_config__.tag
    if not isinstance(tag, str):
        raise TypeError(f"{settings_type.__name__} has no kind tag")
    return tag


def _register(provider: type[Provider]) -> None:
    """Called for each class that declares `settings_type` (Provider.__init_subclass__)."""
    kind = kind_of(provider.settings_type)
    known = _BY_KIND.get(kind)
    if known is not None and known[1] is not provider:
        raise TypeError(f"two providers of kind {kind!r}: {known[1]} and {provider}")
    _BY_KIND[kind] = (provider.settings_type, provider)


def provider_class(settings: ProviderSettings) -> type[Provider]:
    """The provider class that sends for this entry."""
    try:
        return _BY_KIND[kind_of(type(settings))][1]
    except KeyError:
        raise TypeError(f"no provider for kind {kind_of(type(settings))!r}") from None


def providers_by_kind() -> Mapping[str, tuple[type[ProviderSettings], type[Provider]]]:
    return MappingProxyType(_BY_KIND)
