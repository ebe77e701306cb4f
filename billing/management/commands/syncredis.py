from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand

from accounts.models import Account
from billing import sync
from billing.models import LedgerEntry
from catalog.sync import publish
from keys import byok
from keys.sync import push_all


class Command(BaseCommand):
    help = "Rebuild the relay's view in Redis (keys, catalog, balances) from PostgreSQL."

    def handle(self, *args: Any, **options: Any) -> None:
        accounts = 0
        for account in Account.objects.all().iterator():
            last = LedgerEntry.objects.filter(account=account).order_by("-seq").first()
            sync.force(
                account.pk,
                seq=last.seq if last else 0,
                balance=last.balance_after if last else Decimal(0),
            )
            accounts += 1
        keys = push_all()
        own = byok.push_all()
        publish()
        self.stdout.write(
            f"Synced {accounts} accounts, {keys} active keys, the provider keys of {own} "
            "accounts and the catalog"
        )
