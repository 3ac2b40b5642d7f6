"""Split roles over one Redis: an `api` replica only accepts and enqueues, a `worker` only
dispatches; both beat into the replica roll."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from smsgw.app_keys import HEARTBEAT
from smsgw.errors import ConfigError
from smsgw.redis_keys import RedisKeys
from smsgw.replicas import Heartbeat, beats
from smsgw.settings import parse_settings
from tests.helpers import app_client, read_sms, wait_sms

PHONE = "+14155550100"


def test_split_roles_need_the_redis_queue() -> None:
    for role in ("api", "worker"):
        with pytest.raises(ConfigError) as info:
            parse_settings({"server": {"role": role}}, env={})
        assert info.value.key == "server.role"
    with pytest.raises(ConfigError):
        parse_settings(
            {
                "server": {"role": "worker"},
                "redis": {"url": "redis://x"},
                "queue": {"backend": "memory"},
            },
            env={},
        )


async def test_api_enqueues_and_a_worker_sends(
    aiohttp_client: Any, sms_path: Path, redis_url: str
) -> None:
    shared = {"redis": {"url": redis_url}}
    api = await app_client(aiohttp_client, sms_path, server={"role": "api"}, **shared)
    response = await api.post("/v1/messages", json={"to": PHONE, "body": "via the worker"})
    assert response.status == 202
    ready = await (await api.get("/readyz")).json()
    assert ready["role"] == "api"
    assert "dispatch" not in ready  # nothing is sent here
    await asyncio.sleep(0.3)
    assert read_sms(sms_path) == []
    depth = await (await api.get("/metrics")).text()
    assert 'smsgw_queue_depth{part="normal"} 1.0' in depth

    worker = await app_client(aiohttp_client, sms_path, server={"role": "worker"}, **shared)
    (sms,) = await wait_sms(sms_path, 1, timeout=5)
    assert sms["body"] == "via the worker"
    # A worker serves health, readiness and metrics only.
    assert (await worker.post("/v1/otp", json={"phone": PHONE})).status == 404
    assert (await worker.get("/v1/messages/x")).status == 404
    assert (await worker.get("/readyz")).status == 200
    assert (await worker.get("/metrics")).status == 200


async def test_replicas_beat_into_the_roll_and_leave_it_on_stop(
    aiohttp_client: Any, sms_path: Path, redis_url: str
) -> None:
    redis = Redis.from_url(redis_url)
    keys = RedisKeys()
    # Another worker replica (in-process apps share a host:pid name, so it is made by hand).
    other = Heartbeat(redis, keys, "worker", "other-host:1")
    await other.beat()
    worker = await app_client(
        aiohttp_client, sms_path, redis={"url": redis_url}, server={"role": "worker"}
    )
    mine = worker.app[HEARTBEAT]
    await mine.beat()
    assert mine.alive == 2
    text = await (await worker.get("/metrics")).text()
    assert 'smsgw_replicas_alive{role="worker"} 2.0' in text
    roll = await beats(redis, keys, "worker")
    assert set(roll) == {"other-host:1", mine.replica}
    await worker.close()  # leaves the roll at once
    assert set(await beats(redis, keys, "worker")) == {"other-host:1"}
    await other.stop()
    assert await beats(redis, keys, "worker") == {}
    await redis.aclose()


async def test_workers_alive_are_counted_on_redis_clock(
    aiohttp_client: Any, sms_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # smsgw_desired_workers asks for one more worker than are alive when the oldest message
    # waits too long; an API replica whose clock runs a minute ahead of Redis' must still
    # count the worker that beat just now.
    from smsgw.api import metrics as metrics_module

    class AheadClock:
        monotonic = staticmethod(time.monotonic)

        @staticmethod
        def time() -> float:
            return time.time() + 60.0

    redis = Redis.from_url(redis_url)
    worker = Heartbeat(redis, RedisKeys(), "worker", "other-host:1")
    await worker.beat()
    api = await app_client(
        aiohttp_client,
        sms_path,
        redis={"url": redis_url},
        server={"role": "api"},
        scaling={"min_workers": 0, "max_workers": 4, "max_age_s": 0.01},
    )
    assert (await api.post("/v1/messages", json={"to": PHONE, "body": "waits"})).status == 202
    await asyncio.sleep(0.05)  # older than max_age_s, and nobody sends it
    monkeypatch.setattr(metrics_module, "time", AheadClock)
    text = await (await api.get("/metrics")).text()
    desired = [line for line in text.splitlines() if line.startswith("smsgw_desired_workers ")]
    assert desired == ["smsgw_desired_workers 2.0"]  # the one alive worker, plus one
    await worker.stop()
    await redis.aclose()
