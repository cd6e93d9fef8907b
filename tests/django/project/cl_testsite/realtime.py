"""The chanlite App of the test site."""

from __future__ import annotations

import threading
import traceback
from typing import Any

from django.contrib.auth import authenticate
from django.contrib.auth.models import Group, User
from django.views.decorators.csrf import csrf_exempt

from chanlite import App, Request, WebSocket
from chanlite.contrib.django import db, login, logout

app = App()

#: Set by a test to let the slow ORM call finish.
release_slow = threading.Event()


def describe(user: Any) -> dict[str, Any]:
    return {"user": user.get_username(), "authenticated": bool(user.is_authenticated)}


@app.websocket("/ws/whoami")
async def whoami(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_json({**describe(ws.user), "session_key": ws.session.session_key})


@app.websocket("/ws/echo")
async def echo(ws: WebSocket) -> None:
    await ws.accept()
    async for text in ws.iter_text():
        await ws.send_text(text)


@db
def slow_count() -> int:
    # Holds the bridge's thread until the test says so.
    if not release_slow.wait(10):
        raise TimeoutError("release_slow was never set")
    return int(User.objects.count())


@app.websocket("/ws/slow")
async def slow(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_json({"started": True})
    await ws.send_json({"count": await slow_count()})


def missing_user() -> Any:
    return User.objects.get(username="no-such-user")


@app.websocket("/ws/error")
async def error(ws: WebSocket) -> None:
    await ws.accept()
    try:
        await db(missing_user)
    except User.DoesNotExist as exc:
        frames = [frame.name for frame in traceback.extract_tb(exc.__traceback__)]
        await ws.send_json({"error": type(exc).__name__, "frames": frames})


@app.websocket("/ws/login")
async def login_socket(ws: WebSocket) -> None:
    """Log in before accepting (cookie on the handshake), or after, from a message."""
    early = ws.query_params.get("early")
    if early:
        user = await db(authenticate, username=early, password="pw")
        await login(ws, user)
        await ws.accept()
    else:
        await ws.accept()
        credentials = await ws.receive_json()
        user = await db(authenticate, **credentials)
        if user is None:
            await ws.send_json({"ok": False})
            return
        await login(ws, user)
    await ws.send_json({**describe(ws.user), "session_key": ws.session.session_key})
    if await ws.receive_text() == "logout":
        await logout(ws)
        await ws.send_json(describe(ws.user))


@app.websocket("/ws/watch")
async def watch(ws: WebSocket) -> None:
    await ws.accept()
    await ws.join("watchers")
    await ws.send_json({"joined": True})
    async for _ in ws.iter_text():
        pass


@watch.on("notice")
async def notice(ws: WebSocket, event: dict[str, Any]) -> None:
    await ws.send_json({"notice": event["text"]})


@db
def add_group(name: str) -> int:
    from django.db import transaction

    with transaction.atomic():
        count = Group.objects.count()  # read, then write: the lock upgrade case
        Group.objects.create(name=name)
    return int(count)


@app.websocket("/ws/write")
async def write(ws: WebSocket) -> None:
    await ws.accept()
    async for name in ws.iter_text():
        await add_group(name)
        await ws.send_text("ok")


@app.http("/api/me")
async def me(request: Request) -> dict[str, Any]:
    return describe(request.scope["user"])


#: Requests the unsafe routes below ran (a refused request must never get here).
ran: list[str] = []


@app.http("/api/note", methods=["POST", "PUT", "DELETE"])
async def note(request: Request) -> dict[str, Any]:
    """A state-changing route in the user's name: CSRF-protected like a Django view."""
    ran.append("note")
    body = await request.body()
    form = await request.form()
    return {**describe(request.scope["user"]), "size": len(body), "text": form.get("text")}


@app.http("/api/hook", methods=["POST"])
@csrf_exempt
def hook(request: Request) -> dict[str, Any]:
    """A plain def route that opts out of the CSRF check (a webhook, say)."""
    ran.append("hook")
    return {"hook": True}


@app.http("/api/ahook", methods=["POST"])
@csrf_exempt
async def ahook(request: Request) -> dict[str, Any]:
    ran.append("ahook")
    return {"hook": len(await request.body())}
