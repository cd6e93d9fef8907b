from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from chanlite.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
    format_sse,
    plain_messages,
    to_response,
)
from chanlite.types import Message
from tests.asgi_helpers import Receiver, Result, call, http_scope

pytestmark = pytest.mark.timeout(10)


class TestResponse:
    async def test_bytes(self) -> None:
        r = await call(Response(b"abc", status_code=201, headers={"X-Thing": "1"}))
        assert r.status == 201
        assert r.body == b"abc"
        assert r.headers["content-length"] == "3"
        assert r.headers["x-thing"] == "1"
        assert "content-type" not in r.headers

    async def test_str_with_media_type_gets_charset(self) -> None:
        r = await call(Response("é", media_type="text/csv"))
        assert r.body == "é".encode()
        assert r.headers["content-type"] == "text/csv; charset=utf-8"
        assert r.headers["content-length"] == "2"

    async def test_messages_follow_asgi(self) -> None:
        r = await call(Response(b"x"))
        assert [m["type"] for m in r.messages] == ["http.response.start", "http.response.body"]
        assert all(isinstance(k, bytes) and isinstance(v, bytes) for k, v in r.raw_headers)

    async def test_head_sends_no_body_but_keeps_length(self) -> None:
        r = await call(PlainTextResponse("hello"), http_scope(method="HEAD"))
        assert r.body == b""
        assert r.headers["content-length"] == "5"

    async def test_204_and_304_have_no_content_length(self) -> None:
        assert "content-length" not in Response(status_code=204).headers
        assert "content-length" not in Response(status_code=304).headers

    def test_bad_content_type(self) -> None:
        with pytest.raises(TypeError, match="must be bytes or str, not int"):
            Response(3)  # type: ignore[arg-type]

    async def test_text_and_html(self) -> None:
        r = await call(PlainTextResponse("hi"))
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        r = await call(HTMLResponse("<p>hi</p>", status_code=404))
        assert r.status == 404
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        assert r.text == "<p>hi</p>"

    def test_repr(self) -> None:
        assert repr(HTMLResponse("")) == "<HTMLResponse 200 'text/html'>"


class TestJSONResponse:
    async def test_compact_utf8(self) -> None:
        r = await call(JSONResponse({"a": [1, 2], "b": "é"}))
        assert r.body == '{"a":[1,2],"b":"é"}'.encode()
        assert r.headers["content-type"] == "application/json"
        assert r.headers["content-length"] == str(len(r.body))

    def test_unserialisable(self) -> None:
        with pytest.raises(TypeError):
            JSONResponse({"a": object()})
        with pytest.raises(ValueError):
            JSONResponse(float("nan"))

    async def test_none_is_null(self) -> None:
        assert (await call(JSONResponse(None))).body == b"null"


class TestRedirect:
    async def test_default_307_and_quoting(self) -> None:
        r = await call(RedirectResponse("/a b/é?x=1&y=2#frag"))
        assert r.status == 307
        assert r.headers["location"] == "/a%20b/%C3%A9?x=1&y=2#frag"
        assert r.headers["content-length"] == "0"

    async def test_status(self) -> None:
        r = await call(RedirectResponse("https://example.com/", status_code=303))
        assert r.status == 303
        assert r.headers["location"] == "https://example.com/"


class TestCookies:
    def test_set_cookie_options(self) -> None:
        r = Response()
        r.set_cookie(
            "sid",
            "a b",
            max_age=60,
            expires=datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
            path="/app",
            domain="example.com",
            secure=True,
            httponly=True,
            samesite="strict",
        )
        r.set_cookie("other", "1")
        cookies = r.headers.getlist("set-cookie")
        assert len(cookies) == 2
        first = cookies[0]
        assert first.startswith('sid="a b"')
        for part in (
            "Max-Age=60",
            "expires=Wed, 02 Jan 2030 03:04:05 GMT",
            "Path=/app",
            "Domain=example.com",
            "Secure",
            "HttpOnly",
            "SameSite=strict",
        ):
            assert part in first
        assert cookies[1] == "other=1; Path=/; SameSite=lax"

    def test_bad_samesite(self) -> None:
        with pytest.raises(ValueError, match="samesite"):
            Response().set_cookie("a", samesite="maybe")  # type: ignore[arg-type]

    def test_delete_cookie(self) -> None:
        r = Response()
        r.delete_cookie("sid", path="/app")
        (header,) = r.headers.getlist("set-cookie")
        assert header.startswith('sid=""')
        assert "Max-Age=0" in header and "Path=/app" in header
        expires = header.split("expires=")[1].split(";")[0]
        assert parsedate_to_datetime(expires) <= datetime.now(timezone.utc)


class TestStreamingResponse:
    async def test_async_iterator(self) -> None:
        async def gen() -> AsyncIterator[str | bytes]:
            yield "a"
            yield b"b"
            yield "é"

        r = await call(StreamingResponse(gen(), media_type="text/plain"))
        assert r.status == 200
        assert "content-length" not in r.headers
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        bodies = [m for m in r.messages if m["type"] == "http.response.body"]
        assert [m["body"] for m in bodies] == [b"a", b"b", "é".encode(), b""]
        assert [m.get("more_body", False) for m in bodies] == [True, True, True, False]

    async def test_sync_iterator_runs_off_the_loop(self) -> None:
        loop_thread = threading.get_ident()
        seen: list[int] = []

        def gen() -> Iterator[bytes]:
            for i in range(3):
                seen.append(threading.get_ident())
                yield str(i).encode()

        r = await call(StreamingResponse(gen()))
        assert r.body == b"012"
        assert seen and all(t != loop_thread for t in seen)

    async def test_list_content(self) -> None:
        assert (await call(StreamingResponse([b"x", "y"]))).body == b"xy"

    async def test_sse_stops_on_disconnect_and_closes_generator(self) -> None:
        closed = asyncio.Event()
        sent_two = asyncio.Event()

        async def events() -> AsyncIterator[str]:
            try:
                i = 0
                while True:
                    yield format_sse(str(i), event="tick", id=str(i))
                    i += 1
                    if i == 2:
                        sent_two.set()
                    await asyncio.sleep(0.01)
            finally:
                closed.set()

        response = StreamingResponse(events(), media_type="text/event-stream")
        receiver = Receiver([b""])
        result = Result()
        task = asyncio.create_task(response(http_scope(), receiver, result.send))
        await asyncio.wait_for(sent_two.wait(), 5)
        receiver.disconnect()
        await asyncio.wait_for(task, 5)
        assert closed.is_set()
        assert result.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert result.headers["cache-control"] == "no-cache"
        assert result.body.startswith(b"event: tick\nid: 0\ndata: 0\n\nevent: tick\nid: 1\n")

    async def test_send_oserror_ends_quietly(self) -> None:
        async def gen() -> AsyncIterator[bytes]:
            while True:
                yield b"x"
                await asyncio.sleep(0)

        calls = 0

        async def send(message: Message) -> None:
            nonlocal calls
            calls += 1
            if calls > 3:
                raise OSError("connection reset")

        await asyncio.wait_for(StreamingResponse(gen())(http_scope(), Receiver(), send), 5)
        assert calls == 4

    async def test_iterator_error_propagates(self) -> None:
        async def gen() -> AsyncIterator[bytes]:
            yield b"x"
            raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):
            await call(StreamingResponse(gen()))

    async def test_head_does_not_iterate(self) -> None:
        started = False

        async def gen() -> AsyncIterator[bytes]:
            nonlocal started
            started = True
            yield b"x"

        r = await call(StreamingResponse(gen()), http_scope(method="HEAD"))
        assert r.body == b"" and not started


class TestFormatSSE:
    def test_fields(self) -> None:
        assert format_sse("a") == "data: a\n\n"
        assert format_sse("a\nb", event="e", id="7", retry=1000) == (
            "event: e\nid: 7\nretry: 1000\ndata: a\ndata: b\n\n"
        )
        assert format_sse(comment="keepalive") == ": keepalive\n\n"
        assert format_sse("") == "data: \n\n"

    def test_multiline_event_name_rejected(self) -> None:
        with pytest.raises(ValueError, match="event must be a single line"):
            format_sse("x", event="a\nb")


class TestFileResponse:
    async def test_serves_file_with_metadata(self, tmp_path: Path) -> None:
        path = tmp_path / "page.html"
        content = b"<h1>hi</h1>" * 20_000  # several chunks
        path.write_bytes(content)
        r = await call(FileResponse(path))
        assert r.status == 200
        assert r.body == content
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        assert r.headers["content-length"] == str(len(content))
        st = os.stat(path)
        assert parsedate_to_datetime(r.headers["last-modified"]).timestamp() == int(st.st_mtime)
        assert r.headers["etag"].startswith('"') and r.headers["etag"].endswith('"')
        bodies = [m for m in r.messages if m["type"] == "http.response.body"]
        assert len(bodies) > 1
        assert all(len(m["body"]) <= FileResponse.chunk_size for m in bodies)
        assert bodies[-1].get("more_body", False) is False

    async def test_sends_exactly_the_advertised_length(self, tmp_path: Path) -> None:
        path = tmp_path / "log.txt"
        path.write_bytes(b"12345")
        response = FileResponse(path, stat_result=os.stat(path))
        path.write_bytes(b"1234567890")  # the file grew after stat
        r = await call(response)
        assert r.headers["content-length"] == "5"
        assert r.body == b"12345"

    async def test_file_gone_after_stat_fails_before_sending(self, tmp_path: Path) -> None:
        path = tmp_path / "gone.txt"
        path.write_bytes(b"x")
        response = FileResponse(path, stat_result=os.stat(path))
        path.unlink()
        result = Result()
        with pytest.raises(RuntimeError, match="Cannot open file"):
            await response(http_scope(), Receiver(), result.send)
        assert result.messages == []

    async def test_exact_multiple_of_chunk_size(self, tmp_path: Path) -> None:
        path = tmp_path / "data.bin"
        path.write_bytes(b"z" * FileResponse.chunk_size * 2)
        r = await call(FileResponse(path))
        assert r.body == path.read_bytes()
        assert r.headers["content-type"] == "application/octet-stream"

    async def test_head(self, tmp_path: Path) -> None:
        path = tmp_path / "a.txt"
        path.write_text("hello")
        r = await call(FileResponse(path), http_scope(method="HEAD"))
        assert r.body == b""
        assert r.headers["content-length"] == "5"

    async def test_filename_and_media_type(self, tmp_path: Path) -> None:
        path = tmp_path / "blob"
        path.write_bytes(b"1")
        r = await call(FileResponse(path, filename="report.csv"))
        assert r.headers["content-disposition"] == 'attachment; filename="report.csv"'
        assert r.headers["content-type"] == "text/csv; charset=utf-8"
        r = await call(FileResponse(path, filename="résumé.pdf", media_type="x/y"))
        assert (
            r.headers["content-disposition"] == "attachment; filename*=utf-8''r%C3%A9sum%C3%A9.pdf"
        )
        assert r.headers["content-type"] == "x/y"

    async def test_pathsend_extension(self, tmp_path: Path) -> None:
        path = tmp_path / "a.txt"
        path.write_text("x")
        scope = http_scope(extensions={"http.response.pathsend": {}})
        r = await call(FileResponse(path), scope)
        assert r.messages[1] == {"type": "http.response.pathsend", "path": str(path)}

    async def test_missing_file_is_clear_error(self, tmp_path: Path) -> None:
        with pytest.raises(RuntimeError, match="does not exist"):
            await call(FileResponse(tmp_path / "nope.txt"))
        with pytest.raises(RuntimeError, match="not a regular file"):
            await call(FileResponse(tmp_path))


class TestToResponse:
    async def test_response_passthrough(self) -> None:
        r = HTMLResponse("x")
        assert to_response(r) is r

    @pytest.mark.parametrize("value", [{"a": 1}, [1, "x"]])
    async def test_json(self, value: object) -> None:
        response = to_response(value)
        assert isinstance(response, JSONResponse)
        assert (await call(response)).json() == value

    async def test_str(self) -> None:
        r = await call(to_response("hé"))
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        assert r.text == "hé"

    @pytest.mark.parametrize("value", ["hé", "", {"a": [1, "é"], "b": None}, [], [1.5, "x"]])
    @pytest.mark.parametrize("method", ["GET", "HEAD", "POST"])
    async def test_plain_messages_are_what_the_response_sends(
        self, value: object, method: str
    ) -> None:
        # The App sends these for str/dict/list returns instead of building a Response:
        # they must be the very messages the Response would have sent.
        sent = (await call(to_response(value), http_scope(method=method))).messages
        assert plain_messages(value, method) == tuple(sent)

    @pytest.mark.parametrize("value", [b"x", None, ("x", 201), HTMLResponse("x"), 3, ("a",)])
    def test_plain_messages_leave_other_returns_to_to_response(self, value: object) -> None:
        assert plain_messages(value, "GET") is None

    def test_plain_messages_refuse_what_json_cannot_hold(self) -> None:
        with pytest.raises(TypeError):
            plain_messages({"when": {1, 2}}, "GET")
        with pytest.raises(ValueError):
            plain_messages([float("nan")], "GET")

    async def test_bytes(self) -> None:
        r = await call(to_response(b"\x00\x01"))
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.body == b"\x00\x01"

    async def test_none(self) -> None:
        r = await call(to_response(None))
        assert r.status == 204
        assert r.body == b""
        assert "content-length" not in r.headers

    async def test_tuples(self) -> None:
        r = await call(to_response(({"created": True}, 201)))
        assert r.status == 201 and r.json() == {"created": True}
        r = await call(to_response(("nope", 404, {"X-Why": "gone"})))
        assert (r.status, r.text, r.headers["x-why"]) == (404, "nope", "gone")
        r = await call(to_response((None, 202)))
        assert r.status == 202 and r.headers["content-length"] == "0"
        r = await call(to_response((HTMLResponse("x"), 418)))
        assert r.status == 418

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            (42, "returned a value of type 'int'; return a Response, dict, list, str"),
            (object(), "type 'object'"),
            ({1, 2}, "type 'set'"),
            (("a",), "must be \\(body, status\\) or \\(body, status, headers\\)"),
            (("a", "200"), "with an int status"),
            (("a", 200, {}, 1), "length 4"),
            (("a", True), "with an int status"),
            (("a", 200, ["x"]), "headers .* must be a mapping, not a value of type 'list'"),
            ((3.5, 200), "type 'float'"),
        ],
    )
    def test_errors_name_the_type(self, value: object, message: str) -> None:
        with pytest.raises(TypeError, match=message):
            to_response(value)
