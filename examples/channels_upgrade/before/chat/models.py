from django.db import models


class Message(models.Model):
    """A line posted in a room."""

    room = models.CharField(max_length=100, db_index=True)
    text = models.TextField()
    created = models.DateTimeField(auto_now_add=True)

    def as_dict(self) -> dict[str, str]:
        return {"room": self.room, "message": self.text}
