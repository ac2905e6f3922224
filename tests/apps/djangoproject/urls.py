from django.urls import path

from . import views

urlpatterns = [
    path("", views.index),
    path("form/", views.form),
    path("api/items/", views.items),
    path("error/", views.error),
    path("whoami/", views.whoami),
    path("stream/", views.stream),
]
