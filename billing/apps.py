from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"

    def ready(self) -> None:
        # Receivers: a new account's place in the relay's view, keys' spend-cap counters, and
        # the balance alerts after a credit or a debit (billing.signals).
        from . import accounts, alerts, caps  # noqa: F401
