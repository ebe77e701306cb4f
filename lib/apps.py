from django.apps import AppConfig


class LibConfig(AppConfig):
    """An app only so that templates can ``{% load money %}``."""

    name = "lib"
    verbose_name = "Helpers"
