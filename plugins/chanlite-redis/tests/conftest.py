"""Fixtures: a real ``redis-server`` on a free loopback port, started and stopped here."""

from __future__ import annotations

import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from chanlite_redis import RedisLayer

INSTALL_HINT = (
    "redis-server is not on PATH. The Redis layer's tests need a real Redis server: "
    "run `make system-deps` (or `apt-get install redis-server`) and try again."
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process on 127.0.0.1 that a test can stop and start again."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(INSTALL_HINT, pytrace=False)
        self.binary = binary
        self.directory = directory
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.tls: tuple[Path, Path] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *extra: str, tls: tuple[Path, Path] | None = None) -> None:
        """Start (again) on the same port; with *tls* (cert, key) it speaks only TLS."""
        self.tls = tls
        ports = ["--port", str(self.port)]
        if tls is not None:
            ports = [
                "--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", str(tls[0]), "--tls-key-file", str(tls[1]),
                "--tls-ca-cert-file", str(tls[0]), "--tls-auth-clients", "no",
            ]  # fmt: skip
        self.process = subprocess.Popen(
            [
                self.binary,
                *ports,
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
                "--loglevel", "warning",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                pytest.fail(f"redis-server exited at start: {err}", pytrace=False)
            try:
                if self._answers():
                    return
            except OSError:
                pass
            time.sleep(0.02)
        pytest.fail(f"redis-server did not answer on port {self.port}", pytrace=False)

    def _answers(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw:
            sock: socket.socket = raw
            if self.tls is not None:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                sock = context.wrap_socket(raw)
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server shared by the session (tests keep apart by key prefix)."""
    with tempfile.TemporaryDirectory(prefix="chanlite-redis-") as directory:
        server = RedisServer(Path(directory))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which the test may kill and restart."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def unstarted_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for this test to start with its own options (stopped afterwards)."""
    server = RedisServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test uses."""
    return f"t{secrets.token_hex(4)}:"


@pytest.fixture
async def make_redis_layer(redis_server: RedisServer, prefix: str) -> AsyncIterator[Any]:
    """Factory of layers on the shared server under this test's prefix, closed afterwards."""
    made: list[RedisLayer] = []

    async def make(**options: Any) -> RedisLayer:
        options.setdefault("prefix", prefix)
        layer = RedisLayer(redis_server.url, **options)
        made.append(layer)
        return layer

    yield make
    for layer in made:
        await layer.close()
