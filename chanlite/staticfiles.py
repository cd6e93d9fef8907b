"""``StaticFiles``: an ASGI app serving the files under one directory, and nothing else."""

from __future__ import annotations

import asyncio
import os
import stat
from email.utils import parsedate_to_datetime

from chanlite.datastructures import Headers
from chanlite.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from chanlite.types import Receive, Scope, Send

__all__ = ["StaticFiles"]


class StaticFiles:
    """Serve files under *directory* for ``GET`` and ``HEAD``.

    The request path is taken relative to the mount point (``scope["path"]`` minus
    ``scope["root_path"]``). A path that would leave the directory - ``..`` segments,
    absolute or drive paths, NUL bytes, or a symlink pointing outside - is a 404, exactly
    like a missing file, so the response reveals nothing. Other methods get 405 with
    ``Allow: GET, HEAD``. ``If-None-Match`` / ``If-Modified-Since`` give 304; a ``Range``
    of bytes gets 206 with just those bytes (416 outside the file; ``If-Range`` honoured).

    With ``html=True`` a directory serves its ``index.html`` (``/docs`` redirects to
    ``/docs/`` first, so relative links work) and a top-level ``404.html``, if present,
    is the body of 404 responses.
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, html: bool = False, check_dir: bool = True
    ) -> None:
        self.directory = os.path.realpath(os.fspath(directory))
        self.html = html
        if check_dir and not os.path.isdir(self.directory):
            raise RuntimeError(f"StaticFiles directory {os.fspath(directory)!r} does not exist.")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1000})
                return
            raise RuntimeError(f"StaticFiles cannot serve an ASGI {scope['type']!r} scope.")
        response = await self.get_response(scope)
        await response(scope, receive, send)

    def _relative_path(self, scope: Scope) -> str:
        path: str = scope["path"]
        root_path: str = scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :]
        return path

    async def get_response(self, scope: Scope) -> Response:
        """The response for *scope*: a file, a redirect, 304, 404 or 405."""
        if scope["method"] not in ("GET", "HEAD"):
            return PlainTextResponse(
                "Method Not Allowed", status_code=405, headers={"allow": "GET, HEAD"}
            )
        path = self._relative_path(scope)
        found = await asyncio.to_thread(self.lookup, path)
        if found is None:
            return await self._not_found()
        full_path, st = found
        if stat.S_ISDIR(st.st_mode):
            # lookup() only returns a directory when html=True and it has an index.html.
            redirect = scope["path"] + "/"
            query: bytes = scope.get("query_string", b"")
            if query:
                redirect += "?" + query.decode("latin-1")
            return RedirectResponse(redirect, status_code=307)
        response = FileResponse(full_path, stat_result=st)
        if self._not_modified(Headers(scope.get("headers", [])), response):
            return _not_modified_response(response)
        return response

    def lookup(self, path: str) -> tuple[str, os.stat_result] | None:
        """Resolve a URL path to ``(real file path, stat)`` inside the directory, or None.

        Blocking (it stats files): call it on a worker thread.
        """
        parts: list[str] = []
        for part in path.split("/"):
            if part in ("", "."):
                continue
            if (
                part == ".."
                or "\\" in part
                or "\x00" in part
                or os.sep in part
                or (os.altsep is not None and os.altsep in part)
                or os.path.isabs(part)
                or os.path.splitdrive(part)[0]
            ):
                return None
            parts.append(part)
        candidate = os.path.realpath(os.path.join(self.directory, *parts))
        # realpath resolved every symlink, so this also rejects links leading outside.
        if os.path.commonpath([candidate, self.directory]) != self.directory:
            return None
        try:
            st = os.stat(candidate)
        except (OSError, ValueError):
            return None
        if stat.S_ISREG(st.st_mode):
            return candidate, st
        if stat.S_ISDIR(st.st_mode) and self.html:
            index = os.path.join(candidate, "index.html")
            try:
                index_st = os.stat(index)
            except OSError:
                return None
            if not stat.S_ISREG(index_st.st_mode):
                return None
            if not path.endswith("/"):
                return candidate, st
            return index, index_st
        return None

    async def _not_found(self) -> Response:
        if self.html:
            page = os.path.join(self.directory, "404.html")
            try:
                st = await asyncio.to_thread(os.stat, page)
            except OSError:
                pass
            else:
                if stat.S_ISREG(st.st_mode):
                    return FileResponse(page, status_code=404, stat_result=st)
        return PlainTextResponse("Not Found", status_code=404)

    @staticmethod
    def _not_modified(request_headers: Headers, response: Response) -> bool:
        etag = response.headers.get("etag")
        if_none_match = request_headers.get("if-none-match")
        if if_none_match is not None:
            # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2); weak comparison.
            if etag is None:
                return False
            tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
            return "*" in tags or etag.removeprefix("W/") in tags
        if_modified_since = request_headers.get("if-modified-since")
        last_modified = response.headers.get("last-modified")
        if if_modified_since and last_modified:
            try:
                return parsedate_to_datetime(if_modified_since) >= parsedate_to_datetime(
                    last_modified
                )
            except (TypeError, ValueError, IndexError):
                # A malformed date is ignored, as if the header were absent.
                return False
        return False


def _not_modified_response(response: Response) -> Response:
    keep = ("etag", "last-modified", "cache-control", "expires", "vary", "content-location")
    headers = {name: value for name, value in response.headers.items() if name in keep}
    return Response(b"", status_code=304, headers=headers)
