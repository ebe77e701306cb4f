"""Bring your own key (BYOK): an account's own provider keys (``core.byok``).

Every write goes through :func:`save_credential` and :func:`remove_credential`; the pages, the
API and the admin call them. Each checks the key with a cheap call first (``GET <base URL>/
models`` with that key, the base URL being the operator's for that provider: never one a
client gives), keeps it encrypted like the operator's provider keys, records an audit event,
and after commit publishes the account's credentials to the relays (still encrypted), with an
eviction that reaches every relay within a second.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson
import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_variables

from accounts import audit, roles
from accounts.models import Account, User
from catalog.models import Provider
from catalog.sync import provider_endpoint
from core import byok, state
from core.secrets import SecretError, looks_encrypted
from lib.redis import client, evict
from lib.secrets import box, encrypt

from .models import ProviderCredential

log = logging.getLogger(__name__)

MAX_KEY_LENGTH = 500
ANTHROPIC_VERSION = "2023-06-01"


def can_manage(user: Any, account: Account) -> bool:
    """Whether ``user`` may see, add, replace and remove ``account``'s provider keys: a
    personal account's user, an organization's owner and admins."""
    return roles.can(user, account, roles.KEYS_ALL)


class KeyRefused(ValueError):
    """The key is not saved: ``message`` says why (translated; never the key)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@sensitive_variables("value", "key")
def clean_key(value: str) -> str:
    """A provider key as typed: one line of printable ASCII without spaces (what an HTTP
    header can carry); raises :class:`KeyRefused` otherwise."""
    key = value.strip()
    if not key:
        raise KeyRefused(_("Enter the provider's API key."))
    if len(key) > MAX_KEY_LENGTH:
        raise KeyRefused(
            _("An API key has at most %(count)d characters.") % {"count": MAX_KEY_LENGTH}
        )
    if not all("!" <= ch <= "~" for ch in key):
        raise KeyRefused(_("An API key is one line of printable characters, without spaces."))
    return key


def selectable_providers() -> Any:
    """The providers an account may bring a key for: those the catalog lists."""
    return Provider.objects.filter(active=True).order_by("name")


@dataclass(frozen=True)
class Checked:
    base_url: str


@sensitive_variables("key", "headers")
def check_key(provider: Provider, key: str) -> Checked:
    """Asks the provider whether it takes ``key``: ``GET <base URL>/models`` at the operator's
    base URL for it. Raises :class:`KeyRefused` unless the answer is a success; what the
    provider says is never repeated (it may quote the key)."""
    base_url, _token, _demo = provider_endpoint(provider)
    base_url = base_url.rstrip("/")
    if provider.api_shape == Provider.Shape.ANTHROPIC:
        headers = {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION}
    else:
        headers = {"Authorization": f"Bearer {key}"}
    try:
        response = requests.get(
            f"{base_url}/models",
            headers=headers,
            timeout=settings.TP_BYOK_CHECK_TIMEOUT,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        log.info("checking a key for %s: %s", provider.slug, type(exc).__name__)
        raise KeyRefused(
            _("%(provider)s could not be reached to check the key; try again later.")
            % {"provider": provider.name}
        ) from None
    status = response.status_code
    response.close()
    if status in (401, 403):
        raise KeyRefused(
            _("%(provider)s refused this key (HTTP %(status)d): check that it is right and active.")
            % {"provider": provider.name, "status": status}
        )
    if not 200 <= status < 300:
        raise KeyRefused(
            _("%(provider)s answered HTTP %(status)d to the check of the key; try again later.")
            % {"provider": provider.name, "status": status}
        )
    return Checked(base_url)


def _target(credential: ProviderCredential) -> str:
    """How the audit log names a credential: its provider and last four, never the key."""
    return f"{credential.provider.name} ({credential.masked})"


@sensitive_variables("api_key", "key")
def save_credential(
    *,
    account: Account,
    provider: Provider,
    api_key: str,
    mode: str,
    actor: User | None = None,
    network: str = "",
) -> tuple[ProviderCredential, bool]:
    """Checks ``api_key`` with the provider and stores it (encrypted) as the account's key for
    ``provider``, replacing the one it had; returns (the credential, whether it replaced one).
    Raises :class:`KeyRefused`, and stores nothing, for a key that is malformed or refused."""
    if mode not in byok.MODES:
        raise KeyRefused(_("Choose a mode."))
    if not provider.active:
        raise KeyRefused(_("This provider is not offered."))
    key = clean_key(api_key)
    check_key(provider, key)  # outside the transaction: no lock waits on the provider
    with transaction.atomic():
        Account.objects.select_for_update().filter(pk=account.pk).first()
        credential = ProviderCredential.objects.filter(account=account, provider=provider).first()
        replaced = credential is not None
        if credential is None:
            credential = ProviderCredential(account=account, provider=provider)
        credential.api_key = encrypt(key)
        credential.last4 = byok.last_four(key)
        credential.mode = mode
        credential.checked_at = timezone.now()
        credential.added_by = actor
        credential.save()
        audit.record(
            account=account,
            action=audit.Action.BYOK_REPLACED if replaced else audit.Action.BYOK_ADDED,
            actor=actor,
            network=network,
            target=_target(credential),
            details={"provider": provider.slug, "mode": mode},
        )
        _push_on_commit(account.pk)
    return credential, replaced


def remove_credential(
    *, credential: ProviderCredential, actor: User | None = None, network: str = ""
) -> None:
    """Forgets the key; every relay stops using it within a second."""
    with transaction.atomic():
        account_id = credential.account_id
        target = _target(credential)
        slug = credential.provider.slug
        credential.delete()
        audit.record(
            account=credential.account,
            action=audit.Action.BYOK_REMOVED,
            actor=actor,
            network=network,
            target=target,
            details={"provider": slug},
        )
        _push_on_commit(account_id)


# ---- the relays' view ----------------------------------------------------------------------


def record(account_id: int) -> dict[str, Any]:
    """The account's credentials as the relay reads them (``core.byok``): still encrypted."""
    rows = ProviderCredential.objects.filter(
        account_id=account_id, provider__active=True
    ).select_related("provider")
    return {
        row.provider.slug: {"id": row.pk, "mode": row.mode, "key_encrypted": row.api_key}
        for row in rows
    }


def push(account_id: int) -> None:
    """Writes the account's credentials to Redis (or deletes them when it has none) and tells
    every relay to drop its copy."""
    data = record(account_id)
    r = client()
    if data:
        r.set(state.byok(account_id), orjson.dumps(data))
    else:
        r.delete(state.byok(account_id))
    evict(f"byok:{account_id}")


def _push_on_commit(account_id: int) -> None:
    transaction.on_commit(lambda: push(account_id))


def push_all() -> int:
    """Every account's credentials written again (``syncredis``), those of accounts that have
    none any more deleted; returns how many accounts have some."""
    r = client()
    accounts = set(
        ProviderCredential.objects.filter(provider__active=True).values_list(
            "account_id", flat=True
        )
    )
    for account_id in sorted(accounts):
        data = record(account_id)
        r.set(state.byok(account_id), orjson.dumps(data))
    stale = [
        name
        for name in r.scan_iter(match=state.BYOK_PATTERN, count=1000)
        if int(state.account_of_hold_times(name)) not in accounts
    ]
    for name in stale:
        r.delete(name)
    evict("*")
    return len(accounts)


def rotate_secrets() -> tuple[int, list[str]]:
    """Every stored provider key of every account re-encrypted under the newest key of
    TP_SECRETS_KEYS (the older keys still listed, to open them), then published again.
    Returns how many were re-encrypted, and which (by id) no configured key opens."""
    rotated, unopened = 0, []
    with transaction.atomic():
        rows = ProviderCredential.objects.select_for_update().order_by("pk")
        for credential in rows:
            token = credential.api_key
            try:
                new = box().rotate(token) if looks_encrypted(token) else encrypt(token)
            except SecretError:
                unopened.append(f"credential {credential.pk}")
                continue
            ProviderCredential.objects.filter(pk=credential.pk).update(api_key=new)
            rotated += 1
        transaction.on_commit(push_all)
    return rotated, unopened
