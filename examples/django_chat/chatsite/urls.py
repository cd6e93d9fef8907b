"""URLs: Django's login views and the chat pages."""

from __future__ import annotations

from django.urls import include, path

urlpatterns = [
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("chat.urls")),
]
