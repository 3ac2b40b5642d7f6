"""Issue 14's message mix: 60% short OTP-like bodies (1 segment), 25% 200-character GSM-7
(2 segments), 15% 100-character Cyrillic with an emoji (UCS-2, 2 segments): 1.4 segments per
message on average, exactly, over every 20 consecutive numbers."""

from __future__ import annotations

__all__ = ["SEGMENTS_PER_MESSAGE", "body"]

SEGMENTS_PER_MESSAGE = 1.4

_SHORT = "Your code is {n:06d}. It expires in 10 minutes."
_LONG_GSM = "Your parcel {n:06d} is on its way. " + "Track it in the app any time. " * 6
_CYRILLIC = "Ваш код {n:06d}. Никому его не сообщайте 🙂 " + "Спасибо, что вы с нами. " * 3  # noqa: RUF001 (Cyrillic on purpose)


def body(n: int) -> str:
    """Issue 14's mix, deterministic: 12 short, 5 long GSM-7, 3 Cyrillic in every 20."""
    kind = n % 20
    if kind < 12:
        return _SHORT.format(n=n % 1_000_000)
    if kind < 17:
        return _LONG_GSM.format(n=n % 1_000_000)[:200]
    return _CYRILLIC.format(n=n % 1_000_000)[:99] + "🙂"
