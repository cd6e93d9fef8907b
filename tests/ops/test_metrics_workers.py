"""``/metrics`` of a real ``chanlite run --workers 2``: scraped with prometheus-client's own
parser, the numbers of both workers add up (never twice) and move as sockets open,
messages flow, events are dropped for a full member and slow consumers are closed."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from tests.server.procs import Running, served, start

__all__ = ["served"]

pytestmark = pytest.mark.timeout(120)


def scrape(server: Running) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one scrape, summed over the ``pid`` label (per-worker gauges)."""
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(server.get("/metrics")):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "pid"))
            key = (sample.name, labels)
            samples[key] = samples.get(key, 0.0) + sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def eventually(server: Running, check: Any, timeout: float = 20.0) -> dict[Any, float]:
    """Scrape until *check(samples)* holds (workers copy their numbers once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = await asyncio.to_thread(scrape, server)
        if check(samples):
            return samples
        assert time.monotonic() < deadline, f"never true; last scrape: {samples}"
        await asyncio.sleep(0.2)


def start_two(tmp_path: Path, *extra: str) -> Running:
    return start(
        "tests/ops/ops_app.py:app",
        "--layer",
        f"sqlite:///{tmp_path / 'ops.db'}",
        "--workers",
        "2",
        "--metrics-path",
        "/metrics",
        "--no-access-log",
        "--log-level",
        "warning",
        *extra,
    )


async def test_two_workers_add_up_and_move(tmp_path: Path, served: list[Running]) -> None:
    server = start_two(tmp_path)
    served.append(server)
    ws_url = server.url.replace("http://", "ws://")
    base = await eventually(server, lambda s: ("chanlite_http_requests_total", ()) in s)
    # Both workers report: the per-worker gauges carry two pids.
    families = {f.name: f for f in text_string_to_metric_families(server.get("/metrics"))}
    pids = {s.labels["pid"] for s in families["chanlite_process_resident_memory_bytes"].samples}
    assert len(pids) == 2, families["chanlite_process_resident_memory_bytes"].samples

    sockets = [await connect(f"{ws_url}/room/a") for _ in range(6)]
    try:
        for ws in sockets:
            assert (await ws.recv()).startswith("joined")
        open_now = await eventually(
            server, lambda s: value(s, "chanlite_connections_open", kind="websocket") == 6
        )
        assert (
            value(open_now, "chanlite_websocket_accepted_total")
            - value(base, "chanlite_websocket_accepted_total")
            == 6
        )
        for n in range(10):
            await sockets[0].send(f"m{n}")
        for ws in sockets:
            for n in range(10):
                assert await asyncio.wait_for(ws.recv(), 10) == f"m{n}"
        flowed = await eventually(
            server,
            lambda s: (
                value(s, "chanlite_websocket_messages_total", direction="in")
                - value(base, "chanlite_websocket_messages_total", direction="in")
                >= 10
                and value(s, "chanlite_broadcast_member_writes_total") >= 60
            ),
        )
        assert value(flowed, "chanlite_layer_sends_total", verb="broadcast") >= 10
        assert value(flowed, "chanlite_websocket_messages_total", direction="out") >= 66
        assert value(flowed, "chanlite_websocket_bytes_total", direction="in") > 0
    finally:
        for ws in sockets:
            await ws.close()
    await eventually(server, lambda s: value(s, "chanlite_connections_open", kind="websocket") == 0)
    # Drops: 105 events for a member nobody reads, whose channel holds 100.
    assert value(flowed, "chanlite_dropped_total", reason="channel_full") == 0
    await asyncio.to_thread(server.get, "/fill/105", 30)
    dropped = await eventually(
        server, lambda s: value(s, "chanlite_dropped_total", reason="channel_full") >= 5
    )
    assert value(dropped, "chanlite_dropped_total", reason="channel_full") == 5
    assert value(dropped, "chanlite_layer_sends_total", verb="group_send") == 105


async def test_a_slow_consumer_shows_in_the_metrics(tmp_path: Path, served: list[Running]) -> None:
    server = start_two(tmp_path, "--ws-send-timeout", "1")
    served.append(server)
    layer = f"sqlite:///{tmp_path / 'ops.db'}"
    port = int(server.url.rsplit(":", 1)[1])
    sock = never_reading_client(port, "/flood/slow")
    client_port = sock.getsockname()[1]
    try:
        samples = await eventually(
            server, lambda s: value(s, "chanlite_slow_consumers_total", kind="bytes") >= 1
        )
        waited = value(samples, "chanlite_slow_consumer_waiting_bytes_total", kind="bytes")
        assert waited > 0
        # chanlite inspect names the connection, its groups and what was waiting.
        deadline = time.monotonic() + 20  # published on the worker's next heartbeat
        reports: list[dict[str, Any]] = []
        while not reports:
            assert time.monotonic() < deadline, "no slow consumer in chanlite inspect"
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "chanlite", "inspect", "--layer", layer, "--json"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert done.returncode == 0, done.stderr
            processes = json.loads(done.stdout)["processes"]
            reports = [s for p in processes for s in p["slow_consumers"]]
        assert len(reports) == 1, reports
        (report,) = reports
        assert report["kind"] == "bytes" and report["waiting"] == waited
        assert report["events"] is None
        assert report["path"] == "/flood/slow" and report["groups"] == ["room.slow"]
        assert report["peer"] == f"127.0.0.1:{client_port}"
    finally:
        sock.close()
    code, err = server.stop()
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "slow consumer" in line]
    assert len(warnings) == 1, err
    assert f"127.0.0.1:{client_port}" in warnings[0] and "groups room.slow" in warnings[0]
    assert "bytes waiting" in warnings[0]


def never_reading_client(port: int, path: str) -> socket.socket:
    """A WebSocket client that completes its handshake and then reads nothing."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock
