from __future__ import annotations

from itertools import chain
from typing import Any

from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts.emails import lookalikes, normalize_email


class Command(BaseCommand):
    help = (
        "List stored email addresses that are not in their normalised form, and accounts whose "
        "addresses are look-alikes of one another (exits non-zero if there are any)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        addresses = list(
            chain(
                User.objects.filter(is_active=True).values_list("pk", "email"),
                EmailAddress.objects.filter(user__is_active=True).values_list("user_id", "email"),
            )
        )
        for user_id, address in sorted(set(addresses)):
            try:
                canonical = normalize_email(address)
            except ValidationError as exc:
                reason = " ".join(exc.messages)
                self.stdout.write(f"user {user_id}: {address!a} is refused: {reason}")
                continue
            if canonical != address:
                self.stdout.write(f"user {user_id}: {address!a} is stored as {canonical}")
        groups = lookalikes(addresses)
        for key, holders in sorted(groups.items()):
            spellings = "; ".join(
                f"user {user_id}: {', '.join(ascii(a) for a in sorted(stored))}"
                for user_id, stored in sorted(holders.items())
            )
            self.stdout.write(f"look-alikes of {key}: {spellings}")
        if groups:
            raise CommandError(f"{len(groups)} address(es) held by more than one account")
