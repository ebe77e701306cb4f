"""Secrets at rest in the database (provider API keys): encrypted with ``TP_SECRETS_KEYS``.

An :class:`EncryptedField` holds a Fernet token, in the database and in Python alike: the portal
never needs the plain value back (the relay decrypts what it sends upstream), so nothing here
decrypts on load. A plain value assigned to the field is encrypted when it is saved.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django import forms
from django.conf import settings
from django.db import models

from core.secrets import SecretBox, looks_encrypted


@cache
def _box(keys: tuple[str, ...]) -> SecretBox:
    return SecretBox(keys)


def box() -> SecretBox:
    """The keys of the settings (newest first); read each time, so a test may swap them."""
    return _box(tuple(settings.TP_SECRETS_KEYS))


def encrypt(plaintext: str) -> str:
    return box().encrypt(plaintext)


class EncryptedField(models.TextField):
    """A secret kept as a Fernet token. Lookups by plain value can never match (each
    encryption differs), which is the point; test for emptiness only."""

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value and not looks_encrypted(value):
            value = encrypt(value)
        return value

    def pre_save(self, model_instance: models.Model, add: bool) -> Any:
        value = getattr(model_instance, self.attname)
        if value and not looks_encrypted(value):
            value = encrypt(value)
            setattr(model_instance, self.attname, value)
        return value

    def formfield(self, **kwargs: Any) -> Any:
        # Write-only wherever a form shows it: the stored value is never rendered back.
        kwargs.setdefault("widget", forms.PasswordInput(render_value=False))
        return super().formfield(**kwargs)
