"""Receipt tags: proof, carried through the provider and back, that we sent a message.

Each send names our message id and its send time in what the provider echoes in its receipts
(Twilio: the StatusCallback URL; Vonage: `client-ref`), next to a tag: a truncated
HMAC-SHA256 under a server key of (provider name, message id, send time). A receipt is
recorded only with a valid tag, so nobody without the key can name a message (real or made
up) or move it to another provider's webhook, and no lookup is needed to check it.

The key must be the same on every replica and outlive restarts (a receipt may come days
after the send, to another replica): `server.receipt_secret`, or, unset, one derived from
`otp.secret`. During a rotation the previous key's tags still verify.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from smsgw.settings import OtpSettings, ServerSettings

__all__ = ["TAG_CHARS", "ReceiptRoute", "ReceiptTagger", "receipt_keys"]

# 128 bits of HMAC, in hex: guessing one is hopeless, and it stays short enough for
# Vonage's client-ref (100 characters) with the id and the send time.
TAG_CHARS = 32
# Domain separation: a key derived from a secret used elsewhere (otp.secret) is not that
# secret's own HMAC key, and a tag is never a valid HMAC of anything else we compute.
_KEY_LABEL = b"smsgw receipt tag key v1"
_TAG_LABEL = b"smsgw receipt tag v1"


def _derive(secret: str) -> bytes:
    return hmac.new(secret.encode(), _KEY_LABEL, hashlib.sha256).digest()


def receipt_keys(server: ServerSettings, otp: OtpSettings) -> tuple[bytes, bytes | None] | None:
    """(current, previous) tag keys from the settings, or None when no secret is set (the
    caller then makes an ephemeral key, and says so)."""
    if server.receipt_secret is not None:
        current, previous = server.receipt_secret, server.receipt_previous_secret
    elif otp.secret is not None:
        # Rotating otp.secret rotates this key too: its previous secret keeps old tags valid
        # (only while it is set: a dedicated receipt_secret decouples the two rotations).
        current, previous = otp.secret, otp.previous_secret
    else:
        return None
    return _derive(current), None if previous is None else _derive(previous)


class ReceiptTagger:
    def __init__(self, key: bytes, previous_key: bytes | None = None) -> None:
        self._key = key
        self._keys = (key,) if previous_key is None else (key, previous_key)

    def tag(self, provider: str, message_id: str, sent_at: int) -> str:
        return self._tag(self._key, provider, message_id, sent_at)

    def verify(self, provider: str, message_id: str, sent_at: int, tag: str) -> bool:
        """Whether `tag` is ours for this send, under the current or the previous key;
        compared in constant time, every key tried."""
        presented = tag.encode("ascii", "replace")
        valid = False
        for key in self._keys:
            expected = self._tag(key, provider, message_id, sent_at).encode()
            valid |= hmac.compare_digest(expected, presented)
        return valid

    @staticmethod
    def _tag(key: bytes, provider: str, message_id: str, sent_at: int) -> str:
        # NUL-separated: provider names and ids never hold one, so no two sends share a text.
        data = b"\0".join((_TAG_LABEL, provider.encode(), message_id.encode(), b"%d" % sent_at))
        return hmac.new(key, data, hashlib.sha256).hexdigest()[:TAG_CHARS]


@dataclass(frozen=True, slots=True)
class ReceiptRoute:
    """Where a provider sends this message's receipts (our webhook `url`), and the `tagger`
    whose tag each send carries: one never goes without the other, as untagged receipts are
    refused."""

    url: str
    tagger: ReceiptTagger
