"""The JSON Schema of the configuration file (`smsgw config-schema`), for editors and CI.

msgspec writes it from the same types the loader decodes with, bounds included. One thing
the file may hold that the types do not say: any string value may be an `env:NAME`
reference, resolved before validation (a 16-character secret given as "env:K"), so every
place that takes a string also takes a reference. The `kind` tag must be written out.
"""

from __future__ import annotations

from typing import Any

import msgspec

from smsgw.settings.environment import SECRET_PREFIX
from smsgw.settings.loader import document_type

__all__ = ["config_schema"]

_REFERENCE = {"type": "string", "pattern": f"^{SECRET_PREFIX}.+$"}
_TAG_FIELD = "kind"


def config_schema() -> dict[str, Any]:
    """The schema of a file, with every provider kind defined so far."""
    schema = msgspec.json.schema(document_type())
    for definition in schema["$defs"].values():
        for name, prop in definition.get("properties", {}).items():
            if name != _TAG_FIELD:
                definition["properties"][name] = _with_references(prop)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "smsgw configuration",
        **schema,
    }


def _with_references(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if node.get("type") == "string" or "enum" in node:
        return {"anyOf": [node, _REFERENCE]}
    result = dict(node)
    if "anyOf" in node:
        result["anyOf"] = [_with_references(option) for option in node["anyOf"]]
    if "items" in node:
        result["items"] = _with_references(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        result["additionalProperties"] = _with_references(node["additionalProperties"])
    return result
