from django.urls import path

from . import views

urlpatterns = [
    path("", views.key_list, name="keys"),
    path("<int:key_id>/", views.key_detail, name="key_detail"),
    path("<int:key_id>/revoke/", views.revoke, name="key_revoke"),
    path("<int:key_id>/rotate/", views.rotate, name="key_rotate"),
    path("management/", views.management_keys, name="management_keys"),
    path("providers/", views.provider_keys, name="provider_keys"),
]
