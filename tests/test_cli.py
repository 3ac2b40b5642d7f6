"""The `smsgw` command run in-process: check-config and the serve safety check."""

from __future__ import annotations

import os
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from smsgw import cli

pytestmark = pytest.mark.timeout(30)

GOOD = """
[server]
port = 8099

[otp]
secret = "cli-test-secret-0123456789"

[[providers]]
name = "console"
kind = "console"
"""

WITH_CLIENT = f"""{GOOD}
[[clients]]
name = "login-app"
key_sha256 = "{"ab" * 32}"
"""
# The wildcard address: reachable from everywhere, so serving there needs API keys.
PUBLIC = "0.0.0.0"  # noqa: S104


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No SMSGW_* variable of the machine may leak in, and logging is put back afterwards."""
    for name in list(os.environ):
        if name.startswith("SMSGW_"):
            monkeypatch.delenv(name)
    saved = structlog.get_config()
    real_configure = cli.configure_logging

    def configure_without_cache(*args: Any, **kwargs: Any) -> None:
        # serve configures structlog to write to the captured stderr; loggers cached on first
        # use would keep writing there after this test closes it.
        real_configure(*args, **kwargs)
        structlog.configure(cache_logger_on_first_use=False)

    monkeypatch.setattr(cli, "configure_logging", configure_without_cache)
    yield
    structlog.reset_defaults()
    structlog.configure(**saved)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Stand-in for the event loop: records that serve went as far as running the server."""
    runs: list[object] = []

    def fake_run(main: Coroutine[Any, Any, None]) -> None:
        runs.append(main)
        main.close()  # never started: nothing binds

    monkeypatch.setattr(cli.uvloop, "run", fake_run)
    return runs


def write(tmp_path: Path, text: str, name: str = "smsgw.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_check_config_on_a_good_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD)
    assert cli.main(["check-config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert str(path) in out
    assert err == ""


def test_check_config_without_a_file_checks_the_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["check-config"]) == 0
    assert "built-in defaults" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[server]\nport = "x"\n', "server.port"),
        ("[server]\nprot = 1\n", "server.prot"),
        ('[[providers]]\nname = "c"\nkind = "console"\nweight = 0\n', "providers[0].weight"),
        ("[otp]\nlength = 12\n", "otp.length"),
    ],
)
def test_check_config_on_a_bad_file_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str
) -> None:
    path = write(tmp_path, text)
    assert cli.main(["check-config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert key in err
    assert "ok" not in out


def test_check_config_reports_a_missing_secret_by_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, '[otp]\nsecret = "env:SMSGW_TEST_SURELY_UNSET"\n')
    assert cli.main(["check-config", str(path)]) == 2
    assert "otp.secret" in capsys.readouterr().err


def test_check_config_on_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "absent.toml"
    assert cli.main(["check-config", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_check_config_reads_smsgw_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = write(tmp_path, '[server]\nport = "x"\n', "bad.toml")
    monkeypatch.setenv("SMSGW_CONFIG", str(bad))
    assert cli.main(["check-config"]) == 2
    assert "server.port" in capsys.readouterr().err


def test_environment_override_errors_name_the_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMSGW_SERVER_PORT", "eighty")
    assert cli.main(["check-config", str(write(tmp_path, GOOD))]) == 2
    assert "SMSGW_SERVER_PORT" in capsys.readouterr().err


def test_serve_on_a_public_address_without_clients_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], served: list[object]
) -> None:
    path = write(tmp_path, GOOD)
    assert cli.main(["serve", "--config", str(path), "--host", PUBLIC]) == 2
    assert served == []  # never got as far as starting the server
    err = capsys.readouterr().err
    assert "refusing_to_start" in err
    assert PUBLIC in err


@pytest.mark.parametrize("host", ["::", "192.0.2.10", "example.com"])
def test_serve_refuses_other_non_loopback_hosts(
    tmp_path: Path, served: list[object], host: str
) -> None:
    assert cli.main(["serve", "--config", str(write(tmp_path, GOOD)), "--host", host]) == 2
    assert served == []


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_serve_on_loopback_without_clients_starts(
    tmp_path: Path, served: list[object], host: str
) -> None:
    assert cli.main(["serve", "--config", str(write(tmp_path, GOOD)), "--host", host]) == 0
    assert len(served) == 1


def test_serve_on_a_public_address_with_clients_starts(
    tmp_path: Path, served: list[object]
) -> None:
    path = write(tmp_path, WITH_CLIENT)
    assert cli.main(["serve", "--config", str(path), "--host", PUBLIC]) == 0
    assert len(served) == 1


def test_serve_refuses_a_public_host_from_the_config_file(
    tmp_path: Path, served: list[object]
) -> None:
    path = write(tmp_path, GOOD.replace("port = 8099", 'host = "0.0.0.0"\nport = 8099'))
    assert cli.main(["serve", "--config", str(path)]) == 2
    assert served == []


def test_serve_with_a_bad_port_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], served: list[object]
) -> None:
    path = write(tmp_path, GOOD)
    assert cli.main(["serve", "--config", str(path), "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err
    assert served == []


def test_serve_with_a_bad_config_exits_2_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], served: list[object]
) -> None:
    path = write(tmp_path, '[server]\nport = "x"\n')
    assert cli.main(["serve", "--config", str(path)]) == 2
    assert "server.port" in capsys.readouterr().err
    assert served == []


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["frobnicate"])
    assert info.value.code == 2
    assert "frobnicate" in capsys.readouterr().err


def test_migrate_creates_the_sqlite_audit_store_and_is_harmless_twice(tmp_path: Path) -> None:
    import sqlite3

    database = tmp_path / "nested" / "audit.sqlite3"
    config = tmp_path / "smsgw.toml"
    config.write_text(f'{GOOD}\n[audit]\npath = "{database}"\n')
    assert cli.main(["migrate", "--config", str(config)]) == 0
    assert cli.main(["migrate", "--config", str(config)]) == 0
    with sqlite3.connect(database) as db:
        names = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert {"audit_events", "audit_by_recipient"} <= names


def test_migrate_with_a_bad_config_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "smsgw.toml"
    config.write_text('[audit]\nbackend = "cassandra"\n')
    assert cli.main(["migrate", "--config", str(config)]) == 2
