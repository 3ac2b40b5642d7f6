"""Reading the file: TOML, environment overrides, `env:` references, then validation."""

from __future__ import annotations

import functools
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union, cast

import msgspec

from smsgw.errors import ConfigError
from smsgw.settings.document import Settings
from smsgw.settings.environment import apply_env_overrides, resolve_secrets
from smsgw.settings.providers import ProviderSettings, provider_kinds
from smsgw.validation import field_error

__all__ = ["document_type", "load_settings", "parse_settings"]


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file (None: embedded defaults), apply environment overrides, validate.

    Raises ConfigError naming the offending key.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as file:
                raw = tomllib.load(file)
        except OSError as exc:
            raise ConfigError(str(path), f"cannot read: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), f"not valid TOML: {exc}") from exc
    return parse_settings(raw, env)


def parse_settings(raw: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Settings:
    """Validate an already parsed TOML document (a plain mapping) with environment overrides."""
    env = os.environ if env is None else env
    # A shallow copy per section: overrides must not write into the caller's mapping.
    document = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
    apply_env_overrides(document, env)
    resolved = resolve_secrets(document, env, "")
    try:
        decoded = msgspec.convert(resolved, document_type())
    except msgspec.ValidationError as exc:
        error = field_error(exc)
        raise ConfigError(error.dotted, error.message) from exc
    return Settings(**{name: getattr(decoded, name) for name in Settings.__struct_fields__})


def document_type() -> type[Settings]:
    """Settings as a file is decoded: each [[providers]] entry is one of the kinds defined
    so far (the built-in ones, and those of provider modules imported by now)."""
    return _document_type(tuple(provider_kinds().values()))


@functools.cache
def _document_type(kinds: tuple[type[ProviderSettings], ...]) -> type[Settings]:
    # A subclass only for decoding (parse_settings hands out a plain Settings): msgspec picks
    # a union member by its `kind` tag, and the union is only known at run time.
    entry: Any = Union[kinds]  # noqa: UP007
    document = msgspec.defstruct(
        "Settings",
        [("providers", tuple[entry, ...], ())],
        bases=(Settings,),
        module=__name__,
        frozen=True,
        kw_only=True,
        forbid_unknown_fields=True,
    )
    return cast(type[Settings], document)
