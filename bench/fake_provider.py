"""The fake provider now lives in `testkit.fake_provider` (tests and benchmarks share it);
this module keeps `python -m bench.fake_provider ...` and `from bench.fake_provider import X`
working with the same names and command line."""

from __future__ import annotations

from testkit.fake_provider import *  # noqa: F403
from testkit.fake_provider import __all__ as __all__
from testkit.fake_provider import main

if __name__ == "__main__":
    main()
