from __future__ import annotations

from django.urls import re_path

from compat_chat import consumers

websocket_urlpatterns = [
    re_path(r"^ws/chat/(?P<room_name>\w+)/$", consumers.ChatConsumer.as_asgi()),
    re_path(r"^ws/sync-chat/(?P<room_name>\w+)/$", consumers.SyncChatConsumer.as_asgi()),
    re_path(r"^ws/json-chat/(?P<room_name>\w+)/$", consumers.JsonChatConsumer.as_asgi()),
]
http_urlpatterns = [
    re_path(r"^notify/(?P<room_name>\w+)/$", consumers.NotifyConsumer.as_asgi()),
]
