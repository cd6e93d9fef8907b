from __future__ import annotations

import asyncio
import sys

import pytest

from chanlite.datastructures import Address, UploadFile
from chanlite.exceptions import HTTPException
from chanlite.requests import ClientDisconnect, HTTPConnection, Request, State
from chanlite.types import Scope
from tests.asgi_helpers import Receiver, http_scope

pytestmark = pytest.mark.timeout(10)


def make_request(
    chunks: list[bytes] | None = None,
    *,
    headers: list[tuple[str, str]] | None = None,
    then_disconnect: bool = False,
    **kwargs: object,
) -> Request:
    scope = http_scope("/items/3", method="POST", headers=headers or [])
    return Request(scope, Receiver(chunks or [b""], then_disconnect=then_disconnect), **kwargs)  # type: ignore[arg-type]


class TestHTTPConnection:
    def test_scope_properties(self) -> None:
        scope = http_scope(
            "/items/3",
            query_string=b"a=1&a=2",
            headers=[("Host", "example.com:8080"), ("Cookie", "sid=abc; theme=dark")],
            path_params={"id": 3},
        )
        conn = HTTPConnection(scope)
        assert conn.scope is scope
        assert conn.path == "/items/3"
        assert conn.path_params == {"id": 3}
        assert conn.query_params.getlist("a") == ["1", "2"]
        assert conn.headers["host"] == "example.com:8080"
        assert conn.cookies == {"sid": "abc", "theme": "dark"}
        assert conn.client == Address("127.0.0.1", 50000)
        assert conn.url == "http://example.com:8080/items/3?a=1&a=2"
        assert conn.app is None

    def test_parsed_values_are_cached(self) -> None:
        conn = HTTPConnection(http_scope(headers=[("cookie", "a=1")], query_string=b"x=1"))
        assert conn.headers is conn.headers
        assert conn.query_params is conn.query_params
        assert conn.cookies is conn.cookies
        assert conn.state is conn.state

    def test_defaults_when_scope_is_sparse(self) -> None:
        conn = HTTPConnection({"type": "http", "path": "/x"})
        assert conn.path_params == {}
        assert len(conn.headers) == 0
        assert len(conn.query_params) == 0
        assert conn.cookies == {}
        assert conn.client is None
        assert conn.url == "http://localhost/x"

    def test_url_from_server_when_no_host(self) -> None:
        conn = HTTPConnection(
            {"type": "http", "path": "/a b", "scheme": "https", "server": ("h", 443)}
        )
        assert conn.url == "https://h/a%20b"
        conn = HTTPConnection({"type": "http", "path": "/", "server": ("h", 81)})
        assert conn.url == "http://h:81/"

    def test_several_cookie_headers_and_malformed(self) -> None:
        conn = HTTPConnection(http_scope(headers=[("cookie", "a=1; ;=;\x00"), ("cookie", "b=2")]))
        assert conn.cookies == {"a": "1", "": "\x00", "b": "2"}

    def test_state_bag(self) -> None:
        conn = HTTPConnection(http_scope())
        conn.state.user = "ann"
        assert conn.state.user == "ann"
        with pytest.raises(AttributeError, match="no attribute 'missing'"):
            conn.state.missing  # noqa: B018
        assert "ann" in repr(conn.state)
        assert State(a=1).a == 1

    def test_slots_keep_it_small_and_allow_subclass_slots(self) -> None:
        conn = HTTPConnection(http_scope())
        assert not hasattr(conn, "__dict__")

        class Sub(HTTPConnection):
            __slots__ = ("extra",)

            def __init__(self, scope: Scope) -> None:
                super().__init__(scope)
                self.extra = 1

        sub = Sub(http_scope())
        assert sub.extra == 1 and not hasattr(sub, "__dict__")
        assert sys.getsizeof(conn) < 100


class TestRequestBody:
    async def test_method_and_body_in_chunks(self) -> None:
        req = make_request([b"hel", b"lo"])
        assert req.method == "POST"
        assert await req.body() == b"hello"
        assert await req.body() == b"hello"  # cached

    async def test_stream_after_body_yields_cached(self) -> None:
        req = make_request([b"a", b"b"])
        await req.body()
        assert [c async for c in req.stream()] == [b"ab"]

    async def test_stream_chunks_then_second_read_is_a_clear_error(self) -> None:
        req = make_request([b"a", b"", b"b"])
        assert [c async for c in req.stream()] == [b"a", b"b"]
        with pytest.raises(RuntimeError, match="already consumed by stream"):
            await req.body()
        with pytest.raises(RuntimeError, match=r"await request.body\(\)"):
            async for _ in req.stream():
                pass

    async def test_stream_is_unlimited(self) -> None:
        big = [b"x" * 1000] * 50
        req = make_request(big, max_body_size=10)
        total = 0
        async for chunk in req.stream():
            total += len(chunk)
        assert total == 50_000

    async def test_body_over_limit_is_413(self) -> None:
        req = make_request([b"x" * 6, b"x" * 6], max_body_size=10)
        with pytest.raises(HTTPException) as info:
            await req.body()
        assert info.value.status_code == 413
        assert "10 bytes" in info.value.detail

    async def test_declared_content_length_over_limit_is_413_before_reading(self) -> None:
        req = make_request([b"x"], headers=[("content-length", "11")], max_body_size=10)
        with pytest.raises(HTTPException) as info:
            await req.body()
        assert info.value.status_code == 413
        assert req.receive.calls == 0  # type: ignore[attr-defined]

    async def test_default_limit_is_one_mib(self) -> None:
        req = make_request([b"x" * (1024 * 1024 + 1)])
        with pytest.raises(HTTPException) as info:
            await req.body()
        assert info.value.status_code == 413

    async def test_no_limit(self) -> None:
        req = make_request([b"x" * (2 * 1024 * 1024)], max_body_size=None)
        assert len(await req.body()) == 2 * 1024 * 1024

    async def test_disconnect_mid_body(self) -> None:
        receiver = Receiver.from_messages(
            [{"type": "http.request", "body": b"a", "more_body": True}, {"type": "http.disconnect"}]
        )
        req = Request(http_scope(method="POST"), receiver)
        with pytest.raises(ClientDisconnect):
            await req.body()
        assert await req.is_disconnected()

    async def test_without_receive_is_a_clear_error(self) -> None:
        req = Request(http_scope())
        with pytest.raises(RuntimeError, match="without a receive channel"):
            await req.body()


class TestJSON:
    async def test_valid(self) -> None:
        req = make_request([b'{"a": [1, ', b'"\xc3\xa9"]}'])
        assert await req.json() == {"a": [1, "é"]}

    @pytest.mark.parametrize("body", [b"{bad", b"", b"\xff\xfe", b"[1,]"])
    async def test_invalid_is_400(self, body: bytes) -> None:
        req = make_request([body])
        with pytest.raises(HTTPException) as info:
            await req.json()
        assert info.value.status_code == 400
        assert info.value.detail.startswith("Invalid JSON body")

    async def test_too_large_is_413(self) -> None:
        req = make_request([b"[" + b"1," * 100 + b"1]"], max_body_size=50)
        with pytest.raises(HTTPException) as info:
            await req.json()
        assert info.value.status_code == 413


FORM = [("content-type", "application/x-www-form-urlencoded")]


class TestUrlencodedForm:
    async def test_fields(self) -> None:
        req = make_request([b"a=1&a=2&name=J%C3%B6rg+X&empty="], headers=FORM)
        form = await req.form()
        assert form.getlist("a") == ["1", "2"]
        assert form["name"] == "Jörg X"
        assert form["empty"] == ""
        assert await req.form() is form

    async def test_raw_utf8_and_bad_escapes(self) -> None:
        form = await make_request(["é=ü&bad=%FF".encode()], headers=FORM).form()
        assert form["é"] == "ü"
        assert form["bad"] == "\ufffd"

    async def test_raised_limit_for_one_request(self) -> None:
        req = make_request([b"a=" + b"x" * 20], headers=FORM, max_body_size=10)
        req.max_body_size = 100
        assert (await req.form())["a"] == "x" * 20

    async def test_content_type_parameters_and_case(self) -> None:
        headers = [("content-type", "Application/X-WWW-Form-Urlencoded; charset=UTF-8")]
        form = await make_request([b"a=1"], headers=headers).form()
        assert form["a"] == "1"

    async def test_too_many_fields_is_400(self) -> None:
        req = make_request([b"&".join(b"f%d=1" % i for i in range(11))], headers=FORM)
        with pytest.raises(HTTPException) as info:
            await req.form(max_fields=10)
        assert info.value.status_code == 400
        assert "limit is 10" in info.value.detail

    async def test_field_too_large_is_413(self) -> None:
        req = make_request([b"a=" + b"x" * 20], headers=FORM)
        with pytest.raises(HTTPException) as info:
            await req.form(max_part_size=10)
        assert info.value.status_code == 413
        assert "'a'" in info.value.detail

    async def test_body_too_large_is_413(self) -> None:
        req = make_request([b"a=" + b"x" * 20], headers=FORM, max_body_size=10)
        with pytest.raises(HTTPException) as info:
            await req.form()
        assert info.value.status_code == 413

    async def test_not_a_form_gives_empty(self) -> None:
        req = make_request([b"{}"], headers=[("content-type", "application/json")])
        assert len(await req.form()) == 0


BOUNDARY = "----chanliteboundary"
MULTIPART = [("content-type", f"multipart/form-data; boundary={BOUNDARY}")]


def multipart_body(parts: list[tuple[str, str | None, bytes, str | None]]) -> bytes:
    out = b""
    for name, filename, data, content_type in parts:
        out += f"--{BOUNDARY}\r\n".encode()
        disposition = f'Content-Disposition: form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += disposition.encode() + b"\r\n"
        if content_type:
            out += f"Content-Type: {content_type}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


class TestMultipartForm:
    async def test_fields_and_files_in_small_chunks(self) -> None:
        body = multipart_body(
            [
                ("title", None, "Grüße".encode(), None),
                ("doc", "a.txt", b"first file\r\n--almost", "text/plain"),
                ("doc", "b.bin", bytes(range(256)) * 10, None),
                ("title", None, b"second", None),
            ]
        )
        req = make_request(split(body, 7), headers=MULTIPART)
        form = await req.form()
        assert form.getlist("title") == ["Grüße", "second"]
        first, second = form.getlist("doc")
        assert isinstance(first, UploadFile) and isinstance(second, UploadFile)
        assert first.filename == "a.txt"
        assert first.content_type == "text/plain"
        assert await first.read() == b"first file\r\n--almost"
        assert second.filename == "b.bin"
        assert second.content_type == "application/octet-stream"
        assert await second.read() == bytes(range(256)) * 10
        assert second.size == 2560
        await req.close()
        assert first.file.closed and second.file.closed

    async def test_in_one_chunk(self) -> None:
        body = multipart_body([("f", "x.txt", b"abc", "text/plain"), ("g", "y", b"def", None)])
        form = await make_request([body], headers=MULTIPART).form()
        f, g = form["f"], form["g"]
        assert isinstance(f, UploadFile) and isinstance(g, UploadFile)
        assert await f.read() == b"abc"
        assert await g.read() == b"def"

    async def test_too_many_files_is_400(self) -> None:
        body = multipart_body([(f"f{i}", "x", b"1", None) for i in range(3)])
        with pytest.raises(HTTPException) as info:
            await make_request([body], headers=MULTIPART).form(max_files=2)
        assert info.value.status_code == 400
        assert "Too many files; the limit is 2" in info.value.detail

    async def test_too_many_fields_is_400(self) -> None:
        body = multipart_body([(f"f{i}", None, b"1", None) for i in range(3)])
        with pytest.raises(HTTPException) as info:
            await make_request([body], headers=MULTIPART).form(max_fields=2)
        assert info.value.status_code == 400

    async def test_field_too_large_is_413(self) -> None:
        body = multipart_body([("big", None, b"x" * 100, None)])
        with pytest.raises(HTTPException) as info:
            await make_request(split(body, 10), headers=MULTIPART).form(max_part_size=50)
        assert info.value.status_code == 413
        assert "'big'" in info.value.detail

    async def test_large_file_within_body_limit_is_fine(self) -> None:
        body = multipart_body([("f", "x", b"x" * 100, None)])
        form = await make_request([body], headers=MULTIPART).form(max_part_size=50)
        f = form["f"]
        assert isinstance(f, UploadFile) and f.size == 100

    async def test_body_too_large_is_413(self) -> None:
        body = multipart_body([("f", "x", b"x" * 100, None)])
        with pytest.raises(HTTPException) as info:
            await make_request(split(body, 16), headers=MULTIPART, max_body_size=64).form()
        assert info.value.status_code == 413

    async def test_missing_boundary_is_400(self) -> None:
        req = make_request([b"x"], headers=[("content-type", "multipart/form-data")])
        with pytest.raises(HTTPException) as info:
            await req.form()
        assert info.value.status_code == 400
        assert "boundary" in info.value.detail

    async def test_malformed_body_is_400(self) -> None:
        req = make_request([b"garbage without boundary\r\n\r\n"], headers=MULTIPART)
        with pytest.raises(HTTPException) as info:
            await req.form()
        assert info.value.status_code == 400
        assert "Malformed multipart" in info.value.detail

    async def test_overlong_boundary_is_400(self) -> None:
        headers = [("content-type", "multipart/form-data; boundary=" + "b" * 300)]
        with pytest.raises(HTTPException) as info:
            await make_request([b"x"], headers=headers).form()
        assert info.value.status_code == 400

    async def test_form_after_body_uses_cached_body(self) -> None:
        body = multipart_body([("a", None, b"1", None)])
        req = make_request([body], headers=MULTIPART)
        assert await req.body() == body
        assert (await req.form())["a"] == "1"

    async def test_part_without_name_is_400(self) -> None:
        body = (
            f"--{BOUNDARY}\r\nContent-Disposition: attachment\r\n\r\nx\r\n--{BOUNDARY}--\r\n"
        ).encode()
        with pytest.raises(HTTPException) as info:
            await make_request([body], headers=MULTIPART).form()
        assert info.value.status_code == 400


class TestIsDisconnected:
    async def test_false_while_connected_and_keeps_body(self) -> None:
        receiver = Receiver([b"payload"])
        req = Request(http_scope(method="POST"), receiver)
        assert await req.is_disconnected() is False
        # The body message taken by the check is not lost.
        assert await req.body() == b"payload"
        # Nothing queued now: the check returns promptly without consuming anything.
        assert await req.is_disconnected() is False
        receiver.disconnect()
        assert await req.is_disconnected() is True
        assert await req.is_disconnected() is True

    async def test_idle_receive_is_not_blocked(self) -> None:
        receiver = Receiver([b""])
        req = Request(http_scope(), receiver)
        await req.body()
        assert await asyncio.wait_for(req.is_disconnected(), 1) is False
        assert receiver.queue.empty()
