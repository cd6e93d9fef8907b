"""The :class:`Server`: bind, serve, tick, and shut down gracefully.

``serve(app, port=8000)`` blocks until SIGINT/SIGTERM; ``await serve_async(app, ...)`` is
the same inside a running loop. Tests use :class:`Server` directly::

    server = Server(Config(app, port=0))
    task = asyncio.create_task(server.serve())
    await server.started.wait()
    ...  # talk to 127.0.0.1:server.bound_port
    server.should_exit = True
    await task
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from chanlite.server import logs
from chanlite.server.config import Config
from chanlite.server.connection import HTTPConnection
from chanlite.server.counters import EXTENSION
from chanlite.server.http import default_headers
from chanlite.server.lifespan import Lifespan
from chanlite.server.memory import TRIM_INTERVAL, collect_garbage, release_free_memory
from chanlite.server.state import ServerState, listener_address
from chanlite.types import ASGIApp

logger = logging.getLogger("chanlite.server")
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Server:
    """One server process serving :attr:`Config.app` on one or more listening sockets."""

    def __init__(self, config: Config) -> None:
        if config.app is None:
            raise ValueError("Config.app must be set to serve")
        self.config = config
        self.app: ASGIApp = config.app
        self.started = asyncio.Event()
        self._exit = asyncio.Event()
        self.force_exit = False
        self.sockets: list[socket.socket] = []
        self.servers: list[asyncio.base_events.Server] = []
        self.state: ServerState | None = None
        self.lifespan: Lifespan | None = None
        self._signals_received = 0
        #: Whether a second SIGINT/SIGTERM forces the exit. Workers turn it off: a signal
        #: sent to the whole process group reaches them twice (directly and forwarded by
        #: the supervisor), and that must not skip the app's shutdown.
        self.repeat_signal_forces = True
        self._port: int | None = None
        self.announce = False  # log the address once listening (serve(); the CLI prints its own)

    @property
    def should_exit(self) -> bool:
        """Set to True to begin a graceful shutdown."""
        return self._exit.is_set()

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        if value:
            self._exit.set()

    @property
    def bound_port(self) -> int | None:
        """The TCP port actually bound (useful with ``port=0``)."""
        return self._port

    def shutdown(self) -> None:
        """Begin a graceful shutdown (same as one SIGTERM)."""
        self.should_exit = True

    async def serve(self, sockets: Sequence[socket.socket] | None = None) -> None:
        """Run until :attr:`should_exit`; raises :class:`LifespanError` when startup fails
        and :class:`OSError` when the address cannot be bound."""
        config = self.config
        loop = asyncio.get_running_loop()
        state = ServerState(config, self.app)
        self.state = state
        self._update_date()
        # The app may read this process's counters (chanlite.server.counters).
        extensions = {EXTENSION: {"server": state.counters, "metrics_path": config.metrics_path}}
        self.lifespan = Lifespan(self.app, config.lifespan, state.app_state, extensions)
        await self.lifespan.startup()

        self.sockets = list(sockets) if sockets is not None else [config.bind_socket()]

        for sock in self.sockets:
            factory = functools.partial(HTTPConnection, state, loop, listener_address(sock))
            self.servers.append(
                await loop.create_server(factory, sock=sock, backlog=config.backlog)
            )
        for sock in self.sockets:
            name = sock.getsockname()
            if isinstance(name, tuple) and self._port is None:
                self._port = int(name[1])
        self.started.set()
        if self.announce:  # serve(): this line is the start line
            where = config.uds or f"http://{config.host}:{self._port}"
            logger.info("chanlite serving on %s (Ctrl+C to quit)", where)
        else:
            logger.info("Started server process [%d]", os.getpid())
        ticker = loop.create_task(self._tick_forever())
        try:
            await self._exit.wait()
        finally:
            ticker.cancel()
            await self._shutdown(owns_sockets=sockets is None)

    async def serve_with_signals(
        self,
        sockets: Sequence[socket.socket] | None = None,
        signals: Sequence[int] = HANDLED_SIGNALS,
    ) -> None:
        """:meth:`serve` with SIGINT/SIGTERM handlers installed (for the main thread)."""
        self.install_signal_handlers(signals)
        await self.serve(sockets)

    def _update_date(self) -> None:
        assert self.state is not None
        config = self.config
        date = email.utils.formatdate(usegmt=True).encode() if config.date_header else None
        self.state.date = date
        self.state.default_headers = default_headers(date, config.server_header)

    async def _tick_forever(self) -> None:
        state = self.state
        assert state is not None
        loop = asyncio.get_running_loop()
        last_second = int(time.time())
        next_trim = 0.0
        while True:
            await asyncio.sleep(self.config.tick_interval)
            second = int(time.time())
            if second != last_second:
                last_second = second
                self._update_date()
            now = loop.time()
            for conn in list(state.connections):
                conn.tick(now)
            requested = state.trim_requested
            # One tick after the request (the app has dropped the connection's queues by
            # then), and no more often than TRIM_INTERVAL.
            if requested and now - requested >= self.config.tick_interval and now >= next_trim:
                state.trim_requested = 0.0
                next_trim = now + TRIM_INTERVAL
                collect_garbage()
                loop.run_in_executor(None, release_free_memory)

    async def _shutdown(self, owns_sockets: bool) -> None:
        state = self.state
        assert state is not None
        for server in self.servers:
            server.close()  # stop accepting
        logger.info("Shutting down: draining %d connection(s)", len(state.connections))
        for conn in list(state.connections):
            conn.shutdown()
        timeout = self.config.timeout_graceful_shutdown
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        # Drain: in-flight requests finish, WebSockets complete their 1001 close.
        while (state.connections or state.tasks) and not self.force_exit:
            if deadline is not None and loop.time() >= deadline:
                logger.warning("Graceful shutdown timed out; closing remaining connections")
                break
            now = loop.time()
            for conn in list(state.connections):
                conn.tick(now)
            await asyncio.sleep(0.05)
        for conn in list(state.connections):
            if conn.transport is not None:
                conn.transport.abort()
        for task in list(state.tasks):
            task.cancel()
        if state.tasks:
            await asyncio.wait(list(state.tasks), timeout=1.0)
        if self.lifespan is not None and not self.force_exit:
            await self.lifespan.shutdown()
        if owns_sockets:
            for sock in self.sockets:
                sock.close()
            if self.config.uds:
                with contextlib.suppress(OSError):
                    os.unlink(self.config.uds)
        logger.info("Stopped server process [%d]", os.getpid())

    # signals --------------------------------------------------------------------------

    def install_signal_handlers(self, signals: Sequence[int] = HANDLED_SIGNALS) -> None:
        """SIGINT/SIGTERM: first begins a graceful shutdown, the second forces it."""
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for sig in signals:
            try:
                loop.add_signal_handler(sig, self.handle_exit, sig)
            except (NotImplementedError, RuntimeError):
                signal.signal(sig, lambda s, f: self.handle_exit(s))

    def handle_exit(self, sig: int) -> None:
        self._signals_received += 1
        if self._signals_received > 1 and not self.repeat_signal_forces:
            return  # a worker: the supervisor decides when a stop is forced
        if self._signals_received > 1 or self.should_exit:
            self.force_exit = True
        self.should_exit = True


def _make_config(app: ASGIApp, options: dict[str, Any]) -> Config:
    unknown = set(options) - Config.option_names()
    if unknown:
        raise TypeError(f"Unknown server option(s): {', '.join(sorted(unknown))}")
    return Config(app=app, **options)


async def serve_async(app: ASGIApp, **options: Any) -> None:
    """Serve *app* in the running loop until SIGINT/SIGTERM (options as in :class:`Config`)."""
    server = Server(_make_config(app, options))
    server.announce = True
    server.install_signal_handlers()
    await server.serve()


def serve(app: ASGIApp, **options: Any) -> None:
    """Serve *app* until SIGINT/SIGTERM; uses uvloop when it is installed."""
    config = _make_config(app, options)
    setup_logging(config)
    server = Server(config)
    server.announce = True
    run_loop(server.serve_with_signals())


def run_loop(main: Any) -> None:
    """Run a coroutine on uvloop when available, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        if sys.version_info >= (3, 12):
            uvloop.run(main)
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(main)


def setup_logging(config: Config) -> None:
    """Set chanlite's log levels; print to stderr unless logging is configured already
    (see :mod:`chanlite.server.logs`)."""
    logs.setup_logging(
        config.log_level_number, config.access_log, config.log_config, config.log_format
    )
