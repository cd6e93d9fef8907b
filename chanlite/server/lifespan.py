"""ASGI lifespan: run the app's startup before serving and its shutdown after."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from chanlite.types import ASGIApp, Message

logger = logging.getLogger("chanlite.server")


class LifespanError(RuntimeError):
    """The application's startup or shutdown failed; the message says why."""


class Lifespan:
    """Drives one ``lifespan`` scope. ``mode`` is ``"auto"``, ``"on"`` or ``"off"``.

    In ``auto`` mode an app that raises before answering the startup event is taken not
    to support lifespan, and serving goes on without it.
    """

    def __init__(
        self,
        app: ASGIApp,
        mode: str,
        state: dict[str, Any],
        extensions: dict[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.extensions = extensions or {}
        self.mode = mode
        self.state = state
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._startup_done = asyncio.Event()
        self._shutdown_done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.failed: str | None = None
        self.unsupported = False

    async def startup(self) -> None:
        """Run startup; raises :class:`LifespanError` when the app reports failure."""
        if self.mode == "off":
            return
        self._task = asyncio.get_running_loop().create_task(self._main())
        await self._inbox.put({"type": "lifespan.startup"})
        await self._startup_done.wait()
        if self.failed is not None:
            raise LifespanError(f"Application startup failed: {self.failed}")

    async def shutdown(self) -> None:
        """Run shutdown (a no-op when lifespan is off or unsupported)."""
        if self._task is None or self.unsupported or self._task.done():
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        await self._shutdown_done.wait()
        if self.failed is not None:
            logger.error("Application shutdown failed: %s", self.failed)

    async def _main(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "state": self.state,
            "extensions": self.extensions,
        }
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:
            if not self._startup_done.is_set() and self.mode == "auto":
                self.unsupported = True
                logger.debug("The application does not support lifespan: %r", exc)
            else:
                self.failed = f"{type(exc).__name__}: {exc}"
                if self._startup_done.is_set():
                    logger.error("Exception in lifespan", exc_info=exc)
                else:
                    # startup() raises LifespanError with the message; the traceback is
                    # for --log-level debug.
                    logger.debug("Exception in lifespan startup", exc_info=exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._startup_done.set()
            self._shutdown_done.set()

    async def _receive(self) -> Message:
        return await self._inbox.get()

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self._startup_done.set()
        elif kind == "lifespan.startup.failed":
            self.failed = message.get("message") or "lifespan.startup.failed"
            self._startup_done.set()
        elif kind == "lifespan.shutdown.complete":
            self._shutdown_done.set()
        elif kind == "lifespan.shutdown.failed":
            self.failed = message.get("message") or "lifespan.shutdown.failed"
            self._shutdown_done.set()
        else:
            raise RuntimeError(f"Unexpected ASGI lifespan message {kind!r}")
