"""Static files: byte ranges (206 / 416, If-Range) and conditional requests (304)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chanlite import App
from chanlite.testing import TestClient

DATA = bytes(range(256)) * 4  # 1024 bytes


@pytest.fixture
def app(tmp_path: Path) -> App:
    (tmp_path / "data.bin").write_bytes(DATA)
    app = App(layer=None)
    app.static("/static", str(tmp_path))
    return app


async def test_a_range_gets_206_and_only_those_bytes(app: App) -> None:
    async with TestClient(app) as client:
        full = await client.get("/static/data.bin")
        assert full.headers["accept-ranges"] == "bytes"
        r = await client.get("/static/data.bin", headers={"range": "bytes=10-19"})
        assert r.status_code == 206
        assert r.headers["content-range"] == "bytes 10-19/1024"
        assert r.headers["content-length"] == "10" and r.content == DATA[10:20]
        r = await client.get("/static/data.bin", headers={"range": "bytes=1000-"})
        assert (r.headers["content-range"], r.content) == ("bytes 1000-1023/1024", DATA[1000:])
        r = await client.get("/static/data.bin", headers={"range": "bytes=-24"})
        assert (r.headers["content-range"], r.content) == ("bytes 1000-1023/1024", DATA[-24:])
        r = await client.get("/static/data.bin", headers={"range": "bytes=1000-5000"})
        assert r.content == DATA[1000:]


async def test_a_range_outside_the_file_is_416(app: App) -> None:
    async with TestClient(app) as client:
        r = await client.get("/static/data.bin", headers={"range": "bytes=2000-"})
        assert (r.status_code, r.headers["content-range"], r.content) == (
            416,
            "bytes */1024",
            b"",
        )


async def test_several_ranges_or_a_stale_if_range_get_the_whole_file(app: App) -> None:
    async with TestClient(app) as client:
        etag = (await client.get("/static/data.bin")).headers["etag"]
        r = await client.get("/static/data.bin", headers={"range": "bytes=0-1,5-6"})
        assert (r.status_code, r.content) == (200, DATA)
        stale = {"range": "bytes=0-1", "if-range": '"old"'}
        assert (await client.get("/static/data.bin", headers=stale)).status_code == 200
        fresh = {"range": "bytes=0-1", "if-range": etag}
        r = await client.get("/static/data.bin", headers=fresh)
        assert (r.status_code, r.content) == (206, DATA[:2])


async def test_conditional_requests_get_304(app: App) -> None:
    async with TestClient(app) as client:
        first = await client.get("/static/data.bin")
        etag, modified = first.headers["etag"], first.headers["last-modified"]
        r = await client.get("/static/data.bin", headers={"if-none-match": etag})
        assert (r.status_code, r.content, r.headers["etag"]) == (304, b"", etag)
        r = await client.get("/static/data.bin", headers={"if-modified-since": modified})
        assert r.status_code == 304
        r = await client.get("/static/data.bin", headers={"if-none-match": '"other"'})
        assert r.status_code == 200
