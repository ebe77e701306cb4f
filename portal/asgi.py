"""The portal as an ASGI application, served by ``python -m serving portal`` (uvicorn): reading
a request never takes a thread, so slow clients cannot starve the views (which Django runs in
threads of their own)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

application = get_asgi_application()
