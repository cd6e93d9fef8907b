from django.urls import re_path

from chat import consumers

websocket_urlpatterns = [
    re_path(r"^ws/chat/(?P<room_name>\w+)/$", consumers.ChatConsumer.as_asgi()),
    re_path(r"^ws/sync-chat/(?P<room_name>\w+)/$", consumers.SyncChatConsumer.as_asgi()),
    re_path(r"^ws/announcements/$", consumers.AnnouncementsConsumer.as_asgi()),
]
http_urlpatterns = [
    re_path(r"^chat/(?P<room_name>\w+)/recent/$", consumers.RecentMessagesConsumer.as_asgi()),
]
