"""CORS and gzip middleware on a chanlite App."""

from __future__ import annotations

import gzip

from chanlite import App, Request
from chanlite.middleware import CORSMiddleware, GZipMiddleware
from chanlite.testing import TestClient

BIG = "chanlite " * 200


def make_app(**cors: object) -> App:
    app = App(layer=None)

    @app.http("/big")
    async def big(request: Request) -> str:
        return BIG

    @app.http("/small", methods=["GET", "PUT"])
    async def small(request: Request) -> dict[str, bool]:
        return {"ok": True}

    app.add_middleware(GZipMiddleware, minimum_size=500)
    app.add_middleware(CORSMiddleware, **cors)
    return app


async def test_gzip_compresses_large_responses_for_clients_that_accept_it() -> None:
    async with TestClient(make_app()) as client:
        r = await client.get("/big", headers={"accept-encoding": "gzip"})
        assert r.headers["content-encoding"] == "gzip"
        assert r.headers["vary"] == "Accept-Encoding"
        assert gzip.decompress(r.content).decode() == BIG
        r = await client.get("/small", headers={"accept-encoding": "gzip"})
        assert "content-encoding" not in r.headers and r.json() == {"ok": True}
        r = await client.get("/big")
        assert "content-encoding" not in r.headers and r.text == BIG


async def test_cors_preflight_and_marked_responses() -> None:
    app = make_app(
        allow_origins=["https://app.example"],
        allow_methods=["GET", "PUT"],
        allow_headers=["x-token"],
        expose_headers=["x-count"],
    )
    async with TestClient(app) as client:
        preflight = {
            "origin": "https://app.example",
            "access-control-request-method": "PUT",
            "access-control-request-headers": "X-Token",
        }
        r = await client.request("OPTIONS", "/small", headers=preflight)
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        assert r.headers["access-control-allow-methods"] == "GET, PUT"
        assert "x-token" in r.headers["access-control-allow-headers"]
        r = await client.request(
            "OPTIONS", "/small", headers={**preflight, "access-control-request-method": "DELETE"}
        )
        assert (r.status_code, r.text) == (400, "Disallowed CORS method")
        r = await client.request(
            "OPTIONS", "/small", headers={**preflight, "origin": "https://evil.example"}
        )
        assert (r.status_code, r.text) == (400, "Disallowed CORS origin")
        r = await client.get("/small", headers={"origin": "https://app.example"})
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        assert r.headers["access-control-expose-headers"] == "x-count"
        assert r.headers["vary"] == "Origin"
        r = await client.get("/small", headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


async def test_cors_any_origin_and_credentials() -> None:
    async with TestClient(make_app(allow_origins=["*"])) as client:
        r = await client.get("/small", headers={"origin": "https://a.example"})
        assert r.headers["access-control-allow-origin"] == "*"
    app = make_app(allow_origin_regex=r"https://.*\.example", allow_credentials=True)
    async with TestClient(app) as client:
        r = await client.get("/small", headers={"origin": "https://b.example"})
        assert r.headers["access-control-allow-origin"] == "https://b.example"
        assert r.headers["access-control-allow-credentials"] == "true"
