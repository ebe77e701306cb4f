from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from .models import ApiKey
from .services import revoke_key


@shared_task(name="keys.expire_keys", time_limit=120, soft_time_limit=100)
def expire_keys() -> int:
    """Expired keys are already refused by the relay (it reads the expiry); marking them
    revoked keeps the key list honest and drops their records from Redis."""
    expired = ApiKey.objects.filter(status=ApiKey.Status.ACTIVE, expires_at__lte=timezone.now())
    count = 0
    for key in expired.iterator():
        revoke_key(key=key, reason="expired")
        count += 1
    return count
