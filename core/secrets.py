"""Secrets kept at rest (provider API keys): Fernet tokens under a list of keys, newest first.

Pure computation, shared by the portal (which encrypts what an operator saves) and the relay
(which decrypts once per catalog load). The keys come from ``TP_SECRETS_KEYS``, never from the
database. Rotation: put a new key first, restart, run ``manage.py rotatesecrets`` (every token
is re-encrypted under the newest key), then drop the old key.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

# A Fernet token: version byte 0x80, 8-byte timestamp, 16-byte IV, at least one 16-byte block
# of ciphertext and a 32-byte HMAC, in URL-safe base64.
_TOKEN_VERSION = 0x80
_TOKEN_MIN_BYTES = 1 + 8 + 16 + 16 + 32


class SecretError(ValueError):
    """A token that none of the configured keys opens (or a malformed key list)."""


def generate_key() -> str:
    return Fernet.generate_key().decode()


def parse_keys(value: str | Iterable[str]) -> list[str]:
    """``"new,old"`` (or a list) into the keys, newest first; a bad key is named by position."""
    items = value.split(",") if isinstance(value, str) else list(value)
    keys = [item.strip() for item in items if item.strip()]
    for position, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except (ValueError, binascii.Error):
            raise SecretError(
                f"key {position} of TP_SECRETS_KEYS is not a Fernet key "
                "(32 URL-safe base64-encoded bytes)"
            ) from None
    return keys


def looks_encrypted(value: str) -> bool:
    """Whether ``value`` has the shape of a Fernet token (whichever key made it)."""
    if not value.startswith("gAAAAA"):
        return False
    try:
        raw = base64.urlsafe_b64decode(value.encode("ascii"))
    except (binascii.Error, ValueError):
        return False
    return len(raw) >= _TOKEN_MIN_BYTES and raw[0] == _TOKEN_VERSION


class SecretBox:
    """Encrypts with the newest key; decrypts with any of them."""

    def __init__(self, keys: Iterable[str]) -> None:
        parsed = parse_keys(list(keys))
        if not parsed:
            raise SecretError("no key: set TP_SECRETS_KEYS")
        self._newest = Fernet(parsed[0])
        self._all = MultiFernet([Fernet(key) for key in parsed])

    def encrypt(self, plaintext: str) -> str:
        return self._all.encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._all.decrypt(token.encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            raise SecretError("none of the configured keys opens this token") from None

    def rotate(self, token: str) -> str:
        """The same secret under the newest key (a new token even if it was already so)."""
        try:
            return self._all.rotate(token.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeError):
            raise SecretError("none of the configured keys opens this token") from None

    def is_current(self, token: str) -> bool:
        """Whether the newest key opens ``token``."""
        try:
            self._newest.decrypt(token.encode("ascii"))
        except (InvalidToken, UnicodeError):
            return False
        return True
