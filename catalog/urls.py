from django.urls import path

from . import views

# Under /models/ (portal.urls). The comparison comes first: a model id may hold slashes.
urlpatterns = [
    path("compare/", views.compare, name="models_compare"),
    path("<path:model_id>/", views.model_detail, name="model_detail"),
]
