"""Phoenix's long-poll transport, reachable from every worker through the layer.

A session lives in the process that created it (on the first ``GET`` without a token): it
is a :class:`~chanlite.hub.Receiver` of that process's hub, with a layer channel of its own,
so topic broadcasts reach it like any socket. Its token names that channel, a random
nonce, and how many messages the client has received. A ``GET`` or ``POST`` may land on
any worker: the worker that owns the session answers it directly; another one relays it
to the session over the layer (``phx.lp.poll`` / ``phx.lp.post``) and waits for the answer
on a reply channel of its own.

Nothing is lost when a response is: the session keeps each message until a later poll's
token says the client received it, and a poll answers with every message not yet
acknowledged. A session that no poll has touched for 1.5 windows ends (its client gets
410 and rejoins, as phoenix.js does).

Answers, as Phoenix gives them (always HTTP 200, the status in the JSON body):
``{"status": 410, "token": ...}`` a new session; ``200`` with messages; ``204`` none within
the window; ``403`` refused by ``connect``; ``410`` for a token whose session is gone.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from chanlite.asgi_websocket import peer
from chanlite.broadcast import BROADCAST
from chanlite.layers.base import Event
from chanlite.layers.streams import PRESENCE_DIFF
from chanlite.responses import JSONResponse, PlainTextResponse, Response
from chanlite.topics.connection import Connection, Endpoint
from chanlite.topics.streams import MESSAGE

if TYPE_CHECKING:
    from chanlite.requests import Request

__all__ = ["LongPoll", "Session"]

logger = logging.getLogger("chanlite.topics.longpoll")

#: How long a worker waits for another worker's session to answer at all before taking
#: it for gone (Phoenix's ``pubsub_timeout_ms``).
ANSWER_TIMEOUT = 2.0
#: Most messages in one POST body (Phoenix's batch limit).
MAX_BATCH = 100
POLL = "phx.lp.poll"
POST = "phx.lp.post"
ANSWER = "phx.lp.answer"
HEADERS = {"cache-control": "no-store", "access-control-allow-origin": "*"}


def make_token(channel: str, nonce: str, ack: int) -> str:
    raw = json.dumps([channel, nonce, ack], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def read_token(token: str) -> tuple[str, str, int] | None:
    """``(channel, nonce, ack)`` from a token, or None for anything else."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        channel, nonce, ack = json.loads(raw)
    except (ValueError, TypeError, binascii.Error):
        return None
    if not (isinstance(channel, str) and isinstance(nonce, str) and isinstance(ack, int)):
        return None
    return channel, nonce, ack


class Session:
    """One long-poll client: a connection whose messages wait for the next poll."""

    frame_writer: Callable[[bytes], bool] | None = None  # broadcasts come as events
    events_pending = False

    def __init__(self, longpoll: LongPoll, params: dict[str, str], client: str) -> None:
        self.longpoll = longpoll
        hub = longpoll.endpoint.hub
        self.hub = hub
        self.peer = client
        self.nonce = secrets.token_hex(16)
        self.channel_name = hub.register(self)
        self.connection = Connection(longpoll.endpoint, self, params)
        self.messages: list[str] = []  # not yet acknowledged; the first has number acked + 1
        self.acked = 0
        self.closed = False
        self.last_poll = time.monotonic()
        self._waiter: Callable[[], None] | None = None
        self._lock = asyncio.Lock()
        self._reaper: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._reaper = self.hub.spawn(self._reap())

    @property
    def token(self) -> str:
        return make_token(self.channel_name, self.nonce, self.acked + len(self.messages))

    # -- the Transport side (what the connection writes) ---------------------------------

    async def send(self, messages: list[str | bytes]) -> None:
        self._append(messages)

    async def close(self, code: int, reason: str) -> None:
        logger.info("Long-poll session of %s closed: %d %s", self.peer, code, reason)
        await self.end()

    def _append(self, messages: list[str | bytes]) -> None:
        for message in messages:
            if isinstance(message, str):
                self.messages.append(message)
            else:
                # phoenix.js reads long-poll messages as JSON text only.
                self.hub.stats.events_undeliverable += 1
                logger.warning("Binary message to long-poll client %s dropped", self.peer)
        waiter, self._waiter = self._waiter, None
        if waiter is not None and self.messages:
            waiter()

    # -- the hub's Receiver side ----------------------------------------------------------

    def push_event(self, event: Event) -> bool:
        kind = event.get("type")
        if kind == BROADCAST:
            text = event.get("text")
            self._append([text if text is not None else bytes(event.get("bytes") or b"")])
        elif kind == MESSAGE:
            self.hub.spawn(self.connection.on_message(event))
        elif kind == PRESENCE_DIFF:
            self.hub.spawn(self.connection.on_presence_diff(event))
        elif kind == POLL:
            self._remote_poll(event)
        elif kind == POST:
            self.hub.spawn(self._remote_post(event))
        else:
            self.hub.stats.events_unhandled += 1
            logger.warning("Long-poll session got an unknown %r event; dropped", kind)
        return True

    async def wait_for_room(self, timeout: float) -> None:
        """Never needed: :meth:`push_event` always takes the event."""

    # -- polls and posts --------------------------------------------------------------------

    def acknowledge(self, ack: int) -> None:
        """The client has every message up to number *ack*: forget them."""
        self.last_poll = time.monotonic()
        done = min(max(ack - self.acked, 0), len(self.messages))
        if done:
            del self.messages[:done]
            self.acked += done

    def answer(self) -> dict[str, Any]:
        status = 200 if self.messages else 204
        return {"status": status, "token": self.token, "messages": list(self.messages)}

    async def poll(self, ack: int, window: float) -> dict[str, Any]:
        """A poll from this process: messages now, or when some come, or 204 at *window*."""
        self.acknowledge(ack)
        if not self.messages and not self.closed:
            ready = asyncio.get_running_loop().create_future()

            def wake() -> None:
                if not ready.done():
                    ready.set_result(None)

            self._waiter = wake
            try:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(ready, window)
            finally:
                if self._waiter is wake:
                    self._waiter = None
                self.last_poll = time.monotonic()
        if self.closed:
            return {"status": 410}
        return self.answer()

    def _remote_poll(self, event: Event) -> None:
        reply_to, rid = event.get("reply_to"), event.get("rid")
        if event.get("nonce") != self.nonce or not isinstance(reply_to, str) or self.closed:
            self._reply(reply_to, rid, {"status": 410})
            return
        self.acknowledge(int(event.get("ack") or 0))
        if self.messages:
            self._reply(reply_to, rid, self.answer())
            return
        self._reply(reply_to, rid, {"status": 102})  # alive: wait for messages

        def wake() -> None:
            self.last_poll = time.monotonic()
            self._reply(reply_to, rid, self.answer())

        self._waiter = wake

    async def post(self, messages: list[str | bytes]) -> int:
        """Hand the client's messages to the connection in order; the POST's status."""
        async with self._lock:
            for message in messages:
                if self.closed:
                    return 410
                if not await self.connection.receive(message):
                    return 200  # the connection closed itself for this message (logged)
        return 200

    async def _remote_post(self, event: Event) -> None:
        reply_to, rid = event.get("reply_to"), event.get("rid")
        messages = event.get("messages")
        if event.get("nonce") != self.nonce or self.closed or not isinstance(messages, list):
            self._reply(reply_to, rid, {"status": 410})
            return
        status = await self.post(messages)
        self._reply(reply_to, rid, {"status": status})

    def _reply(self, reply_to: Any, rid: Any, answer: dict[str, Any]) -> None:
        if isinstance(reply_to, str):
            event = {"type": ANSWER, "rid": rid, "answer": answer}
            self.hub.spawn(self.hub.send(reply_to, event))

    # -- the end ------------------------------------------------------------------------------

    async def _reap(self) -> None:
        window = self.longpoll.window
        while not self.closed:
            await asyncio.sleep(window / 4)
            if self._waiter is None and time.monotonic() - self.last_poll > window * 1.5:
                logger.debug("Long-poll session of %s expired", self.peer)
                await self.end()

    async def end(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.hub.unregister(self.channel_name)
        self.longpoll.sessions.pop(self.channel_name, None)
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter()
        await self.connection.terminate()
        reaper = self._reaper
        if reaper is not None and reaper is not asyncio.current_task():
            reaper.cancel()


class _Answer:
    """A reply channel for one relayed request: the hub hands it the session's answers."""

    frame_writer: Callable[[bytes], bool] | None = None
    events_pending = False

    def __init__(self) -> None:
        self.answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def push_event(self, event: Event) -> bool:
        answer = event.get("answer")
        if event.get("type") == ANSWER and isinstance(answer, dict):
            self.answers.put_nowait(answer)
        return True

    async def wait_for_room(self, timeout: float) -> None:
        """Never needed."""


class SocketEndpoint(Endpoint, Protocol):
    """What long-poll needs of its socket endpoint (a :class:`~chanlite.topics.TopicSocket`)."""

    @property
    def longpoll_window(self) -> float:
        """Seconds a poll waits for messages before answering 204."""

    async def authorize(self, connection: Connection) -> bool:
        """Run the socket's ``connect``: True when the client is accepted."""


class LongPoll:
    """The ``/longpoll`` HTTP endpoint of one :class:`~chanlite.topics.TopicSocket`."""

    def __init__(self, endpoint: SocketEndpoint) -> None:
        self.endpoint = endpoint
        self.window = endpoint.longpoll_window
        self.sessions: dict[str, Session] = {}

    async def handle(self, request: Request) -> Response:
        """Serve one long-poll request (GET polls, POST sends, OPTIONS is CORS)."""
        if request.method == "OPTIONS":
            allow = request.headers.get("access-control-request-headers", "")
            return PlainTextResponse(
                "",
                headers={
                    **HEADERS,
                    "access-control-allow-headers": allow,
                    "access-control-allow-methods": "get, post, options",
                    "access-control-max-age": "3600",
                },
            )
        token = request.headers.get("x-phoenix-longpoll-token") or request.query_params.get("token")
        found = read_token(token) if token else None
        if request.method == "GET":
            if found is not None:
                answer = await _unless_gone(request, self._poll(*found))
                if answer is not None:
                    return _json(answer)
            return _json(await self._new_session(request))
        if found is None:
            return _json({"status": 410})
        try:
            messages = _batch(request.headers.get("content-type", ""), await request.body())
        except ValueError as exc:
            logger.info("Bad long-poll POST from %s: %s", peer(request.scope), exc)
            return PlainTextResponse(str(exc), 400, headers=HEADERS)
        return _json({"status": await self._post(*found, messages)})

    async def _new_session(self, request: Request) -> dict[str, Any]:
        session = Session(self, dict(request.query_params), peer(request.scope))
        auth = request.headers.get("x-phoenix-authtoken")
        if auth:
            session.connection.assigns["auth_token"] = auth
        if not await self.endpoint.authorize(session.connection):
            session.closed = True
            self.endpoint.hub.unregister(session.channel_name)
            return {"status": 403}
        self.sessions[session.channel_name] = session
        session.start()
        return {"status": 410, "token": session.token, "messages": []}

    async def _poll(self, channel: str, nonce: str, ack: int) -> dict[str, Any] | None:
        session = self.sessions.get(channel)
        if session is not None:
            if session.nonce != nonce:
                return None
            return await session.poll(ack, self.window)
        if self._ours(channel):
            return None  # this process made it, and it is gone
        event = {"type": POLL, "nonce": nonce, "ack": ack}
        answer = await self._relay(channel, event, first=ANSWER_TIMEOUT, then=self.window)
        if answer is None or answer.get("status") == 410:
            return None
        if answer.get("status") == 102:  # relayed, but nothing came within the window
            return {"status": 204, "token": make_token(channel, nonce, ack), "messages": []}
        return answer

    async def _post(self, channel: str, nonce: str, ack: int, messages: list[str | bytes]) -> int:
        session = self.sessions.get(channel)
        if session is not None:
            return 410 if session.nonce != nonce else await session.post(messages)
        if self._ours(channel):
            return 410
        event = {"type": POST, "nonce": nonce, "messages": messages}
        answer = await self._relay(channel, event, first=self.window, then=0)
        status = answer.get("status") if answer is not None else None
        return status if isinstance(status, int) else 410

    def _ours(self, channel: str) -> bool:
        return self.endpoint.hub.layer.is_local(channel)

    async def _relay(
        self, channel: str, event: dict[str, Any], first: float, then: float
    ) -> dict[str, Any] | None:
        """Send *event* to a session in another process; its final answer, or None if it
        did not answer within *first* seconds. A ``102`` answer waits *then* seconds more."""
        hub = self.endpoint.hub
        box = _Answer()
        reply_to = hub.register(box)
        try:
            await hub.send(channel, {**event, "reply_to": reply_to, "rid": 1})
            try:
                answer = await asyncio.wait_for(box.answers.get(), first)
            except asyncio.TimeoutError:
                return None
            if answer.get("status") == 102:
                with contextlib.suppress(asyncio.TimeoutError):
                    answer = await asyncio.wait_for(box.answers.get(), then)
            return answer
        finally:
            hub.unregister(reply_to)


async def _unless_gone(
    request: Request, poll: Coroutine[Any, Any, dict[str, Any] | None]
) -> dict[str, Any] | None:
    """Run *poll*, cut short when the client goes away (its messages stay unacknowledged,
    so the next poll gets them): a parked poll must not hold a closed request open."""
    task = asyncio.ensure_future(poll)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        return {"status": 204, "messages": []}  # for nobody: the client is gone
    return task.result()


async def _disconnected(request: Request) -> None:
    receive = request.receive
    while (await receive())["type"] != "http.disconnect":
        pass


def _batch(content_type: str, body: bytes) -> list[str | bytes]:
    """The client's messages in one POST body: NDJSON (binary ones base64) or one message."""
    if content_type.split(";")[0].strip().lower() != "application/x-ndjson":
        return [body.decode("utf-8", "replace")]
    messages: list[str | bytes] = []
    for line in body.decode("utf-8", "replace").splitlines():
        if not line:
            continue
        if len(messages) == MAX_BATCH:
            raise ValueError(f"more than {MAX_BATCH} messages in one POST")
        if line.startswith("["):
            messages.append(line)
        else:
            try:
                messages.append(base64.b64decode(line, validate=True))
            except binascii.Error:
                raise ValueError("a line that is neither a JSON array nor base64") from None
    return messages


def _json(answer: dict[str, Any]) -> Response:
    return JSONResponse(answer, headers=HEADERS)
