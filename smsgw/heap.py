"""The garbage collector tuned for a long-running server that allocates per message.

Measured with `python -m bench.pipeline` (bench/RESULTS.md): with CPython's defaults the
collector took ~16% of the gateway's CPU at 12,000 SMS/s, and its full collections, which
walk every object alive (the phonenumbers metadata and every imported module among them),
held the event loop for up to 60 ms at a time, late for every send due meanwhile.
"""

from __future__ import annotations

import gc

__all__ = ["settle_heap"]

# Allocations between two young collections (CPython: 700). Most of a message's objects
# die before the next collection either way; collecting 70x less often finds the same
# garbage for far less work, and keeps fewer survivors from reaching the old generations.
YOUNG_THRESHOLD = 50_000
# Young collections per middle one, and middle ones per full one (CPython: 10, 10). A
# full collection still also waits until a quarter of the old generation is new.
MIDDLE_THRESHOLD = 20
OLD_THRESHOLD = 100


def settle_heap() -> None:
    """Call once the process has started (modules imported, the app built): what lives
    now lives for the process, so it is moved out of the collector's sight for good."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
