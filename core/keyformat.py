"""The key format: pure functions shared by the portal and the relay (no Django here).

A key is ``tp-sk-`` + 32 random base62 characters (about 190 bits) + a 6-character base62
CRC32 of the random part. The checksum lets the relay reject a typo or a garbled key without
a lookup, and lets secret scanners recognise real keys. Only HMAC-SHA256(pepper, key) and a
display prefix/last four are ever stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import zlib

PREFIX = "tp-sk-"
# Management keys can manage API keys through the JSON API but cannot call models; their own
# prefix keeps them from ever being accepted by the relay.
MANAGEMENT_PREFIX = "tp-mk-"
ALPHABET = string.digits + string.ascii_letters  # base62
RANDOM_LEN = 32
CHECKSUM_LEN = 6
KEY_LEN = len(PREFIX) + RANDOM_LEN + CHECKSUM_LEN
DISPLAY_RANDOM_CHARS = 4


def _base62(number: int, width: int) -> str:
    digits = []
    while number:
        number, rest = divmod(number, 62)
        digits.append(ALPHABET[rest])
    return "".join(reversed(digits)).rjust(width, "0")


def checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), CHECKSUM_LEN)


def generate(prefix: str = PREFIX) -> str:
    body = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LEN))
    return prefix + body + checksum(body)


def is_well_formed(key: str, prefix: str = PREFIX) -> bool:
    """Shape and checksum only: cheap enough to run before any lookup."""
    # compare_digest below raises on non-ASCII text: such a key is simply not one of ours.
    if len(key) != KEY_LEN or not key.isascii() or not key.startswith(prefix):
        return False
    body = key[len(prefix) : len(prefix) + RANDOM_LEN]
    tail = key[len(prefix) + RANDOM_LEN :]
    if not all(c in ALPHABET for c in body):
        return False
    return hmac.compare_digest(checksum(body), tail)


def digest(key: str, pepper: bytes) -> str:
    """The only form in which a key is stored or looked up."""
    return hmac.new(pepper, key.encode("ascii"), hashlib.sha256).hexdigest()


def display_prefix(key: str) -> str:
    return key[: len(PREFIX) + DISPLAY_RANDOM_CHARS]


def last_four(key: str) -> str:
    return key[-4:]


def masked(prefix: str, last4: str) -> str:
    return f"{prefix}…{last4}"
