"""Geo permissions: the destination countries each client app may send to."""

from __future__ import annotations

from collections.abc import Sequence

from smsgw.settings import ClientSettings

__all__ = ["GeoPermissions"]


class GeoPermissions:
    """Which destination countries each client may send to (empty set: every country)."""

    def __init__(self, clients: Sequence[ClientSettings], default: Sequence[str]) -> None:
        self._default = frozenset(default)
        self._by_client = {
            c.name: frozenset(c.countries) for c in clients if c.countries is not None
        }

    def countries_for(self, client: str) -> frozenset[str]:
        return self._by_client.get(client, self._default)
