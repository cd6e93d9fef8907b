"""Misbehaving clients over real (blocking) sockets, and the server's memory from /proc.

Used by ``test_hostile.py`` against ``chanlite run`` processes, and runnable by hand to
print a server's RSS before, during and after an attack::

    .venv/bin/python -m tests.server.hostile ping-flood 127.0.0.1 8000 SERVER_PID
    .venv/bin/python -m tests.server.hostile fragment-flood 127.0.0.1 8000 SERVER_PID
    .venv/bin/python -m tests.server.hostile slow-readers 127.0.0.1 8000 SERVER_PID 20

(the last argument: how many attackers at once, default 1; serve
``tests/server/apps.py:pid_app``, an echo, with ``--ws-max-control-frames 0`` for the
ping flood to run past the rate limit).
"""

from __future__ import annotations

import contextlib
import socket
import sys
import time
from pathlib import Path

from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def rss_mib(pid: int) -> float:
    """The resident set size of process *pid*, in MiB (from /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def masked(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin).serialize(mask=True, extensions=[])


def connect(host: str, port: int, rcvbuf: int | None = None, path: str = "/ws") -> socket.socket:
    """A WebSocket after its handshake (a blocking socket; the 101 is consumed).
    *rcvbuf* shrinks the receive buffer (a client that reads nothing fills it quickly)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect((host, port))
    sock.sendall(HANDSHAKE.replace(b"GET /ws ", f"GET {path} ".encode(), 1))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, f"closed during the handshake: {head!r}"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def pump(sock: socket.socket, chunk: bytes, total: int, stall: float, deadline: float) -> int:
    """Send *chunk* again and again until *total* bytes went out, the server stopped
    taking them for *stall* seconds, the connection broke, or *deadline* (monotonic)
    passed. Returns the bytes sent."""
    sock.setblocking(False)
    sent = 0
    view = memoryview(chunk)
    offset = 0
    stalled_since: float | None = None
    try:
        while sent < total and time.monotonic() < deadline:
            try:
                n = sock.send(view[offset:])
            except BlockingIOError:
                now = time.monotonic()
                stalled_since = stalled_since or now
                if now - stalled_since >= stall:
                    break
                time.sleep(0.01)
                continue
            except OSError:  # reset or broken pipe: the server closed it
                break
            stalled_since = None
            sent += n
            offset = (offset + n) % len(chunk)
    finally:
        sock.setblocking(True)
    return sent


class Reader:
    """Frames the server sends on *sock*, parsed by websockets' client protocol (which
    answers the server's pings)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.parser = ClientProtocol(parse_uri("ws://x/"), state=State.OPEN, max_size=None)
        self.frames: list[Frame] = []
        self.eof = False

    def next_frame(self, timeout: float = 10.0) -> Frame | None:
        """The next frame, or None at EOF/reset."""
        deadline = time.monotonic() + timeout
        while not self.frames:
            if self.eof:
                return None
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(1 << 20)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            except TimeoutError:
                return None
            if not data:
                self.eof = True
                return None
            self.parser.receive_data(data)
            self.frames.extend(e for e in self.parser.events_received() if isinstance(e, Frame))
            for reply in self.parser.data_to_send():  # pongs, like any client
                if reply:
                    with contextlib.suppress(OSError):  # the server may be gone already
                        self.sock.sendall(reply)
        return self.frames.pop(0)

    def data_frame(self, timeout: float = 10.0) -> Frame | None:
        """The next text or binary frame (skipping control frames), None at EOF."""
        while True:
            frame = self.next_frame(timeout)
            if frame is None or frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                return frame

    def close_frame(self, timeout: float = 10.0) -> Close | None:
        """The server's close frame (skipping pongs and data), None if it never came."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frame = self.next_frame(deadline - time.monotonic())
            if frame is None:
                return None
            if frame.opcode is Opcode.CLOSE:
                return Close.parse(frame.data)
        return None


def ping_flood(
    host: str, port: int, total: int = 64 << 20, seconds: float = 20.0, path: str = "/ws"
) -> tuple[int, socket.socket]:
    """Flood pings (125-byte payloads) without reading a pong; returns the bytes the
    server took. The socket is left open: the caller closes it."""
    sock = connect(host, port, rcvbuf=4096, path=path)
    chunk = masked(Opcode.PING, b"p" * 125) * 500  # ~64 KiB
    return pump(sock, chunk, total, stall=2.0, deadline=time.monotonic() + seconds), sock


def fragment_flood_chunk() -> bytes:
    """10,000 empty continuation frames (60 KB)."""
    return masked(Opcode.CONT, b"", fin=False) * 10_000


def _attack(kind: str, host: str, port: int) -> socket.socket:  # pragma: no cover
    """One attacker of *kind*; returns its socket, left open."""
    if kind == "ping-flood":
        return ping_flood(host, port, total=32 << 20, seconds=15)[1]
    if kind == "fragment-flood":
        sock = connect(host, port)
        sock.sendall(masked(Opcode.TEXT, b"start", fin=False))
        pump(sock, fragment_flood_chunk(), 6_100_000 * 6, 2.0, time.monotonic() + 30)
        return sock
    if kind == "slow-readers":  # 1 MB messages to an echo whose answers it never reads
        sock = connect(host, port, rcvbuf=4096)
        message = masked(Opcode.TEXT, b"y" * 1_000_000)
        pump(sock, message, 40 * len(message), 2.0, time.monotonic() + 20)
        return sock
    raise SystemExit(f"unknown attack {kind!r}: ping-flood, fragment-flood or slow-readers")


def _main(kind: str, host: str, port: int, pid: int, attackers: int) -> None:  # pragma: no cover
    import threading

    before = rss_mib(pid)
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], rss_mib(pid))

    threading.Thread(target=sample, daemon=True).start()
    socks: list[socket.socket] = []
    threads = [
        threading.Thread(target=lambda: socks.append(_attack(kind, host, port)))
        for _ in range(attackers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    during = rss_mib(pid)
    for sock in socks:
        sock.close()
    time.sleep(5)
    done.set()
    print(
        f"{kind} x{attackers}: before {before:.1f} MiB, peak {peak[0]:.1f} MiB, "
        f"at the end of the attack {during:.1f} MiB, 5 s after it left {rss_mib(pid):.1f} MiB"
    )


if __name__ == "__main__":  # pragma: no cover
    kind, host, port, pid, *rest = sys.argv[1:]
    _main(kind, host, int(port), int(pid), int(rest[0]) if rest else 1)
