"""The least a Python server on uvloop can do per WebSocket handshake: a reference point.

Answers the upgrade from a template and the client's close with a close, nothing else
(no HTTP parsing beyond finding the key, no app, no framing library), but asks the
transport for the peer and local addresses as any ASGI server must for the scope::

    taskset -c 0 .venv/bin/python bench/tools/handshake_floor.py 18090 &
    taskset -c 1 bench/out/wsload hs --port 18090 --warmup 1 --duration 4

Not a server to use: it trusts the client to send one whole request and one close frame.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import sys

import uvloop

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
HEAD = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"


class Floor(asyncio.Protocol):
    """One connection: a 101 for the request, a 1000 close for the close frame."""

    transport: asyncio.Transport
    upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("peername")
        transport.get_extra_info("sockname")

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            start = data.lower().find(b"sec-websocket-key: ") + 19
            key = data[start : data.find(b"\r\n", start)]
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            self.transport.write(HEAD + b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            self.upgraded = True
        elif data and data[0] & 0x0F == 8:
            self.transport.write(b"\x88\x02\x03\xe8")
            self.transport.close()


async def main(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Floor, "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
