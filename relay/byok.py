"""An account's own provider keys (BYOK, :mod:`core.byok`) in the relay: read from Redis,
opened in memory, and put in front of (or in place of) the operator's routes.

A route served with the account's key is a copy of the operator's route (the same base URL,
upstream model and price: the URL is never the client's) whose ``api_key`` is the account's
and whose ``byok`` is true. Such a route is charged the fee (``TP_BYOK_FEE_PERCENT`` of its
price), and its failures are the account's key's, never the route's: they count in no
circuit breaker and no route figures.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from core import byok
from core.secrets import SecretBox, SecretError

log = logging.getLogger("relay")

JSON = dict[str, Any]
Try = tuple[JSON, JSON]  # (model, route)


class Credential:
    __slots__ = ("id", "key", "mode")

    def __init__(self, id: int, mode: str, key: str) -> None:
        self.id = id
        self.mode = mode
        self.key = key


Credentials = dict[str, Credential]  # provider slug -> the account's credential


def open_record(raw: bytes | str | None, box: SecretBox | None, account: int) -> Credentials:
    """The credentials of an account's record (``state.byok``), each key decrypted; one that no
    configured key opens is left out and logged by account and provider, never by value."""
    if not raw:
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        log.error("the provider keys of account %s are not valid JSON", account)
        return {}
    out: Credentials = {}
    for slug, entry in data.items() if isinstance(data, dict) else ():
        if not isinstance(entry, dict) or entry.get("mode") not in byok.MODES:
            continue
        token = str(entry.get("key_encrypted") or "")
        try:
            if box is None or not token:
                raise SecretError("no key")
            key = box.decrypt(token)
        except SecretError:
            log.error(
                "account %s's key for provider %s cannot be decrypted: is the key it was "
                "encrypted with in TP_SECRETS_KEYS?",
                account,
                slug,
            )
            continue
        out[str(slug)] = Credential(int(entry.get("id") or 0), str(entry["mode"]), key)
    return out


def arrange(tries: list[Try], credentials: Credentials) -> list[Try] | None:
    """The tries with the account's keys: for each try whose provider has one, a copy served
    with it, all of them first in the order given; then the operator's tries, unless one of
    the credentials used is ``always`` (then the account's keys only). None when no
    credential applies (the request keeps the operator's routes)."""
    own: list[Try] = []
    only_own = False
    for model, route in tries:
        credential = credentials.get(str(route.get("provider")))
        if credential is None:
            continue
        own.append((model, {**route, "api_key": credential.key, "byok": True, "demo": False}))
        only_own = only_own or credential.mode == byok.ALWAYS
    if not own:
        return None
    return own if only_own else own + tries
