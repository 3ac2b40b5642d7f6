"""Reading what an answer's body holds."""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["json_object"]


def json_object(payload: bytes) -> dict[str, Any]:
    """The JSON object in `payload`, or {} for anything else (HTML error pages, garbage)."""
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
