"""``manage.py say ROOM TEXT``: post a line to a room from plain sync code.

One call through chanlite's sync sender; it reaches the Channels consumers and the
chanlite handlers in the room alike, in whichever process holds their sockets.
"""

# --8<-- [start:say]
from django.core.management.base import BaseCommand

from chanlite.contrib.django import group_send


class Command(BaseCommand):
    help = "Post a line to a chat room."

    def add_arguments(self, parser):
        parser.add_argument("room")
        parser.add_argument("text")

    def handle(self, room, text, **options):
        # Channels' way: async_to_sync(get_channel_layer().group_send)(group, event)
        group_send(f"chat_{room}", {"type": "chat.message", "message": text})


# --8<-- [end:say]
