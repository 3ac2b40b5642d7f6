"""The provider kinds: `kind` -> (its settings class, its provider class).

A provider class joins by declaring the settings class it takes (`settings_type`); the
settings class joins the loader by subclassing ProviderSettings with its own tag. So a new
provider is one module (and its tests): the factory, the settings loader and the webhook
find it here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from smsgw.settings import ProviderSettings

if TYPE_CHECKING:
    from smsgw.providers.base import Provider

__all__ = ["kind_of", "provider_class", "providers_by_kind", "register"]

_BY_KIND: dict[str, tuple[type[ProviderSettings], type[Provider]]] = {}


def kind_of(settings_type: type[ProviderSettings]) -> str:
    """The `kind` tag of a settings class (a subclass without its own tag: its parent's)."""
    tag = settings_type.__struct_config__.tag
    if not isinstance(tag, str):
        raise TypeError(f"{settings_type.__name__} has no kind tag")
    return tag


def register(provider: type[Provider]) -> None:
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
