"""Baseline: the cheapest aiohttp + uvloop `POST /v1/otp` we could serve.

Benchmarks report smsgw's req/s as a ratio of this server's, measured in the same run,
so it does only what any handler must: read the JSON body and answer 202 with JSON.
No middlewares, no access log (see `bench.serving`).

    python -m bench.bare_server --port 0 --port-file /tmp/bare.port
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Sequence

import orjson
from aiohttp import web

from testkit import serving

_JSON = "application/json"
_BAD_REQUEST = orjson.dumps({"title": "body must be a JSON object", "status": 400})


async def create_otp(request: web.Request) -> web.Response:
    try:
        payload = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        payload = None
    if not isinstance(payload, dict):
        return web.Response(body=_BAD_REQUEST, status=400, content_type=_JSON)
    answer = {"id": uuid.uuid4().hex, "status": "pending"}
    return web.Response(body=orjson.dumps(answer), status=202, content_type=_JSON)


async def healthz(request: web.Request) -> web.Response:
    # Only for readiness polling; not on the measured path.
    return web.Response(text="ok")


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/otp", create_otp)
    app.router.add_get("/healthz", healthz)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bare_server", description="Bare aiohttp baseline server."
    )
    serving.add_listen_args(parser)
    serving.run(make_app, parser.parse_args(argv))


if __name__ == "__main__":
    main()
