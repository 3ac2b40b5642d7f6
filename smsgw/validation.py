"""Checks of untrusted text shared by the settings loader, the API's input reader and the
providers' receipt parsers: msgspec's validation errors, our message ids, ASCII numbers.

msgspec says where a value failed as text: "Expected `int`, got `str` - at `$.server.port`".
A missing or unknown field is named in the message ("Object missing required field `name`")
at its parent's path, and a check raised in a struct's __post_init__ is reported at the
struct's path; settings checks name their key as "`key`: problem" for that reason. One
parser turns all of these into the path of the offending value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import msgspec

__all__ = ["MESSAGE_ID", "FieldError", "ascii_int", "field_error"]

# The shape of our message ids (smsgw.queue.message.new_message_id): 128 random bits in hex.
MESSAGE_ID = re.compile(r"msg_[0-9a-f]{32}")
_ASCII_DIGITS = re.compile(r"[0-9]{1,18}")

_LOCATION = re.compile(r"^(?P<message>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
_FIELD_IN_MESSAGE = re.compile(r"field `(?P<field>[^`]+)`")
_FIELD_PREFIX = re.compile(r"^`(?P<field>[^`]+)`: (?P<message>.*)$", re.DOTALL)
# ".name", "[3]", and "[...]" for a value in a mapping (msgspec does not say which key).
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[\.\.\.\]")


@dataclass(frozen=True, slots=True)
class FieldError:
    message: str  # the problem, without the location
    path: str  # msgspec's path without the "$": ".providers[0]"; "" for the document itself
    field: str | None  # a field the message names below `path` (missing, unknown, checked)

    @property
    def dotted(self) -> str:
        """`providers[0].auth_token`; "(root)" for the document itself."""
        path = f"{self.path}.{self.field}" if self.field is not None else self.path
        return path.lstrip(".") or "(root)"

    @property
    def json_pointer(self) -> str:
        """The RFC 6901 fragment of the value: `#/messages/3/to`; "#" for the document."""
        parts = _PATH_PART.findall(self.path)
        pointer = "#" + "".join("/" + (name or index) for name, index in parts if name or index)
        return pointer if self.field is None else f"{pointer}/{self.field}"


def field_error(error: msgspec.ValidationError) -> FieldError:
    text = str(error)
    match = _LOCATION.match(text)
    message, path = (match["message"], match["path"]) if match else (text, "")
    if prefixed := _FIELD_PREFIX.match(message):
        return FieldError(prefixed["message"], path, prefixed["field"])
    named = _FIELD_IN_MESSAGE.search(message)
    return FieldError(message, path, named["field"] if named else None)


def ascii_int(value: object) -> int | None:
    """`value` as an int when it is 1-18 ASCII digits (no sign, space or other script);
    None otherwise. `str.isdigit()` takes "²" (which int() refuses) and "٣" (which int()
    reads as 3), and int() refuses more than 4300 digits."""
    if not isinstance(value, str) or not _ASCII_DIGITS.fullmatch(value):
        return None
    return int(value)
