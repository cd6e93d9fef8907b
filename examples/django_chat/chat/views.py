"""Plain Django views: they run the same under WSGI (runserver) and under chanlite."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from chanlite.contrib.django import broadcast
from chat.models import ROOM_NAME, Room


class RoomForm(forms.Form):
    name = forms.RegexField(regex=ROOM_NAME.pattern, max_length=40, label="Room")


class AnnounceForm(forms.Form):
    text = forms.CharField(max_length=500)


def rooms(request: HttpRequest) -> HttpResponse:
    form = RoomForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        return redirect("room", name=form.cleaned_data["name"])
    context = {
        "rooms": Room.objects.order_by("name"),
        "form": form,
        "announce_form": AnnounceForm(),
    }
    return render(request, "chat/rooms.html", context)


@login_required
def room(request: HttpRequest, name: str) -> HttpResponse:
    if not ROOM_NAME.fullmatch(name):
        raise Http404("No such room")
    return render(request, "chat/room.html", {"room": name, "announce_form": AnnounceForm()})


@login_required
@require_POST
def announce(request: HttpRequest) -> HttpResponse:
    """A form POST that reaches every open socket, whichever process serves this view."""
    form = AnnounceForm(request.POST)
    if form.is_valid():
        broadcast(
            "announcements",
            json={
                "type": "announcement",
                "user": request.user.get_username(),
                "text": form.cleaned_data["text"],
            },
        )
        messages.success(request, "Announcement sent to every open room.")
    target = request.POST.get("next", "")
    safe = url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure())
    return redirect(target if safe else "rooms")
