"""The benchmark scripts themselves, run tiny: the one place tests import `bench`."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(20)


def test_transports_bench_runs_its_candidates_against_the_fast_fake(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """bench/transports.py end to end, tiny: children, the fake's CPU, the table."""
    from bench import transports

    transports.main(
        ["--requests", "200", "--concurrency", "4", "--only", "raw,smsgw", "--schemes", "tcp,tls"]
    )
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith(("| raw", "| smsgw"))]
    assert len(rows) == 4
    assert all("| 200/200 |" in row for row in rows), table
    assert "| raw | tcp |" in table
    assert "| smsgw | tls |" in table
