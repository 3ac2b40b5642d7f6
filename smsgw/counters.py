"""Counters since start, readable as a mapping: what the metrics collector reads.

A component keeps its counters in a slotted dataclass that subclasses `Counters`: code bumps
fields (`stats.sent += 1`), readers take it as a `Mapping[str, int]` (`stats.items()`, or
`stats["sent"]`) without knowing the component's class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping

__all__ = ["Counters"]


class Counters(Mapping[str, int]):
    __slots__ = ()

    def __getitem__(self, name: str) -> int:
        if name not in self._names():
            raise KeyError(name)
        value: int = getattr(self, name)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def as_dict(self) -> dict[str, int]:
        return dict(self)

    def _names(self) -> tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(self))  # type: ignore[arg-type]
