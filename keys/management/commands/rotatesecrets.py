from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from catalog.services import rotate_secrets
from keys import byok


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret (the operator's provider API keys and the keys accounts "
        "bring for providers) with the newest key of TP_SECRETS_KEYS and publish them again. "
        "List the new key first and keep the old ones after it until this has run."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        rotated, unopened = rotate_secrets()
        self.stdout.write(
            f"Re-encrypted {rotated} provider API keys with the newest key; catalog published"
        )
        own, own_unopened = byok.rotate_secrets()
        self.stdout.write(
            f"Re-encrypted {own} provider keys of accounts with the newest key; published"
        )
        if unopened or own_unopened:
            raise CommandError(
                "No key of TP_SECRETS_KEYS opens the stored API key of: "
                f"{', '.join([*unopened, *own_unopened])} (left as they are; add the key they "
                "were encrypted with after the new one and run this again)"
            )
