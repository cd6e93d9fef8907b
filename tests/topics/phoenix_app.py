"""The app the phoenix.js client suite (tests/node) drives: one socket, a few topics."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from chanlite import App
from chanlite.topics import Channel, Connection, Limits, Refused, Reply

app = App(layer="memory://")


async def connect(conn: Connection, params: dict[str, str]) -> bool:
    if params.get("token") == "bad":
        return False
    conn.assigns["user"] = params.get("user", "anonymous")
    conn.assigns["pid"] = os.getpid()
    return True


socket = app.socket("/socket", connect=connect, limits=Limits(max_topics=5, max_message=4096))
room = socket.topic("room:{name}")


@room.join
async def join(channel: Channel, name: str, params: dict[str, Any]) -> dict[str, Any]:
    if name == "secret":
        raise Refused("unauthorized")
    if params.get("crash"):
        raise RuntimeError("join crashed on purpose")
    return {"joined": name, "user": channel.assigns["user"], "pid": os.getpid()}


@room.on("echo")
async def echo(channel: Channel, name: str, payload: Any) -> Any:
    return payload


@room.on("slow")
async def slow(channel: Channel, name: str, payload: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(payload["ms"] / 1000)
    return {"slept": payload["ms"]}


@room.on("refuse")
async def refuse(channel: Channel, name: str, payload: Any) -> Any:
    raise Refused({"reason": "no"})


@room.on("status")
async def status(channel: Channel, name: str, payload: dict[str, Any]) -> Reply:
    return Reply(payload["status"], {"given": payload["status"]})


@room.on("shout")
async def shout(channel: Channel, name: str, payload: dict[str, Any]) -> dict[str, Any]:
    await room.broadcast(name, "new_msg", {**payload, "from": channel.assigns["user"]})
    return {}


@room.on("shout_from")
async def shout_from(channel: Channel, name: str, payload: dict[str, Any]) -> dict[str, Any]:
    await channel.broadcast_from("new_msg", {**payload, "from": channel.assigns["user"]})
    return {}


@room.on("push_me")
async def push_me(channel: Channel, name: str, payload: dict[str, Any]) -> None:
    await channel.push("pushed", payload)


@room.on("kick")
async def kick(channel: Channel, name: str, payload: Any) -> None:
    await channel.close()


@room.on("crash")
async def crash(channel: Channel, name: str, payload: Any) -> None:
    raise RuntimeError("handler crashed on purpose")


@room.on("binary")
async def binary(channel: Channel, name: str, payload: Any) -> Any:
    assert isinstance(payload, bytes)
    return payload[::-1]


@room.on("whoami")
async def whoami(channel: Channel, name: str, payload: Any) -> dict[str, Any]:
    return {"user": channel.assigns["user"], "pid": os.getpid()}


# A history longer than anything a test sends: the resume test's writer can run
# 150+ messages ahead of a reader that is reconnecting, and a shorter history
# would (rightly) answer "too_old" instead of replaying them.
chat = socket.topic("chat:{name}", history=1000, presence=True)


@chat.join
async def join_chat(channel: Channel, name: str, params: dict[str, Any]) -> dict[str, Any]:
    await channel.track(channel.assigns["user"], {"pid": os.getpid()})
    return {"pid": os.getpid()}


@chat.on("say")
async def say(channel: Channel, name: str, payload: dict[str, Any]) -> dict[str, Any]:
    await channel.broadcast("said", {**payload, "from": channel.assigns["user"]})
    return {}
