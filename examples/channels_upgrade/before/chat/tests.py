"""The chat's tests, Channels' way: WebsocketCommunicator on the ASGI application.

``python manage.py test chat``
"""

from channels.testing import WebsocketCommunicator
from django.test import TransactionTestCase
from mysite.asgi import application

from chat.models import Message


# --8<-- [start:test]
class ChatTests(TransactionTestCase):
    async def test_a_line_reaches_the_room_and_is_saved(self):
        origin = [(b"origin", b"http://localhost")]  # AllowedHostsOriginValidator wants one
        alice = WebsocketCommunicator(application, "/ws/chat/lobby/", headers=origin)
        bob = WebsocketCommunicator(application, "/ws/chat/lobby/", headers=origin)
        self.assertTrue((await alice.connect())[0])
        self.assertTrue((await bob.connect())[0])
        await alice.send_json_to({"message": "hello"})
        self.assertEqual(await bob.receive_json_from(), {"message": "hello"})
        self.assertEqual(await alice.receive_json_from(), {"message": "hello"})
        await alice.disconnect()
        await bob.disconnect()
        self.assertEqual(await Message.objects.filter(room="lobby").acount(), 1)


# --8<-- [end:test]
