from django.apps import AppConfig


class LibConfig(AppConfig):
    """An app so that templates can ``{% load money %}``, and for the Redis settings' check."""

    name = "lib"
    verbose_name = "Helpers"

    def ready(self) -> None:
        from . import redis  # noqa: F401 - registers its system check
