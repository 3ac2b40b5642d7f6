"""RFC 9457 problem details: every error the API returns has this shape."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from aiohttp import web

__all__ = ["PROBLEM_CONTENT_TYPE", "FieldError", "Problem", "problem_response"]

PROBLEM_CONTENT_TYPE = "application/problem+json"
_TYPE_PREFIX = "urn:smsgw:problem:"

FieldError = Mapping[str, str]  # {"pointer": "#/messages/3/to", "detail": "..."}


class Problem(Exception):
    """Raised anywhere in a handler; the error middleware renders it.

    `slug` names the problem type (`urn:smsgw:problem:<slug>`); None means `about:blank`,
    RFC 9457's type for plain HTTP errors whose status says it all.
    """

    def __init__(
        self,
        status: int,
        slug: str | None,
        title: str,
        detail: str | None = None,
        *,
        errors: Sequence[FieldError] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(title)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.errors = errors
        self.headers = headers


def problem_response(problem: Problem) -> web.Response:
    payload: dict[str, Any] = {
        "type": _TYPE_PREFIX + problem.slug if problem.slug else "about:blank",
        "title": problem.title,
        "status": problem.status,
    }
    if problem.detail:
        payload["detail"] = problem.detail
    if problem.errors:
        payload["errors"] = list(problem.errors)
    headers = {"Content-Type": PROBLEM_CONTENT_TYPE, **(problem.headers or {})}
    return web.Response(status=problem.status, body=orjson.dumps(payload), headers=headers)
