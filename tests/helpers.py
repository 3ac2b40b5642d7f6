"""Helpers shared by tests: settings builder, console SMS reader, code extraction."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson

from smsgw.settings import Settings, parse_settings

OTP_SECRET = "test-secret-0123456789abcdef"


def make_settings(sms_path: Path, **sections: Any) -> Settings:
    """Settings for tests: console provider writing to `sms_path`, short drain, fixed secret.

    Keyword arguments are TOML sections (dicts) or arrays (lists) merged over the defaults.
    """
    raw: dict[str, Any] = {
        "server": {"drain_timeout_s": 5.0},
        "otp": {"secret": OTP_SECRET},
        "providers": [{"name": "console", "kind": "console", "path": str(sms_path)}],
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return parse_settings(raw, env={})


def read_sms(path: Path) -> list[dict[str, Any]]:
    """The SMS the console provider wrote, one dict per line."""
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


def code_in(sms_body: str) -> str:
    match = re.search(r"code is (\d+)", sms_body)
    assert match, sms_body
    return match.group(1)
