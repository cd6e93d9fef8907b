"""The boot sequence of ``chanlite run``, written once for the command and its workers.

:func:`configure` (options -> :class:`Config`, logging, the working directory on
``sys.path``), :func:`load` (the app, or :class:`~chanlite.importer.AppLoadError`) and
:func:`serve_sockets` (a :class:`Server` on the given sockets in a fresh loop; raises
:class:`~chanlite.server.lifespan.LifespanError` when the app's startup fails) are what
both the single-process command and each worker process run. :func:`worker` is the body of
one worker: the supervisor in :mod:`chanlite.server.workers` is handed it as its target
and knows nothing of the command line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from chanlite.importer import AppLoadError, load_app
from chanlite.server.config import Config
from chanlite.server.lifespan import LifespanError
from chanlite.server.main import HANDLED_SIGNALS, Server, run_loop, setup_logging

#: The exit status when the application's lifespan startup failed.
EXIT_STARTUP_FAILED = 3
logger = logging.getLogger("chanlite.server")

__all__ = [
    "EXIT_STARTUP_FAILED",
    "AppLoadError",
    "configure",
    "load",
    "serve_sockets",
    "worker",
]


def configure(options: dict[str, Any]) -> Config:
    """The :class:`Config` for *options* (``ValueError`` if one is invalid), with logging
    set up and the working directory importable (``chanlite run app:app`` finds
    ``./app.py``)."""
    config = Config(**options)
    setup_logging(config)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return config


def load(config: Config, target: str) -> Any:
    """Load the app *target* into ``config.app`` (with ``config.layer`` applied) and
    return it; raises :class:`AppLoadError`."""
    config.app = load_app(target, config.layer)
    return config.app


def serve_sockets(
    config: Config,
    sockets: Sequence[Any],
    signals: Sequence[int] = HANDLED_SIGNALS,
    on_started: Callable[[], None] | None = None,
    repeat_signal_forces: bool = True,
) -> None:
    """Serve ``config.app`` on *sockets* until one of *signals*; blocks.

    *on_started* is called once the server listens (after the app's lifespan startup).
    Raises :class:`LifespanError` when that startup fails."""
    server = Server(config)
    server.repeat_signal_forces = repeat_signal_forces

    async def main() -> None:
        serving = asyncio.ensure_future(server.serve_with_signals(sockets, signals))
        started = asyncio.ensure_future(server.started.wait())
        await asyncio.wait({serving, started}, return_when=asyncio.FIRST_COMPLETED)
        if server.started.is_set() and on_started is not None:
            on_started()
        started.cancel()
        await serving

    run_loop(main())


def worker(target: str, options: dict[str, Any], sock: Any, ready: Any) -> None:
    """One worker process: the boot sequence, then serve on *sock*, or on a socket of
    its own bound with ``SO_REUSEPORT`` when *sock* is None. Releases *ready* once
    listening; exits 1 when the app cannot be loaded or bound, 3 when its startup fails."""
    import signal

    config = configure(options)
    try:
        load(config, target)
    except AppLoadError as exc:
        debug = config.log_level.lower() in ("debug", "trace")
        logger.error("%s", exc, exc_info=exc.__cause__ if debug else None)
        sys.exit(1)
    if sock is None:
        try:
            sock = config.bind_socket(reuse_port=True)
        except OSError as exc:
            logger.error("Could not listen on %s:%s: %s", config.host, config.port, exc)
            sys.exit(1)
    try:
        serve_sockets(
            config,
            [sock],
            signals=(signal.SIGTERM,),
            on_started=ready.release if ready is not None else None,
            repeat_signal_forces=False,
        )
    except LifespanError as exc:
        logger.error("%s", exc)
        sys.exit(EXIT_STARTUP_FAILED)
