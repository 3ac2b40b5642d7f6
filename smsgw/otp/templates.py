"""SMS text for a code, chosen per app and locale."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from smsgw.settings import DEFAULT_TEMPLATE

__all__ = ["RenderedOtp", "Templates"]

# A character no template can contain after validation, to find where the code lands.
_MARK = "\x00"


@dataclass(frozen=True, slots=True)
class RenderedOtp:
    body: str
    code_span: tuple[int, int]  # where the code sits in body, for masking


class Templates:
    def __init__(self, templates: Mapping[str, str]) -> None:
        self._templates = dict(templates)

    def choose(self, app: str, locale: str | None) -> str:
        """Most specific first: app:locale, app:language, app, locale, language, default."""
        keys: list[str] = []
        if locale:
            language = locale.split("-")[0]
            keys += [f"{app}:{locale}", f"{app}:{language}"]
            keys.append(app)
            keys += [locale, language]
        else:
            keys.append(app)
        keys.append("default")
        for key in keys:
            template = self._templates.get(key)
            if template is not None:
                return template
        return DEFAULT_TEMPLATE

    def render(self, *, app: str, locale: str | None, code: str, ttl_s: int) -> RenderedOtp:
        template = self.choose(app, locale)
        minutes = max(1, math.ceil(ttl_s / 60))
        marked = template.format(app=app, code=_MARK, minutes=minutes)
        start = marked.index(_MARK)
        body = marked.replace(_MARK, code, 1)
        return RenderedOtp(body, (start, start + len(code)))
