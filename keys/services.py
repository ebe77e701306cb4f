from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from billing.models import Account

from . import format as keyformat
from . import sync
from .models import ApiKey


def digest(secret: str) -> str:
    return keyformat.digest(secret, settings.TP_KEY_PEPPER)


@transaction.atomic
def issue_key(*, account: Account, name: str) -> tuple[ApiKey, str]:
    """Create a key; the secret is returned to be shown once and is never stored."""
    secret = keyformat.generate()
    key = ApiKey.objects.create(
        account=account,
        name=name.strip()[:100] or "default",
        digest=digest(secret),
        prefix=keyformat.display_prefix(secret),
        last4=keyformat.last_four(secret),
    )
    transaction.on_commit(lambda: sync.push(key))
    return key, secret


@transaction.atomic
def revoke_key(*, key: ApiKey) -> ApiKey:
    key = ApiKey.objects.select_for_update().get(pk=key.pk)
    if key.is_active:
        key.status = ApiKey.Status.REVOKED
        key.revoked_at = timezone.now()
        key.save(update_fields=["status", "revoked_at"])
    # Pushed even when already revoked: repeating a revoke heals a missed eviction.
    transaction.on_commit(lambda: sync.push(key))
    return key


def find(identifier: str) -> ApiKey | None:
    """A key by its whole secret or by its displayed prefix (unique among active keys)."""
    identifier = identifier.strip()
    if keyformat.is_well_formed(identifier):
        return ApiKey.objects.filter(digest=digest(identifier)).first()
    prefix = identifier.split("…")[0].rstrip(".")
    matches = list(ApiKey.objects.filter(prefix=prefix)[:2])
    return matches[0] if len(matches) == 1 else None
