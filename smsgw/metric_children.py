"""A labelled Prometheus metric's children, each looked up once.

prometheus_client's `labels()` takes a lock and builds its key on every call; on the hot
paths (every request, every send) that cost as much as the work measured. The children
themselves are prometheus_client's, so what they count is exposed unchanged.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LabelledChildren"]


class LabelledChildren:
    __slots__ = ("_children", "_metric")

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        """The child for these label values (created on first use)."""
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child
