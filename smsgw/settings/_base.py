"""What every settings section shares (frozen, unknown keys refused, secrets masked in
repr) and the checks several sections make."""

from __future__ import annotations

import itertools
import re
import string
from typing import Annotated, ClassVar
from urllib.parse import urlsplit

import msgspec
import phonenumbers
from msgspec import Meta

__all__ = [
    "AtLeastOne",
    "Fraction",
    "NonNegative",
    "NonNegativeInt",
    "Positive",
    "PositiveInt",
    "Secret",
    "Section",
    "check_countries",
    "check_present",
    "check_template",
    "check_url",
    "invalid",
]

TEMPLATE_FIELDS = frozenset({"app", "code", "minutes"})

# Bounds msgspec checks while it decodes (naming the key, as every error here does) and
# publishes in the JSON Schema (`smsgw config-schema`). NaN is refused by each of them.
Positive = Annotated[float, Meta(gt=0)]
NonNegative = Annotated[float, Meta(ge=0)]
PositiveInt = Annotated[int, Meta(gt=0)]
NonNegativeInt = Annotated[int, Meta(ge=0)]
AtLeastOne = Annotated[int, Meta(ge=1)]
Fraction = Annotated[float, Meta(gt=0, le=1)]  # a share: (0, 1]
# A secret (an HMAC key, an API key): guessable when short. Checked on the value, after an
# `env:NAME` reference is resolved.
Secret = Annotated[str, Meta(min_length=16)]


def invalid(key: str, problem: str) -> ValueError:
    # msgspec reports errors raised in __post_init__ at the struct's path; prefixing the key
    # (in backticks, as msgspec quotes names, since template names may hold ':' or '.') lets
    # _config_error() point at the exact key.
    return ValueError(f"`{key}`: {problem}")


def check_countries(key: str, countries: tuple[str, ...]) -> None:
    known = phonenumbers.SUPPORTED_REGIONS
    for country in countries:
        if country not in known:
            raise invalid(key, f"{country!r} is not an ISO country code phonenumbers knows")


class Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # Fields whose values repr() masks, so logged or printed settings never show a secret.
    _secret_fields: ClassVar[frozenset[str]] = frozenset()

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{f.name}={'***' if f.name in self._secret_fields else repr(getattr(self, f.name))}"
            for f in msgspec.structs.fields(self)
        )
        return f"{type(self).__name__}({fields})"


def check_present(key: str, value: str) -> None:
    # msgspec catches a missing key; an empty or blank one would only fail at the first send.
    if not value.strip():
        raise invalid(key, "must not be empty")


def check_url(key: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid(key, f"not an http(s) URL: {url!r}")


def check_template(key: str, template: str) -> None:
    if any(ord(char) < 0x20 and char != "\n" for char in template):
        # Nothing an SMS needs, and NUL would collide with the marker render() uses.
        raise invalid(key, "control characters other than a line break are not allowed")
    try:
        parsed = [p for p in string.Formatter().parse(template) if p[1] is not None]
    except ValueError as exc:
        raise invalid(key, f"bad template: {exc}") from exc
    if any(spec or conversion for _, _, spec, conversion in parsed):
        raise invalid(key, "placeholders take no format spec or conversion")
    names = [name for _, name, _, _ in parsed if name is not None]
    if names.count("code") != 1:
        # Exactly once: the audit masks the code by its position in the body.
        raise invalid(key, "template must contain {code} exactly once")
    unknown = sorted({name for name in names if name not in TEMPLATE_FIELDS})
    if unknown:
        raise invalid(key, f"unknown placeholder {{{unknown[0]}}}")
    # The app name comes from the client's request: next to "://", "x." or "@" in the
    # template it would become a link even though the name itself is plain.
    pieces = template.split("{app}")
    for before, after in itertools.pairwise(pieces):
        if _LINK_BEFORE_APP.search(before) or _LINK_AFTER_APP.match(after):
            raise invalid(key, "{app} must not touch '.', '/', ':' or '@' that would make a link")


_LINK_BEFORE_APP = re.compile(r"[./:@]\Z")
_LINK_AFTER_APP = re.compile(r"[./:@][A-Za-z0-9/]")
