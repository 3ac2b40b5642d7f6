"""POST /v1/otp throughput against a bare aiohttp+uvloop handler, side by side in one run.

    .venv/bin/python -m bench.otp_throughput [--duration 8] [--connections 32] [--rounds 2]
        [--role all|api]

Both servers are separate processes driven by the same wrk command (one thread, keep-alive,
random valid US numbers). smsgw runs with its embedded defaults except that the console
provider appends to a temporary file instead of stdout, so the dispatcher's per-SMS work
(queue, limiter, provider write) is included in the measured process, as in production.
Rounds alternate bare/smsgw so drift on a shared machine hits both. With `--role api`,
smsgw takes the requests in and queues their SMS in a private redis-server (OTP state there
too) for worker replicas that this benchmark does not run: the API's own cost.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from pathlib import Path

from bench.loadgen import WrkResult, run_wrk, start_process, stop_process, wait_ready
from bench.queue_throughput import private_redis


def _smsgw_config(directory: Path, redis_url: str | None = None) -> Path:
    config = directory / "smsgw.toml"
    shared = "" if redis_url is None else f'[redis]\nurl = "{redis_url}"\n'
    config.write_text(
        shared + "[audit]\n"
        f'path = "{directory / "audit.sqlite3"}"\n'
        f'spool_dir = "{directory / "audit-spool"}"\n'
        "[otp]\n"
        'secret = "bench-secret-0123456789"\n'
        # wrk's numbers all go to +1 415, which is what SMS pumping looks like: the guard
        # still counts every start, but floors this high never refuse one.
        "[abuse]\n"
        "prefix_floor = 1000000000\n"
        "country_floor = 1000000000\n"
        "[[providers]]\n"
        'name = "console"\n'
        'kind = "console"\n'
        f'path = "{directory / "sms.jsonl"}"\n'
    )
    return config


def _measure(argv: list[str], directory: Path, name: str, args: argparse.Namespace) -> WrkResult:
    proc, port = start_process(argv, directory / f"{name}.port")
    try:
        wait_ready(f"http://127.0.0.1:{port}/healthz")
        return run_wrk(
            f"http://127.0.0.1:{port}/v1/otp",
            duration_s=args.duration,
            connections=args.connections,
        )
    finally:
        stop_process(proc, timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--role", choices=("all", "api"), default="all")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(private_redis()) if args.role == "api" else None
        _compare(args, redis_url)


def _compare(args: argparse.Namespace, redis_url: str | None) -> None:

    results: dict[str, list[WrkResult]] = {"bare": [], "smsgw": []}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        argvs = {
            "bare": ["python", "-m", "bench.bare_server"],
            "smsgw": [
                "python", "-m", "smsgw", "serve", "--role", args.role,
                "--config", str(_smsgw_config(directory, redis_url)), "--log-level", "warning",
            ],
        }  # fmt: skip
        for round_number in range(args.rounds):
            for name, argv in argvs.items():
                result = _measure(argv, directory, name, args)
                results[name].append(result)
                print(
                    f"round {round_number + 1} {name:5}: {result.rps:8.0f} req/s  "
                    f"p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms  "
                    f"non-2xx {result.non2xx}  socket errors {result.socket_errors}",
                    file=sys.stderr,
                )
    bare = statistics.median(r.rps for r in results["bare"])
    ours = statistics.median(r.rps for r in results["smsgw"])
    print("| server | req/s (median) | p50 ms | p99 ms | non-2xx |")
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        print(
            f"| {name} | {statistics.median(r.rps for r in runs):.0f} "
            f"| {statistics.median(r.p50_ms for r in runs):.2f} "
            f"| {statistics.median(r.p99_ms for r in runs):.2f} "
            f"| {sum(r.non2xx for r in runs)} |"
        )
    print(f"\n--role {args.role}: ratio smsgw / bare = {ours / bare:.2f}")


if __name__ == "__main__":
    main()
