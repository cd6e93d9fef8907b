from __future__ import annotations

import os
from email.utils import formatdate
from pathlib import Path

import pytest

from chanlite.staticfiles import StaticFiles
from tests.asgi_helpers import Result, call, http_scope

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """tmp/root holds the served files; tmp/secret.txt sits outside it."""
    root = tmp_path / "root"
    (root / "css").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "empty").mkdir()
    (root / "hello.txt").write_text("hello")
    (root / "css" / "site.css").write_text("body{}")
    (root / "docs" / "index.html").write_text("<h1>docs</h1>")
    (root / "index.html").write_text("<h1>home</h1>")
    (root / "%2e%2e").mkdir()
    (tmp_path / "secret.txt").write_text("top secret")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "x.txt").write_text("outside")
    return root


async def get(app: StaticFiles, path: str, method: str = "GET", **kwargs: object) -> Result:
    return await call(app, http_scope(path, method=method, **kwargs))  # type: ignore[arg-type]


class TestServing:
    async def test_file_with_type_and_validators(self, site: Path) -> None:
        app = StaticFiles(site)
        r = await get(app, "/hello.txt")
        assert r.status == 200
        assert r.body == b"hello"
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        assert r.headers["content-length"] == "5"
        assert "etag" in r.headers and "last-modified" in r.headers
        r = await get(app, "/css/site.css")
        assert r.headers["content-type"] == "text/css; charset=utf-8"

    async def test_head(self, site: Path) -> None:
        r = await get(StaticFiles(site), "/hello.txt", method="HEAD")
        assert r.status == 200 and r.body == b"" and r.headers["content-length"] == "5"

    async def test_mounted_under_root_path(self, site: Path) -> None:
        app = StaticFiles(site)
        r = await call(app, http_scope("/static/css/site.css", root_path="/static"))
        assert r.body == b"body{}"

    async def test_missing_is_404(self, site: Path) -> None:
        r = await get(StaticFiles(site), "/nope.txt")
        assert r.status == 404 and r.text == "Not Found"

    async def test_directory_without_html_is_404(self, site: Path) -> None:
        assert (await get(StaticFiles(site), "/docs/")).status == 404
        assert (await get(StaticFiles(site), "/")).status == 404

    @pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
    async def test_other_methods_are_405(self, site: Path, method: str) -> None:
        r = await get(StaticFiles(site), "/hello.txt", method=method)
        assert r.status == 405
        assert r.headers["allow"] == "GET, HEAD"

    def test_missing_directory_is_clear_error(self, tmp_path: Path) -> None:
        with pytest.raises(RuntimeError, match="does not exist"):
            StaticFiles(tmp_path / "nope")
        StaticFiles(tmp_path / "nope", check_dir=False)

    async def test_websocket_scope_is_closed(self, site: Path) -> None:
        result = Result()

        async def receive() -> dict[str, object]:
            return {"type": "websocket.connect"}

        await StaticFiles(site)({"type": "websocket", "path": "/x"}, receive, result.send)
        assert result.messages == [{"type": "websocket.close", "code": 1000}]


class TestTraversal:
    @pytest.mark.parametrize(
        "path",
        [
            "/../secret.txt",
            "/css/../../secret.txt",
            "/./../secret.txt",
            "/..",
            "/../outside/x.txt",
            "/..\\secret.txt",
            "/css\\..\\..\\secret.txt",
            "//etc/passwd",
            "/%2e%2e/secret.txt",
            "/%2e%2e/%2e%2e/secret.txt",
            "/hello.txt\x00.png",
            "/" + "../" * 20 + "etc/passwd",
        ],
    )
    async def test_escapes_are_404(self, site: Path, path: str) -> None:
        r = await get(StaticFiles(site), path)
        assert r.status == 404
        assert b"secret" not in r.body and b"root:" not in r.body

    async def test_encoded_dots_are_literal_names(self, site: Path) -> None:
        # A server decodes %2e%2e to ".." before the app sees it; double-encoded input
        # reaches us as the literal name "%2e%2e", which is just a directory here.
        (site / "%2e%2e" / "inside.txt").write_text("literal")
        r = await get(StaticFiles(site), "/%2e%2e/inside.txt")
        assert r.status == 200 and r.body == b"literal"

    async def test_symlink_escaping_root_is_404(self, site: Path) -> None:
        os.symlink(site.parent / "secret.txt", site / "link.txt")
        os.symlink(site.parent / "outside", site / "linkdir")
        app = StaticFiles(site)
        assert (await get(app, "/link.txt")).status == 404
        assert (await get(app, "/linkdir/x.txt")).status == 404

    async def test_symlink_inside_root_is_served(self, site: Path) -> None:
        os.symlink(site / "hello.txt", site / "alias.txt")
        r = await get(StaticFiles(site), "/alias.txt")
        assert r.status == 200 and r.body == b"hello"

    async def test_root_given_through_symlink(self, site: Path, tmp_path: Path) -> None:
        os.symlink(site, tmp_path / "rootlink")
        r = await get(StaticFiles(tmp_path / "rootlink"), "/hello.txt")
        assert r.status == 200


class TestHTML:
    async def test_index(self, site: Path) -> None:
        app = StaticFiles(site, html=True)
        r = await get(app, "/")
        assert r.status == 200 and r.text == "<h1>home</h1>"
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        r = await get(app, "/docs/")
        assert r.text == "<h1>docs</h1>"

    async def test_directory_without_slash_redirects(self, site: Path) -> None:
        r = await get(StaticFiles(site, html=True), "/docs", query_string=b"a=1")
        assert r.status == 307
        assert r.headers["location"] == "/docs/?a=1"
        r = await call(StaticFiles(site, html=True), http_scope("/static", root_path="/static"))
        assert r.status == 307 and r.headers["location"] == "/static/"

    async def test_directory_without_index_is_404(self, site: Path) -> None:
        assert (await get(StaticFiles(site, html=True), "/empty/")).status == 404

    async def test_custom_404_page(self, site: Path) -> None:
        app = StaticFiles(site, html=True)
        assert (await get(app, "/nope")).text == "Not Found"
        (site / "404.html").write_text("<h1>lost</h1>")
        r = await get(app, "/nope")
        assert r.status == 404 and r.text == "<h1>lost</h1>"


class TestConditional:
    async def test_if_none_match(self, site: Path) -> None:
        app = StaticFiles(site)
        etag = (await get(app, "/hello.txt")).headers["etag"]
        r = await get(app, "/hello.txt", headers=[("if-none-match", etag)])
        assert r.status == 304
        assert r.body == b""
        assert r.headers["etag"] == etag
        assert "content-length" not in r.headers
        r = await get(app, "/hello.txt", headers=[("if-none-match", f'"x", W/{etag}')])
        assert r.status == 304
        r = await get(app, "/hello.txt", headers=[("if-none-match", "*")])
        assert r.status == 304
        r = await get(app, "/hello.txt", headers=[("if-none-match", '"other"')])
        assert r.status == 200 and r.body == b"hello"

    async def test_etag_changes_with_content(self, site: Path) -> None:
        app = StaticFiles(site)
        etag = (await get(app, "/hello.txt")).headers["etag"]
        (site / "hello.txt").write_text("hello, changed")
        r = await get(app, "/hello.txt", headers=[("if-none-match", etag)])
        assert r.status == 200 and r.body == b"hello, changed"

    async def test_if_modified_since(self, site: Path) -> None:
        app = StaticFiles(site)
        mtime = os.stat(site / "hello.txt").st_mtime
        later = formatdate(mtime + 10, usegmt=True)
        earlier = formatdate(mtime - 10, usegmt=True)
        assert (await get(app, "/hello.txt", headers=[("if-modified-since", later)])).status == 304
        r = await get(app, "/hello.txt", headers=[("if-modified-since", earlier)])
        assert r.status == 200

    async def test_if_none_match_wins_over_if_modified_since(self, site: Path) -> None:
        later = formatdate(os.stat(site / "hello.txt").st_mtime + 10, usegmt=True)
        headers = [("if-none-match", '"other"'), ("if-modified-since", later)]
        assert (await get(StaticFiles(site), "/hello.txt", headers=headers)).status == 200

    @pytest.mark.parametrize(
        "value", ["garbage", "", "Mon, 99 Foo 2020", "Tue, 15 Nov 1994 08:12:31 -0000"]
    )
    async def test_malformed_dates_are_ignored(self, site: Path, value: str) -> None:
        r = await get(StaticFiles(site), "/hello.txt", headers=[("if-modified-since", value)])
        assert r.status == 200
