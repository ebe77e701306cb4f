from django.apps import AppConfig


class KeysConfig(AppConfig):
    name = "keys"

    def ready(self) -> None:
        # Receivers: a user's deactivation suspends their keys on the relays.
        from . import receivers  # noqa: F401
