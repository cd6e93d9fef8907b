from __future__ import annotations

from django.urls import path

from chat import views

urlpatterns = [
    path("", views.rooms, name="rooms"),
    path("room/<slug:name>/", views.room, name="room"),
    path("announce/", views.announce, name="announce"),
]
