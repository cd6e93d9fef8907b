from __future__ import annotations

import uuid

import pytest

from chanlite import App, Request
from chanlite.routing import (
    HTTPRoute,
    Match,
    Mount,
    WebSocketRoute,
    compile_path,
    static_routes,
)
from chanlite.testing import TestClient


def http_scope(path: str, method: str = "GET") -> dict[str, object]:
    return {"type": "http", "path": path, "method": method, "root_path": ""}


def test_compile_path_params() -> None:
    regex, convertors = compile_path("/items/{id:int}/{rest:path}")
    found = regex.match("/items/7/a/b")
    assert found is not None
    assert found.groupdict() == {"id": "7", "rest": "a/b"}
    assert set(convertors) == {"id", "rest"}


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("/chat/{room}", "/chat/lobby", {"room": "lobby"}),
        ("/n/{id:int}", "/n/42", {"id": 42}),
        ("/f/{x:float}", "/f/1.5", {"x": 1.5}),
        (
            "/u/{u:uuid}",
            "/u/12345678-1234-5678-1234-567812345678",
            {"u": uuid.UUID("12345678-1234-5678-1234-567812345678")},
        ),
        ("/files/{rest:path}", "/files/a/b/c.txt", {"rest": "a/b/c.txt"}),
    ],
)
def test_convertors(pattern: str, path: str, expected: dict[str, object]) -> None:
    route = HTTPRoute(pattern, lambda request: None)
    match, child = route.matches(http_scope(path))
    assert match is Match.FULL
    assert child["path_params"] == expected


@pytest.mark.parametrize("path", ["/n/abc", "/n/", "/n/1/2", "/chat"])
def test_no_match(path: str) -> None:
    route = HTTPRoute("/n/{id:int}", lambda request: None)
    assert route.matches(http_scope(path))[0] is Match.NONE


def test_str_param_stops_at_slash() -> None:
    route = HTTPRoute("/chat/{room}", lambda request: None)
    assert route.matches(http_scope("/chat/a/b"))[0] is Match.NONE


def test_method_mismatch_is_partial_and_get_implies_head() -> None:
    route = HTTPRoute("/x", lambda request: None, methods=["GET", "post"])
    assert route.methods == {"GET", "HEAD", "POST"}
    assert route.matches(http_scope("/x", "DELETE"))[0] is Match.PARTIAL
    assert route.matches(http_scope("/x", "HEAD"))[0] is Match.FULL


def test_websocket_route_ignores_http() -> None:
    route = WebSocketRoute("/ws", lambda ws: None)
    assert route.matches(http_scope("/ws"))[0] is Match.NONE
    assert route.matches({"type": "websocket", "path": "/ws"})[0] is Match.FULL


def test_mount_shifts_root_path() -> None:
    mount = Mount("/legacy", lambda scope, receive, send: None)  # type: ignore[arg-type,return-value]
    match, child = mount.matches(http_scope("/legacy/page"))
    assert match is Match.FULL
    assert child["root_path"] == "/legacy"
    assert mount.matches(http_scope("/legacyx"))[0] is Match.NONE
    assert mount.matches(http_scope("/legacy"))[0] is Match.FULL


def test_bad_patterns() -> None:
    with pytest.raises(ValueError, match="must start with '/'"):
        compile_path("items")
    with pytest.raises(ValueError, match="Unknown path convertor 'number'"):
        compile_path("/{x:number}")
    with pytest.raises(ValueError, match="Duplicated parameter name 'x'"):
        compile_path("/{x}/{x}")


def test_url_path() -> None:
    route = HTTPRoute("/items/{id:int}/{name}", lambda request: None, name="item")
    assert route.url_path(id=3, name="hat") == "/items/3/hat"
    with pytest.raises(KeyError, match="needs the parameter 'name'"):
        route.url_path(id=3)


def _endpoint() -> None:  # pragma: no cover - never called
    pass


def test_static_routes_only_where_the_walk_would_pick_them() -> None:
    routes = [
        HTTPRoute("/", _endpoint),
        WebSocketRoute("/ws/{room}", _endpoint),  # matches /ws/lobby: shadows the next one
        WebSocketRoute("/ws/lobby", _endpoint),
        WebSocketRoute("/chat", _endpoint),
        HTTPRoute("/chat", _endpoint),  # other scope type: no clash with the WebSocket
        HTTPRoute("/items", _endpoint, methods=["GET"]),
        HTTPRoute("/items", _endpoint, methods=["POST"]),  # same path: the method decides
        Mount("/api", _endpoint),  # type: ignore[arg-type]
        HTTPRoute("/api/status", _endpoint),  # under the mount: the mount wins
        HTTPRoute("/", _endpoint),  # a second HTTP "/": the walk decides for both
        WebSocketRoute("/chat", _endpoint),  # a second WebSocket "/chat": the first wins
    ]
    table = static_routes(routes)
    assert table == {
        ("websocket", "/chat"): routes[3],
        ("http", "/chat"): routes[4],
    }


async def test_app_routes_by_lookup_and_by_walk_alike() -> None:
    app = App()

    @app.http("/items", methods=["GET"])
    async def list_items(request: Request) -> str:
        return "list"

    @app.http("/items", methods=["POST"])
    async def add_item(request: Request) -> str:
        return "added"

    @app.http("/{name}")
    async def by_name(request: Request, name: str) -> str:
        return f"name {name}"

    @app.http("/about")  # shadowed by /{name}, registered first
    async def about(request: Request) -> str:  # pragma: no cover - never reached
        return "about"

    @app.http("/static/page")
    async def page(request: Request) -> str:
        return "page"

    async with TestClient(app) as client:
        assert (await client.get("/items")).text == "list"
        assert (await client.post("/items")).text == "added"
        assert (await client.get("/about")).text == "name about"
        assert (await client.get("/static/page")).text == "page"
        refused = await client.put("/static/page")
        assert (refused.status_code, refused.headers["allow"]) == (405, "GET, HEAD")
        assert (await client.get("/static/page/more")).status_code == 404


def test_static_routes_leave_route_subclasses_to_the_walk() -> None:
    class HostRoute(HTTPRoute):
        def matches(self, scope: dict[str, object]) -> tuple[Match, dict[str, object]]:  # type: ignore[override]
            return Match.NONE, {}  # e.g. a route for another host

    custom = HostRoute("/", _endpoint)
    after = HTTPRoute("/after", _endpoint)
    ws = WebSocketRoute("/ws", _endpoint)
    # The subclass decides for itself; what follows it cannot be looked up past it either.
    assert static_routes([custom, after, ws]) == {}
    assert static_routes([ws, custom, after]) == {("websocket", "/ws"): ws}
