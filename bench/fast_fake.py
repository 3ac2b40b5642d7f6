"""The fast fake Twilio now lives in `testkit.fast_fake`; this module keeps
`python -m bench.fast_fake ...` and its imports working unchanged."""

from __future__ import annotations

from testkit.fast_fake import *  # noqa: F403
from testkit.fast_fake import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, main
from testkit.fast_fake import __all__ as _names

__all__ = [*_names, "DEFAULT_ACCOUNT_SID", "DEFAULT_AUTH_TOKEN"]

if __name__ == "__main__":
    main()
