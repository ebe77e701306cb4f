from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"

    def ready(self) -> None:
        # Receivers: a new account's place in the relay's view, keys' spend-cap counters.
        from . import accounts, caps  # noqa: F401
