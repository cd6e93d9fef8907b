"""What users of Starlette and Flask expect: JSON errors for JSON clients, a JSON encoder
hook, and a redirect for a trailing-slash mismatch."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import uuid
from typing import Any

import pytest

from chanlite import App, HTTPException, Request, WebSocket
from chanlite.encoders import json_default
from chanlite.testing import TestClient


def api() -> App:
    app = App(layer=None)

    @app.http("/items/{id:int}", methods=["GET", "POST"])
    async def item(request: Request, id: int) -> dict[str, Any]:
        raise HTTPException(404, f"no item {id}")

    return app


async def test_http_exception_is_json_for_a_client_that_accepts_json() -> None:
    async with TestClient(api()) as client:
        r = await client.get("/items/7", headers={"accept": "application/json"})
        assert (r.status_code, r.headers["content-type"]) == (404, "application/json")
        assert r.json() == {"detail": "no item 7"}
        r = await client.post("/items/7", json={"name": "x"})  # a JSON body: a JSON client
        assert r.json() == {"detail": "no item 7"}
        r = await client.get("/items/7", headers={"accept": "text/html,application/json"})
        assert (r.headers["content-type"], r.text) == ("text/plain; charset=utf-8", "no item 7")


async def test_json_errors_makes_every_http_exception_json() -> None:
    app = App(layer=None, json_errors=True)

    @app.http("/teapot")
    async def teapot(request: Request) -> str:
        raise HTTPException(418, headers={"x-why": "short and stout"})

    async with TestClient(app) as client:
        r = await client.get("/teapot")
        assert r.json() == {"detail": "I'm a Teapot"}
        assert r.headers["x-why"] == "short and stout"


async def test_a_json_route_answers_http_exceptions_as_json() -> None:
    app = App(layer=None)

    @app.http("/api/thing", json=True)
    async def thing(request: Request) -> dict[str, Any]:
        raise HTTPException(409, "taken")

    async with TestClient(app) as client:
        r = await client.get("/api/thing", headers={"accept": "*/*"})
        assert (r.status_code, r.json()) == (409, {"detail": "taken"})


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    at: datetime.date


VALUES = {
    "when": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
    "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "price": decimal.Decimal("9.990"),
    "point": Point(1, datetime.date(2026, 1, 2)),
    "colour": Colour.RED,
}
EXPECTED = {
    "when": "2026-01-02T03:04:05+00:00",
    "id": "12345678-1234-5678-1234-567812345678",
    "price": "9.990",
    "point": {"x": 1, "at": "2026-01-02"},
    "colour": "red",
}


async def test_returned_dicts_and_send_json_encode_common_types_out_of_the_box() -> None:
    app = App(layer=None)

    @app.http("/values")
    async def values(request: Request) -> dict[str, Any]:
        return VALUES

    @app.websocket("/ws")
    async def ws_values(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_json(VALUES)

    async with TestClient(app) as client:
        assert (await client.get("/values")).json() == EXPECTED
        async with client.websocket("/ws") as ws:
            assert await ws.receive_json() == EXPECTED


async def test_the_app_json_hook_is_used_by_returns_and_send_json() -> None:
    class Money:
        def __init__(self, cents: int) -> None:
            self.cents = cents

    def encode(value: Any) -> Any:
        if isinstance(value, Money):
            return f"{value.cents / 100:.2f} EUR"
        return json_default(value)

    app = App(layer=None, json_default=encode)

    @app.http("/price")
    async def price(request: Request) -> Any:
        return {"price": Money(995), "at": datetime.date(2026, 1, 2)}, 201

    @app.websocket("/ws")
    async def ws_price(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_json({"price": Money(5)})

    async with TestClient(app) as client:
        r = await client.get("/price")
        assert (r.status_code, r.json()) == (201, {"price": "9.95 EUR", "at": "2026-01-02"})
        async with client.websocket("/ws") as ws:
            assert await ws.receive_json() == {"price": "0.05 EUR"}


def test_an_object_no_hook_handles_is_a_type_error_naming_the_hook() -> None:
    with pytest.raises(TypeError, match=r"Object of type object is not JSON serializable; "):
        json_default(object())


async def test_a_trailing_slash_mismatch_redirects_keeping_the_query() -> None:
    app = App(layer=None)

    @app.http("/items", methods=["GET", "POST"])
    async def items(request: Request) -> str:
        return "items"

    @app.http("/docs/")
    async def docs(request: Request) -> str:
        return "docs"

    async with TestClient(app) as client:
        r = await client.get("/items/?page=2")
        assert (r.status_code, r.headers["location"]) == (307, "/items?page=2")
        r = await client.post("/items/")
        assert (r.status_code, r.headers["location"]) == (307, "/items")
        r = await client.get("/docs")
        assert (r.status_code, r.headers["location"]) == (307, "/docs/")
        assert (await client.get("/nothing/")).status_code == 404
    async with TestClient(app, follow_redirects=True) as client:
        assert (await client.get("/items/")).text == "items"
