"""The test kit's modules import one way: the pieces take values, never the client."""

from __future__ import annotations

import grimp

from chanlite.testing._call import Session
from chanlite.types import Receive, Scope, Send

PIECES = ("chanlite.testing._call", "chanlite.testing.http", "chanlite.testing.websocket")


def test_no_cycle_among_the_testing_modules() -> None:
    # grimp counts imports under TYPE_CHECKING too: a cycle hidden there is still a cycle.
    graph = grimp.build_graph("chanlite")
    modules = sorted(m for m in graph.modules if m.startswith("chanlite.testing."))
    cycles = [
        (a, b)
        for a in modules
        for b in modules
        if a < b
        and graph.chain_exists(importer=a, imported=b)
        and graph.chain_exists(importer=b, imported=a)
    ]
    assert cycles == []


def test_the_pieces_never_import_the_client() -> None:
    graph = grimp.build_graph("chanlite")
    for piece in PIECES:
        assert not graph.chain_exists(importer=piece, imported="chanlite.testing.client"), piece


def test_session_keeps_and_drops_cookies_in_the_shared_jar() -> None:
    jar: dict[str, str] = {"old": "1"}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("not called")

    session = Session(app, True, grace=0.1, timeout=1.0, cookies=jar, calls=set())
    session.store_cookies(
        [
            (b"set-cookie", b"a=1; Path=/"),
            (b"content-type", b"text/plain"),
            (b"set-cookie", b"old=; Max-Age=0"),
            (b"set-cookie", b"bad\x7f=="),
        ]
    )
    assert jar == {"a": "1"}
