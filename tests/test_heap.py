"""settle_heap: the start-up heap frozen out of the collector's sight, rarer collections."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(30)


def test_settle_heap_freezes_what_lives_and_raises_the_thresholds() -> None:
    # In a child: freezing the test process's heap would change every later test.
    script = (
        "import gc, json; from smsgw.heap import settle_heap; import smsgw.app;"
        "before = gc.get_freeze_count(); settle_heap();"
        "print(json.dumps([before, gc.get_freeze_count(), gc.get_threshold()]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    before, after, threshold = json.loads(out)
    assert before == 0
    assert after > 10_000  # the app's modules and their objects
    assert threshold == [50_000, 20, 100]
