from django.urls import path, re_path

from . import api, leaks

urlpatterns = [
    path("keys/", api.keys, name="api_keys"),
    path("keys/<int:key_id>/", api.key, name="api_key"),
    path("keys/<int:key_id>/revoke/", api.revoke, name="api_key_revoke"),
    path("keys/<int:key_id>/rotate/", api.rotate, name="api_key_rotate"),
    path("provider-keys/", api.provider_keys, name="api_provider_keys"),
    path("provider-keys/<slug:provider>/", api.provider_key, name="api_provider_key"),
    path("secret-scanning/", leaks.report, name="secret_scanning"),
    # Last: any other path under the API. Only paths ending in a slash, so that a missing
    # slash is still redirected (APPEND_SLASH) rather than answered 404. [\s\S] and \Z: a path
    # may hold a newline (%0A), which "." and "$" would let through to Django's HTML 404.
    re_path(r"^(?:[\s\S]*/)?\Z", api.not_found),
]
