from __future__ import annotations

import pytest

from chanlite.datastructures import (
    Address,
    FormData,
    Headers,
    MutableHeaders,
    QueryParams,
    UploadFile,
    parse_cookies,
)

pytestmark = pytest.mark.timeout(10)


RAW = [
    (b"host", b"example.com"),
    (b"Accept", b"text/html"),
    (b"x-multi", b"one"),
    (b"X-Multi", b"two"),
]


class TestHeaders:
    def test_case_insensitive_lookup(self) -> None:
        h = Headers(RAW)
        assert h["ACCEPT"] == "text/html"
        assert h.get("Host") == "example.com"
        assert "accept" in h and "Accept" in h
        assert "missing" not in h
        assert 42 not in h

    def test_multi_values_in_order(self) -> None:
        h = Headers(RAW)
        assert h.getlist("x-multi") == ["one", "two"]
        assert h["x-multi"] == "one"
        assert h.getlist("nope") == []

    def test_missing_key(self) -> None:
        h = Headers(RAW)
        with pytest.raises(KeyError):
            h["nope"]
        assert h.get("nope") is None
        assert h.get("nope", "d") == "d"

    def test_items_raw_len(self) -> None:
        h = Headers(RAW)
        assert h.items() == [
            ("host", "example.com"),
            ("accept", "text/html"),
            ("x-multi", "one"),
            ("x-multi", "two"),
        ]
        assert h.raw == RAW
        assert len(h) == 4
        assert list(h) == ["host", "accept", "x-multi", "x-multi"]
        assert h.values()[0] == "example.com"

    def test_raw_is_not_copied_but_returned_copy_is_safe(self) -> None:
        raw = list(RAW)
        h = Headers(raw)
        h.raw.append((b"a", b"b"))
        assert len(h) == 4

    def test_latin1_values(self) -> None:
        h = Headers([(b"x", "café".encode("latin-1"))])
        assert h["x"] == "café"

    def test_from_mapping_and_equality(self) -> None:
        assert Headers({"Content-Type": "text/plain"}) == Headers(
            [(b"content-type", b"text/plain")]
        )
        assert Headers() != Headers({"a": "b"})
        assert "content-type" in repr(Headers({"Content-Type": "x"}))

    def test_immutable(self) -> None:
        h = Headers(RAW)
        with pytest.raises(TypeError):
            h["x"] = "y"  # type: ignore[index]


class TestMutableHeaders:
    def test_set_replaces_all(self) -> None:
        h = MutableHeaders(RAW)
        h["X-Multi"] = "three"
        assert h.getlist("x-multi") == ["three"]
        assert h.raw[-1] == (b"x-multi", b"three")

    def test_append_delete_setdefault_update(self) -> None:
        h = MutableHeaders()
        h.append("Set-Cookie", "a=1")
        h.append("set-cookie", "b=2")
        assert h.getlist("set-cookie") == ["a=1", "b=2"]
        del h["SET-COOKIE"]
        assert "set-cookie" not in h
        with pytest.raises(KeyError):
            del h["set-cookie"]
        assert h.setdefault("x", "1") == "1"
        assert h.setdefault("x", "2") == "1"
        h.update({"x": "3", "y": "4"})
        h.update([("z", "5")])
        assert h.items() == [("x", "3"), ("y", "4"), ("z", "5")]

    @pytest.mark.parametrize(
        ("name", "value"),
        [("x", "a\r\nset-cookie: evil=1"), ("x", "a\nb"), ("x\r", "v"), ("", "v"), ("x", "\0")],
    )
    def test_header_injection_is_refused(self, name: str, value: str) -> None:
        h = MutableHeaders()
        with pytest.raises(ValueError, match="Invalid response header"):
            h[name] = value
        with pytest.raises(ValueError, match="Invalid response header"):
            h.append(name, value)
        with pytest.raises(ValueError, match="Invalid response header"):
            MutableHeaders({name: value})
        assert len(h) == 0

    def test_non_latin1_lookup_is_absent_not_an_error(self) -> None:
        h = MutableHeaders([(b"?", b"q")])
        assert h.get("\u2603") is None
        assert h.getlist("\u2603") == []
        assert "\u2603" not in h

    def test_does_not_mutate_source(self) -> None:
        raw = list(RAW)
        h = MutableHeaders(raw)
        h["host"] = "other"
        assert raw == RAW


class TestQueryParams:
    def test_parse(self) -> None:
        q = QueryParams("a=1&a=2&b=&c=%20x+y&d")
        assert q["a"] == "2"
        assert q.getlist("a") == ["1", "2"]
        assert q["b"] == ""
        assert q["c"] == " x y"
        assert q["d"] == ""
        assert q.get("zz") is None
        assert q.get("zz", "d") == "d"
        assert q.items() == [("a", "2"), ("b", ""), ("c", " x y"), ("d", "")]
        assert q.multi_items()[:2] == [("a", "1"), ("a", "2")]
        assert q.keys() == ["a", "b", "c", "d"]
        assert len(q) == 4 and "a" in q and list(q) == ["a", "b", "c", "d"]

    def test_bytes_utf8_and_bad_escapes(self) -> None:
        q = QueryParams(b"name=%C3%A9t%C3%A9&bad=%FF&raw=\xc3\xa9")
        assert q["name"] == "été"
        assert q["bad"] == "\ufffd"
        assert q["raw"] == "é"

    def test_from_pairs_and_str(self) -> None:
        q = QueryParams([("a", "1"), ("b", "x y")])
        assert str(q) == "a=1&b=x+y"
        assert QueryParams({"a": "1"}) == QueryParams("a=1")
        assert QueryParams("") == QueryParams()
        with pytest.raises(KeyError):
            QueryParams("")["a"]


def test_address() -> None:
    a = Address("127.0.0.1", 5000)
    assert a.host == "127.0.0.1" and a.port == 5000
    host, port = a
    assert (host, port) == ("127.0.0.1", 5000)


class TestParseCookies:
    @pytest.mark.parametrize(
        ("header", "expected"),
        [
            ("a=1; b=2", {"a": "1", "b": "2"}),
            ("a=1;b=2;", {"a": "1", "b": "2"}),
            ('q="quoted value"', {"q": "quoted value"}),
            (r'e="a\"b\\c\054"', {"e": 'a"b\\c,'}),
            ("a=1; a=2", {"a": "2"}),
            ("token=abc=def==", {"token": "abc=def=="}),
            ("", {}),
            (";;;", {}),
            ("=novalue; =", {"": "novalue"}),
            ("flag", {"": "flag"}),
            ("a=1; flag; b=2", {"a": "1", "": "flag", "b": "2"}),
            ('"', {"": '"'}),
            ('a="unterminated; b=2', {"a": '"unterminated', "b": "2"}),
            ("x=\x00\xff; y=\u2603", {"x": "\x00\xff", "y": "\u2603"}),
            ("  spaced  =  value  ", {"spaced": "value"}),
        ],
    )
    def test_cases(self, header: str, expected: dict[str, str]) -> None:
        assert parse_cookies(header) == expected

    def test_fuzz_never_raises(self) -> None:
        import random

        rng = random.Random(1234)
        alphabet = 'ab=;" \\\t,\x00\xff\u2603017'
        for _ in range(2000):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
            result = parse_cookies(text)
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in result.items())


class TestUploadFile:
    async def test_write_read_seek_close(self) -> None:
        f = UploadFile(filename="a.txt", content_type="text/plain")
        await f.write(b"hello ")
        await f.write(b"world")
        assert f.size == 11
        await f.seek(0)
        assert await f.read(5) == b"hello"
        assert await f.read() == b" world"
        await f.close()
        assert f.file.closed
        assert "a.txt" in repr(f)

    async def test_rolls_to_disk_for_large_files(self) -> None:
        f = UploadFile(filename="big.bin")
        payload = b"x" * (UploadFile.spool_max_size + 10)
        await f.write(payload)
        assert not f._in_memory
        await f.seek(0)
        assert await f.read() == payload
        await f.close()


class TestFormData:
    async def test_multidict_and_close(self) -> None:
        upload = UploadFile(filename="f")
        form = FormData([("a", "1"), ("a", "2"), ("file", upload)])
        assert form["a"] == "2"
        assert form.getlist("a") == ["1", "2"]
        assert form["file"] is upload
        await form.close()
        assert upload.file.closed
