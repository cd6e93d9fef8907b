"""``--workers N`` and ``--reload``: a supervisor process and its worker processes.

Where the platform has ``SO_REUSEPORT`` and the address is a host and port, each worker
(spawned, so each one imports the app afresh) binds its own listening socket to the port
and the kernel spreads connections evenly among them; the supervisor only holds the port.
Otherwise (``--fd``, ``--uds``, ``--reload``) the supervisor binds the listening socket
once and hands it to every worker. A worker that
dies is replaced. SIGINT/SIGTERM is forwarded to every worker as SIGTERM, each drains
gracefully, and a second signal forces them. With ``--reload`` the supervisor restarts the
worker(s) when a watched Python file changes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

logger = logging.getLogger("chanlite.server")
RESTART_BACKOFF = 1.0  # seconds between restarts of a worker that dies right after starting


def _worker_process(
    target: Callable[..., None], args: tuple[Any, ...], sock: socket.socket | None, ready: Any
) -> None:
    """What runs in each spawned process: ignore Ctrl+C (the supervisor forwards it as
    SIGTERM), stop with the supervisor, then ``target(*args, sock, ready)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()
    target(*args, sock, ready)


def _exit_with_parent() -> None:
    """Have the kernel send SIGTERM (a graceful stop) if the supervisor dies unannounced,
    e.g. SIGKILL, so no worker is left serving as an orphan. Linux only; elsewhere the
    supervisor's own signal handling is all there is."""
    parent = os.getppid()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        if libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM)) != 0:
            return
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


class Supervisor:
    """Keeps ``options["workers"]`` worker processes alive (one with ``--reload``).

    Each worker runs ``target(*args, sock, ready)`` in a spawned process: *target* must be
    importable by name (a module-level function, e.g. :func:`chanlite.server.boot.worker`),
    *sock* is the shared listening socket or None (``own_sockets``: each worker binds its
    own), and *ready* a semaphore the worker releases once it listens.
    """

    def __init__(
        self,
        target: Callable[..., None],
        args: tuple[Any, ...],
        options: dict[str, Any],
        sock: socket.socket,
        own_sockets: bool = False,
    ) -> None:
        self.target = target
        self.args = args
        self.options = options
        self.sock = sock  # shared with the workers, or (own_sockets) only holding the port
        self.own_sockets = own_sockets
        self.count = 1 if options.get("reload") else int(options.get("workers") or 1)
        self.exit = threading.Event()
        self.signals = 0
        self.processes: list[BaseProcess] = []
        self.started_at: dict[int, float] = {}
        self._ctx = multiprocessing.get_context("spawn")
        self.ready = self._ctx.Semaphore(0)  # released by each worker once it listens

    def _spawn(self) -> BaseProcess:
        process = self._ctx.Process(
            target=_worker_process,
            args=(self.target, self.args, None if self.own_sockets else self.sock, self.ready),
            name="chanlite-worker",
        )
        process.start()
        self.started_at[id(process)] = time.monotonic()
        logger.info("Started worker process [%s]", process.pid)
        return process

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        self.exit.set()
        # The first signal asks every worker to drain; a second one forces them out.
        force = self.signals > 1
        for process in self.processes:
            if process.pid is not None and process.exitcode is None:
                os.kill(process.pid, signal.SIGKILL if force else signal.SIGTERM)

    def run(self, on_ready: Callable[[], None] | None = None) -> int:
        """Supervise until SIGINT/SIGTERM; returns the exit status. *on_ready* is called
        once every worker listens; a worker that dies before that ends the run (status 1,
        or 3 when its application start-up failed)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        reloader = None
        if self.options.get("reload"):
            from chanlite.server.reload import Reloader

            reloader = Reloader(self.options.get("reload_dirs") or [], self.exit)
            logger.info("Watching %s for changes", ", ".join(reloader.dirs))
        self.processes = [self._spawn() for _ in range(self.count)]
        waiting = self.count
        while waiting and not self.exit.is_set():
            if self.ready.acquire(timeout=0.1):
                waiting -= 1
                continue
            dead = [p for p in self.processes if p.exitcode is not None]
            if dead:
                self.exit.set()
                self._stop_all()
                return 3 if dead[0].exitcode == 3 else 1
        if on_ready is not None and not self.exit.is_set():
            on_ready()
        while not self.exit.is_set():
            if reloader is not None:
                changed = reloader.changed()
                if changed and not self.exit.is_set():
                    logger.warning("Changes in %s; restarting", ", ".join(changed[:3]))
                    self._restart_all()
            else:
                self.exit.wait(0.2)
            self._replace_dead()
        return self._stop_all()

    def _replace_dead(self) -> None:
        for index, process in enumerate(self.processes):
            if process.exitcode is None or self.exit.is_set():
                continue
            age = time.monotonic() - self.started_at.pop(id(process), 0.0)
            logger.warning(
                "Worker process [%s] died (exit code %s); starting another",
                process.pid,
                process.exitcode,
            )
            if age < RESTART_BACKOFF:
                self.exit.wait(RESTART_BACKOFF)  # do not spin on a worker that cannot start
                if self.exit.is_set():
                    return
            self.processes[index] = self._spawn()

    def _restart_all(self) -> None:
        for process in self.processes:
            if process.pid is not None and process.exitcode is None:
                os.kill(process.pid, signal.SIGTERM)
        self._join(self.processes, timeout=self._grace())
        self.processes = [self._spawn() for _ in range(self.count)]

    def _grace(self) -> float:
        grace = self.options.get("timeout_graceful_shutdown")
        return (float(grace) if grace is not None else 30.0) + 5.0

    def _join(self, processes: list[BaseProcess], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                logger.warning("Worker process [%s] did not stop; killing it", process.pid)
                process.kill()
                process.join(5)

    def _stop_all(self) -> int:
        logger.info("Stopping %d worker process(es)", len(self.processes))
        self._join(self.processes, timeout=self._grace())
        self.sock.close()
        return 0
