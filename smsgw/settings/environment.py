"""The environment's part in the settings: `SMSGW_<SECTION>_<KEY>` overrides and `env:NAME`
references (how secrets are given)."""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from typing import Annotated, Any, Union, get_args, get_origin

import msgspec

from smsgw.errors import ConfigError
from smsgw.settings._base import Section
from smsgw.settings.document import Settings
from smsgw.validation import field_error

__all__ = ["ENV_PREFIX", "SECRET_PREFIX", "apply_env_overrides", "resolve_secrets"]

ENV_PREFIX = "SMSGW_"
SECRET_PREFIX = "env:"  # noqa: S105 - a marker, not a secret


# Every single-table section of the document ([server], [otp], ...), by its name in the file:
# read from Settings, so a new section is overridable without being listed again.
_SCALAR_SECTIONS: Mapping[str, type[Section]] = {
    field.encode_name: field.type
    for field in msgspec.structs.fields(Settings)
    if isinstance(field.type, type) and issubclass(field.type, Section)
}


# Kubernetes service links: a Service named e.g. "smsgw-redis" puts SMSGW_REDIS_SERVICE_HOST,
# SMSGW_REDIS_SERVICE_PORT_* and SMSGW_REDIS_PORT_6379_TCP_* into every pod's environment.
# They are not settings; an unknown key would otherwise stop the start.
_SERVICE_LINK = re.compile(r"_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT_\d+_(TCP|UDP|SCTP)(_\w+)?)$")


def apply_env_overrides(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == "SMSGW_CONFIG":
            continue
        if _SERVICE_LINK.search(name):
            continue
        section_name, _, key = name[len(ENV_PREFIX) :].lower().partition("_")
        section = _SCALAR_SECTIONS.get(section_name)
        if section is None:
            continue  # SMSGW_-prefixed variables of other purposes (e.g. secrets) pass through
        field = next((f for f in msgspec.structs.fields(section) if f.encode_name == key), None)
        if field is None or field.name == "templates":
            raise ConfigError(name, f"no setting {section_name}.{key} to override")
        try:
            converted = msgspec.convert(value, _unconstrained(field.type), strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(name, field_error(exc).message) from exc
        table = raw.setdefault(section_name, {})
        if not isinstance(table, dict):
            raise ConfigError(section_name, "must be a table")
        table[key] = converted


def _unconstrained(annotation: Any) -> Any:
    """The type without its Meta bounds: an override is only converted here (text to the
    key's type); its bounds are checked with the rest of the file, naming the key."""
    if get_origin(annotation) is Annotated:
        return _unconstrained(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        return Union[tuple(_unconstrained(arg) for arg in get_args(annotation))]  # noqa: UP007
    return annotation


def resolve_secrets(value: Any, env: Mapping[str, str], key: str) -> Any:
    if isinstance(value, str) and value.startswith(SECRET_PREFIX):
        variable = value[len(SECRET_PREFIX) :]
        if variable not in env or env[variable] == "":
            raise ConfigError(key, f"environment variable {variable} is not set")
        return env[variable]
    if isinstance(value, dict):
        return {k: resolve_secrets(v, env, f"{key}.{k}" if key else k) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_secrets(v, env, f"{key}[{i}]") for i, v in enumerate(value)]
    return value
