from __future__ import annotations

import uuid

import pytest

from chanlite.routing import HTTPRoute, Match, Mount, WebSocketRoute, compile_path


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
