"""Rooms and messages."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.db import models

#: Room names are also part of group names, which allow only these characters.
ROOM_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")


class Room(models.Model):
    name = models.CharField(max_length=40, unique=True)

    def __str__(self) -> str:
        return self.name


class Message(models.Model):
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    text = models.TextField()
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    def as_event(self) -> dict[str, Any]:
        return {
            "id": self.pk,
            "user": self.author.get_username(),
            "text": self.text,
            "at": self.created.isoformat(),
        }
