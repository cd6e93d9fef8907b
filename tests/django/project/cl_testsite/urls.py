"""Django views of the test site: a page, and a view that pushes to sockets."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from chanlite.contrib.django import broadcast, group_send


def page(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"django page for {request.user.get_username() or 'anonymous'}")


@csrf_exempt
def notify(request: HttpRequest) -> JsonResponse:
    text = request.POST.get("text", "")
    group_send("watchers", {"type": "notice", "text": text})
    broadcast("watchers", json={"broadcast": text})
    return JsonResponse({"sent": text})


def change(request: HttpRequest) -> JsonResponse:
    """A Django view that changes state: Django's CSRF check guards it."""
    return JsonResponse({"changed": request.user.get_username()})


urlpatterns = [
    path("change/", change),
    path("page/", page),
    path("notify/", notify),
]
