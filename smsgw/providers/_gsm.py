"""GSM 03.38: which texts fit the default SMS alphabet.

Twilio picks the encoding itself; Vonage sends the text as GSM-7 unless told `type=unicode`,
which turns every other character (Devanagari, emoji, ...) into '?'.
"""

from __future__ import annotations

from typing import Final

__all__ = ["is_gsm7"]

# The basic table and the extension table (the latter costs two septets, still GSM-7).
_GSM7: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
    "^{}\\[~]|€\f"
)


def is_gsm7(text: str) -> bool:
    # Not str.isascii(): some ASCII characters (` and control codes) are not in GSM-7.
    return _GSM7.issuperset(text)
