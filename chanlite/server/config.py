"""Every server option in one dataclass, with its default.

The names mirror the ``chanlite run`` options with underscores (``--ws-max-size`` is
``ws_max_size``), so ``serve(app, ws_max_size=...)`` and the command line agree.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from chanlite.types import ASGIApp

LifespanMode = Literal["auto", "on", "off"]
LOG_LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": 5,
}


@dataclass
class Config:
    """Settings of one server; ``Config(app, port=0)`` is enough for a test."""

    app: ASGIApp | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    uds: str | None = None
    fd: int | None = None
    backlog: int = 2048
    workers: int = 1
    reload: bool = False
    reload_dirs: list[str] = field(default_factory=list)
    layer: str | None = None
    # Where the app answers Prometheus scrapes (offered to it in the lifespan scope).
    metrics_path: str | None = None
    log_level: str = "info"
    access_log: bool = True
    # A logging configuration file (dictConfig .json/.yaml, or fileConfig .ini), and the
    # format of chanlite's own stderr lines when there is none: "text" or "json".
    log_config: str | None = None
    log_format: Literal["text", "json"] = "text"
    proxy_headers: bool = True
    forwarded_allow_ips: str = "127.0.0.1"
    root_path: str = ""
    server_header: bool = True
    date_header: bool = True
    # WebSocket
    ws_max_size: int = 1024 * 1024
    ws_ping_interval: float | None = 20.0
    ws_ping_timeout: float | None = 20.0
    ws_per_message_deflate: bool = True
    ws_close_timeout: float = 5.0
    ws_handshake_timeout: float = 10.0
    # Limits on what one WebSocket client may cost (see README.md, "The per-connection
    # budget"). Frames of one message, and pings + pongs received per second:
    ws_max_fragments: int | None = 65536
    ws_max_control_frames: int | None = 100
    # Outgoing bytes: above ``high_water`` the server stops reading from the client; past
    # ``ws_send_limit`` bytes queued, or above ``high_water`` for ``ws_send_timeout``
    # seconds, the slow-consumer policy closes it (1013 "slow consumer").
    ws_send_limit: int = 8 * 1024 * 1024
    ws_send_timeout: float | None = 30.0
    # HTTP limits: httptools has no header limits of its own, so the server keeps them.
    limit_request_line: int = 8190
    limit_request_fields: int = 100
    limit_request_header_size: int = 32768
    # Timeouts
    timeout_request_header: float = 10.0
    timeout_keep_alive: float = 5.0
    # A request body that stalls (no byte for this long while the app waits for it), and a
    # response the client does not read (the write buffer stays full this long, also the
    # grace a closed connection gets to take what was written before it is aborted).
    timeout_request_body: float | None = 30.0
    timeout_response_write: float | None = 30.0
    timeout_graceful_shutdown: float | None = 30.0
    limit_concurrency: int | None = None
    lifespan: LifespanMode = "auto"
    # Flow control: pause reading above this many buffered request/message bytes, and make
    # ``send`` wait while the transport buffer is above it.
    high_water: int = 64 * 1024
    # How often the one shared timer checks deadlines and keep-alive pings, in seconds.
    tick_interval: float = 0.5

    def __post_init__(self) -> None:
        if self.lifespan not in ("auto", "on", "off"):
            raise ValueError(f"lifespan must be auto, on or off, not {self.lifespan!r}")
        if self.log_format not in ("text", "json"):
            raise ValueError(f"log_format must be text or json, not {self.log_format!r}")
        if self.log_level.lower() not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.limit_concurrency is not None and self.limit_concurrency < 1:
            raise ValueError("limit_concurrency must be at least 1")
        if self.ws_send_limit < self.high_water:
            raise ValueError("ws_send_limit must be at least high_water")
        self.trusted_hosts = TrustedHosts(self.forwarded_allow_ips)

    @classmethod
    def option_names(cls) -> set[str]:
        """Names accepted as keyword options by :func:`chanlite.server.serve`."""
        return {f.name for f in fields(cls)} - {"app"}

    @property
    def log_level_number(self) -> int:
        return LOG_LEVELS[self.log_level.lower()]

    def can_reuse_port(self) -> bool:
        """Whether each worker can bind its own socket to host/port (``SO_REUSEPORT``)."""
        return hasattr(socket, "SO_REUSEPORT") and self.fd is None and self.uds is None

    def bind_socket(self, reuse_port: bool = False, listen: bool = True) -> socket.socket:
        """Create the listening socket the options describe (host/port, ``uds`` or ``fd``).

        *reuse_port* sets ``SO_REUSEPORT`` on a host/port socket, so that several processes
        can each listen on the same port and the kernel spreads connections among them;
        ``listen=False`` only binds (a supervisor holding the port for its workers)."""
        if self.fd is not None:
            sock = socket.socket(fileno=self.fd)  # family and type come from the socket
        elif self.uds is not None:
            import os
            import stat

            if os.path.exists(self.uds) and stat.S_ISSOCK(os.stat(self.uds).st_mode):
                os.unlink(self.uds)  # a stale socket file from a previous run
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(self.uds)
            os.chmod(self.uds, 0o666)
        else:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                sock.bind((self.host, self.port))
            except OSError:
                sock.close()
                raise
        sock.set_inheritable(True)
        if listen:
            sock.listen(self.backlog)
        sock.setblocking(False)
        return sock


class TrustedHosts:
    """The ``--forwarded-allow-ips`` set: ``*``, addresses, networks, or ``unix:``."""

    __slots__ = ("always", "hosts", "networks")

    def __init__(self, spec: str) -> None:
        self.always = False
        self.hosts: set[str] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            if item == "*":
                self.always = True
            elif "/" in item:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            else:
                self.hosts.add(item)

    def __contains__(self, host: Any) -> bool:
        if self.always:
            return True
        if not isinstance(host, str) or not host:
            return False
        if host in self.hosts:
            return True
        if not self.networks:
            return False
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(addr in net for net in self.networks)
