from __future__ import annotations

from typing import Any

from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from accounts.emails import normalize_email


class Command(BaseCommand):
    help = "Create a verified account (email + password)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email")
        parser.add_argument("--password", required=True)
        parser.add_argument("--staff", action="store_true", help="Also give admin access.")

    @transaction.atomic
    def handle(self, *args: Any, email: str, password: str, staff: bool, **options: Any) -> None:
        User = get_user_model()
        try:
            email = normalize_email(email)
        except ValidationError as exc:
            raise CommandError(f"{email!a}: {' '.join(exc.messages)}") from None
        # Another account's secondary address counts too: one address, one account.
        if (
            User.objects.filter(email__iexact=email).exists()
            or EmailAddress.objects.filter(email__iexact=email).exists()
        ):
            raise CommandError(f"{email} already exists")
        if staff:
            user = User.objects.create_superuser(email=email, password=password)
        else:
            user = User.objects.create_user(email=email, password=password)
        EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
        self.stdout.write(f"Created {email}")
