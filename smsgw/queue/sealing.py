"""Sealing queued messages: AES-256-GCM under a key that Redis never sees.

A queued message carries a code, a phone number and the verification id, and Redis keeps it
in its memory, its append-only file, its snapshots and on its replicas. So the queue stores
only sealed payloads, as ASCII text (base64, so a client with decode_responses=True reads them
too): one key-id byte, a fresh random 96-bit nonce, then the ciphertext with its 16-byte tag.
The associated data is the name of the stream the payload is for, so an entry cannot be
moved to another stream or another gateway's keys (the key id is not authenticated: changing
it only picks a key that fails). The tag also means that write access to Redis no longer
lets anyone inject or alter a message for us to send.

The key comes from `queue.secret`, else from `otp.secret`, through HKDF-SHA256 with one fixed
label: never the OTP hashing key itself, and a former `otp.secret` given as
`queue.previous_secret` yields the key it used to derive. Decryption picks the key by its id
byte, so messages sealed under `previous_secret` still open during a rotation.
"""

from __future__ import annotations

import binascii
import hashlib
import os
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from smsgw.errors import ConfigError
from smsgw.settings import Settings

__all__ = ["QueueCipher", "Undecodable"]

_KEY_LABEL = b"smsgw queue message key v1"
_KEY_ID_LABEL = b"smsgw queue key id v1"
_NONCE_BYTES = 12
_TAG_BYTES = 16
_HEADER_BYTES = 1 + _NONCE_BYTES


class Undecodable(ValueError):
    """A queue payload that is not a message of ours: not sealed, tampered with, sealed under
    a key we no longer have. `reason` is a fixed word, safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _derive(secret: str | bytes) -> bytes:
    material = secret.encode() if isinstance(secret, str) else secret
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KEY_LABEL)
    return hkdf.derive(material)


class QueueCipher:
    """Seals with the current key; opens with the current or any previous one."""

    def __init__(self, secret: str | bytes, previous: Iterable[str | bytes | None] = ()) -> None:
        keys: list[bytes] = []
        for material in (secret, *previous):
            if material is not None and (key := _derive(material)) not in keys:
                keys.append(key)
        # The id is a hash byte of the key, not its position: a key keeps its id when it
        # moves from secret to previous_secret. Two keys may share an id (1 in 256): opening
        # then tries both.
        self._openers: dict[int, list[AESGCM]] = {}
        for key in keys:
            key_id = hashlib.sha256(_KEY_ID_LABEL + key).digest()[0]
            self._openers.setdefault(key_id, []).append(AESGCM(key))
        self._key_id = bytes([hashlib.sha256(_KEY_ID_LABEL + keys[0]).digest()[0]])
        self._sealer = AESGCM(keys[0])

    @classmethod
    def from_settings(cls, settings: Settings) -> QueueCipher:
        queue, otp = settings.queue, settings.otp
        if queue.secret is not None:
            return cls(queue.secret, (queue.previous_secret,))
        if otp.secret is not None:
            # Derived from the OTP secret, so it rotates with it too.
            return cls(otp.secret, (queue.previous_secret, otp.previous_secret))
        # Settings refuse a Redis queue without either; a made-up key would lose messages.
        raise ConfigError("queue.secret", "set queue.secret or otp.secret")

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        # A random nonce per call, from the OS (also right after a fork). 2**32 seals per
        # key keep the chance of a repeated nonce below 2**-32 (NIST SP 800-38D): rotate
        # the secret before that many messages and retries.
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._sealer.encrypt(nonce, plaintext, context)
        return binascii.b2a_base64(self._key_id + nonce + sealed, newline=False)

    def open(self, payload: object, context: bytes) -> bytes:
        if not isinstance(payload, (bytes, str)):
            raise Undecodable("not a payload")
        try:
            # Not strict_mode (a third slower): characters outside base64 are skipped, and
            # what remains must still pass the tag.
            raw = binascii.a2b_base64(payload)
        except (binascii.Error, ValueError):
            # ValueError: a str with non-ASCII characters.
            raise Undecodable("not sealed") from None
        if len(raw) < _HEADER_BYTES + _TAG_BYTES:
            raise Undecodable("not sealed")
        openers = self._openers.get(raw[0])
        if openers is None:
            raise Undecodable("unknown key")
        nonce, sealed = raw[1:_HEADER_BYTES], raw[_HEADER_BYTES:]
        for opener in openers:
            try:
                return opener.decrypt(nonce, sealed, context)
            except InvalidTag:
                continue
        raise Undecodable("tampered or wrong key")
