"""The chat's tests, chanlite's way: TestClient on the project's App.

``python manage.py test chat``
"""

from django.test import TransactionTestCase

from chanlite.contrib.django import get_asgi_application
from chanlite.testing import TestClient
from chat.models import Message


# --8<-- [start:test]
class ChatTests(TransactionTestCase):
    async def test_a_line_reaches_the_room_and_is_saved(self):
        async with (
            TestClient(get_asgi_application()) as client,
            client.websocket("/ws/chat/lobby/") as alice,
            client.websocket("/ws/chat/lobby/") as bob,
        ):
            await alice.send_json({"message": "hello"})
            self.assertEqual(await bob.receive_json(), {"message": "hello"})
            self.assertEqual(await alice.receive_json(), {"message": "hello"})
        self.assertEqual(await Message.objects.filter(room="lobby").acount(), 1)


# --8<-- [end:test]
