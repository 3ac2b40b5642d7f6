"""The one reader of msgspec's validation errors (settings loader and API input reader)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import pytest

from smsgw.validation import field_error


class Part(msgspec.Struct, forbid_unknown_fields=True):
    to: str
    count: Annotated[int, msgspec.Meta(ge=1)] = 1

    def __post_init__(self) -> None:
        if self.to == "checked":
            raise ValueError("`to.inner`: refused by a check")


class Doc(msgspec.Struct, forbid_unknown_fields=True):
    parts: list[Part] = []
    table: dict[str, int] = {}


@pytest.mark.parametrize(
    ("value", "dotted", "pointer", "message"),
    [
        ({"parts": [{"to": "a"}, {"to": 1}]}, "parts[1].to", "#/parts/1/to", "Expected `str`"),
        ({"parts": [{"to": "a", "count": 0}]}, "parts[0].count", "#/parts/0/count", ">= 1"),
        ({"parts": [{}]}, "parts[0].to", "#/parts/0/to", "missing required field"),
        ({"nope": 1}, "nope", "#/nope", "unknown field"),
        ({"parts": [{"to": "checked"}]}, "parts[0].to.inner", "#/parts/0/to.inner", "refused"),
        ({"table": {"a": "x"}}, "table[...]", "#/table", "Expected `int`"),
        ([], "(root)", "#", "Expected `object`"),
    ],
)
def test_paths_and_messages(value: Any, dotted: str, pointer: str, message: str) -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.convert(value, Doc)
    error = field_error(info.value)
    assert (error.dotted, error.json_pointer) == (dotted, pointer)
    assert message in error.message
    assert " - at " not in error.message
