"""Real processes for the fault suite and `bench.faults_table`.

`smsgw serve` replicas and fake providers (`testkit.fake_provider`) as their own processes
(the private redis-server is `testkit.services.RedisServer`), and an open-loop load generator
that remembers what the gateway accepted, so a scenario can tell afterwards what reached the
provider once, twice or never. Everything binds to loopback on free ports and lives in one
directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from testkit.processes import REPO_ROOT, stop_process, wait_ready
from testkit.vonage_shapes import VonageAccount

__all__ = [
    "LIFECYCLE",
    "OTP_SECRET",
    "FakeProviderProcess",
    "Load",
    "Metrics",
    "Offer",
    "Smsgw",
    "clean_env",
    "delivered_keys",
    "smsgw_config",
    "sqlite_events",
    "vonage_provider",
]

REPO = REPO_ROOT
OTP_SECRET = "faults-secret-0123456789abcdef"
# What every message sent at the first try leaves in the audit trail.
LIFECYCLE = ("accepted", "queued", "sending", "sent")
START_TIMEOUT_S = 30.0


def clean_env() -> dict[str, str]:
    """This environment without SMSGW_* settings that would override a scenario's config."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")}


def _start(argv: list[str], directory: Path, name: str) -> tuple[subprocess.Popen[bytes], int]:
    """Start a server that takes `--port 0 --port-file F`; its port once it listens."""
    port_file = directory / f"{name}.port"
    port_file.unlink(missing_ok=True)
    with (directory / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(
            [*argv, "--port", "0", "--port-file", str(port_file)],
            cwd=directory,
            env={**clean_env(), "PYTHONPATH": str(REPO)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return proc, int(port_file.read_text())
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            log_text = (directory / f"{name}.log").read_text(errors="replace")
            raise RuntimeError(f"{name} did not start:\n{log_text[-3000:]}")
        time.sleep(0.02)


# -- providers and configuration ---------------------------------------------------------


class FakeProviderProcess:
    """`python -m testkit.fake_provider` as its own process, read and steered over HTTP
    (`/_stats`, `/_control`); `testkit.fake_provider.FakeProvider` is the server itself."""

    def __init__(self, directory: Path, name: str = "fake", *args: str) -> None:
        self.name = name
        argv = [sys.executable, "-m", "testkit.fake_provider", *args]
        self.proc, port = _start(argv, directory, name)
        self.url = f"http://127.0.0.1:{port}"

    async def stats(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        async with session.get(f"{self.url}/_stats") as response:
            response.raise_for_status()
            stats: dict[str, Any] = await response.json()
            return stats

    async def control(self, session: aiohttp.ClientSession, **changes: Any) -> None:
        async with session.post(f"{self.url}/_control", json=changes) as response:
            response.raise_for_status()

    def stop(self) -> None:
        stop_process(self.proc)


def vonage_provider(url: str, *, name: str = "vonage", **extra: Any) -> str:
    account = VonageAccount()
    lines = [
        "[[providers]]",
        f'name = "{name}"',
        'kind = "vonage"',
        f'base_url = "{url}"',
        f'api_key = "{account.api_key}"',
        f'api_secret = "{account.api_secret}"',
        'from = "smsgw"',
    ]
    return "\n".join(lines + [f"{key} = {json.dumps(value)}" for key, value in extra.items()])


def smsgw_config(providers: Sequence[str], **sections: dict[str, Any]) -> str:
    """A TOML file: fixed OTP secret, short drain, `sections` merged over the defaults, then
    the provider tables. OTP pumping limits are lifted for the test numbers (+1...)."""
    merged: dict[str, dict[str, Any]] = {
        "server": {"host": "127.0.0.1", "drain_timeout_s": 5.0},
        "otp": {"secret": OTP_SECRET},
        "abuse": {"allowed_prefixes": ["1"], "daily_sends_per_number": 1000},
    }
    for name, values in sections.items():
        merged[name] = {**merged.get(name, {}), **values}
    text = []
    for name, values in merged.items():
        text.append(f"[{name}]")
        text += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return "\n".join([*text, *providers]) + "\n"


# -- smsgw replicas --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Metrics:
    """One scrape of /metrics: sample values by name and labels."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    _LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
    _LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

    @classmethod
    def parse(cls, text: str) -> Metrics:
        samples = {}
        for line in text.splitlines():
            match = cls._LINE.match(line)
            if match is None:
                continue
            labels = frozenset(cls._LABEL.findall(match.group(2) or ""))
            samples[(match.group(1), labels)] = float(match.group(3))
        return cls(samples)

    def value(self, name: str, **labels: str) -> float:
        """The sum over every sample of `name` whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    def audit(self, result: str) -> int:
        return int(self.value("smsgw_audit_events_total", result=result))

    def dispatch(self, event: str) -> int:
        return int(self.value("smsgw_dispatch_events_total", event=event))


class Smsgw:
    """One `smsgw serve` replica with its own config file and log in `directory`."""

    def __init__(self, directory: Path, name: str, config: str) -> None:
        self.directory = directory
        self.name = name
        self.config_path = directory / f"{name}.toml"
        self.config_path.write_text(config)
        self.log_path = directory / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> Smsgw:
        argv = [sys.executable, "-m", "smsgw", "serve", "--config", str(self.config_path)]
        self.proc, port = _start(argv, self.directory, self.name)
        self.url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(f"{self.url}/readyz", timeout=START_TIMEOUT_S)
        except TimeoutError as exc:
            raise RuntimeError(f"{self.name} not ready:\n{self.log()[-3000:]}") from exc
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no drain, no flush, whatever it held is left behind."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_events(self, event: str) -> list[dict[str, Any]]:
        """The JSON log lines of this replica whose `event` is `event`."""
        found = []
        for line in self.log().splitlines():
            if f'"{event}"' not in line:
                continue
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("event") == event:
                    found.append(record)
        return found

    async def metrics(self, session: aiohttp.ClientSession) -> Metrics:
        async with session.get(f"{self.url}/metrics") as response:
            response.raise_for_status()
            return Metrics.parse(await response.text())


# -- load ------------------------------------------------------------------------------


@dataclass(slots=True)
class Offer:
    """One message offered to the gateway, as its client saw it."""

    key: str  # the body of a plain message; "otp:<phone>" for an OTP
    at: float  # time.monotonic() when the request was sent
    outcome: str = "pending"  # accepted | refused | unknown (no answer: may have been taken)
    answered_at: float = 0.0
    status: int = 0
    message_id: str | None = None
    replica: str = ""


@dataclass(slots=True)
class Load:
    """An open-loop client: offers `rate` messages per second whatever the answers, in
    batches through `POST /v1/messages/batch` (and optional OTPs through `POST /v1/otp`),
    round robin over the replicas `targets()` names at each tick."""

    tag: str
    offers: dict[str, Offer] = field(default_factory=dict)
    statuses: Counter[int | str] = field(default_factory=Counter)
    _seq: int = 0
    _phone_seq: int = 0

    async def run(
        self,
        session: aiohttp.ClientSession,
        targets: Callable[[], Sequence[Smsgw]],
        *,
        rate: float,
        seconds: float,
        tick_s: float = 0.1,
        otp_per_tick: int = 0,
    ) -> None:
        per_tick = max(1, round(rate * tick_s))
        started = time.monotonic()
        tasks: set[asyncio.Task[None]] = set()
        tick = 0
        while time.monotonic() - started < seconds:
            replicas = list(targets())
            if replicas:
                replica = replicas[tick % len(replicas)]
                batch = [self._next_message() for _ in range(per_tick)]
                tasks.add(asyncio.create_task(self._post_batch(session, replica, batch)))
                for _ in range(otp_per_tick):
                    tasks.add(asyncio.create_task(self._post_otp(session, replica)))
            tick += 1
            await asyncio.sleep(max(0.0, started + tick * tick_s - time.monotonic()))
        await asyncio.gather(*tasks)

    def accepted(self) -> list[Offer]:
        return [o for o in self.offers.values() if o.outcome == "accepted"]

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.offers.values() if o.outcome == outcome)

    def _next_message(self) -> dict[str, str]:
        self._seq += 1
        return {"to": f"+141555501{self._seq % 100:02d}", "body": f"{self.tag} {self._seq}"}

    async def _post_batch(
        self, session: aiohttp.ClientSession, replica: Smsgw, batch: list[dict[str, str]]
    ) -> None:
        offers = [Offer(m["body"], time.monotonic(), replica=replica.name) for m in batch]
        for offer in offers:
            self.offers[offer.key] = offer
        try:
            async with session.post(
                f"{replica.url}/v1/messages/batch", json={"messages": batch}
            ) as response:
                answer = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._settle(offers, "unknown", type(exc).__name__)
            return
        ids = answer.get("ids", []) if status == 202 else [None] * len(offers)
        self._settle(offers, "accepted" if status == 202 else "refused", status, ids)

    async def _post_otp(self, session: aiohttp.ClientSession, replica: Smsgw) -> None:
        self._phone_seq += 1
        phone = f"+1415{2000000 + self._phone_seq}"
        offer = Offer(f"otp:{phone}", time.monotonic(), replica=replica.name)
        self.offers[offer.key] = offer
        try:
            async with session.post(f"{replica.url}/v1/otp", json={"phone": phone}) as response:
                answer = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._settle([offer], "unknown", type(exc).__name__)
            return
        ids = [answer.get("message_id")] if status == 202 else [None]
        self._settle([offer], "accepted" if status == 202 else "refused", status, ids)

    def _settle(
        self,
        offers: list[Offer],
        outcome: str,
        status: int | str,
        ids: Sequence[str | None] = (),
    ) -> None:
        now = time.monotonic()
        self.statuses[status] += len(offers)
        for n, offer in enumerate(offers):
            offer.outcome, offer.answered_at = outcome, now
            offer.status = status if isinstance(status, int) else 0
            offer.message_id = ids[n] if n < len(ids) else None


def delivered_keys(stats: Iterable[dict[str, Any]]) -> dict[str, list[float]]:
    """Arrival times at the providers of every message they took, by Load key."""
    taken: dict[str, list[float]] = {}
    for provider_stats in stats:
        for record in provider_stats["accepted"]:
            body = record["body"]
            key = f"otp:{record['to']}" if " code is " in body else body
            taken.setdefault(key, []).append(record["at"])
    return taken


def sqlite_events(paths: Iterable[Path]) -> dict[str, list[str]]:
    """Event kinds by message id, from the SQLite audit files of several replicas."""
    kinds: dict[str, list[str]] = {}
    for path in paths:
        if not path.exists():
            continue
        db = sqlite3.connect(path)
        try:
            for message_id, event in db.execute("SELECT message_id, event FROM audit_events"):
                kinds.setdefault(message_id, []).append(json.loads(event)["kind"])
        finally:
            db.close()
    return kinds
