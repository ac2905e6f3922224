from django.contrib import admin
from django.urls import path

from . import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("async/", views.async_view),
    path("async/<int:n>/", views.async_view),
    path("echo/", views.echo),
]
