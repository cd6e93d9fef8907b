"""A soak across processes with a layer restart: two ``chanlite run`` processes share a
real ``redis-server`` (on a free loopback port, started here); numbered messages (layer
events and broadcast frames) are published from both while members churn, members that
never read are closed by the slow-consumer policy and a ping flood runs; redis-server is
killed and started again mid-run.

It asserts, for the two members that read everything (one on each process):

* every message whose send succeeded reaches the member on the sending process;
* it reaches the member on the other process too, unless it was sent while that
  process's pub/sub connection was down: from the kill until the process logged
  "Redis pub/sub reconnected" (Redis pub/sub is at-most-once across an outage, as the
  layer's README says; the outage is logged by the process, and the soak counts what it
  lost);
* every send that failed was refused to the app (the layer raised), which counted it and
  logged it (the numbers in its WARNING lines are exactly the failed ones);
* no message arrives twice or out of order; no traceback; each server's RSS stays under
  a ceiling.

    make soak                                   # with the churn soak, 120 s each
    .venv/bin/python -m tests.server.layer_soak # 60 s (SOAK_SECONDS=...)

A short form runs in the normal suite (``test_layer_soak.py``).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tests.server.hostile import Reader, connect, ping_flood, rss_mib
from tests.server.procs import ROOT

APP = "tests/server/soak_app.py:app"
MEMBER = "/ws/member"
#: Seconds after a process logged its pub/sub reconnection during which a message it
#: missed is still put down to the outage (the SUBSCRIBE is sent just before the log).
SLACK = 0.5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """redis-server on 127.0.0.1:<free port>, no persistence: a restart loses everything."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not on PATH: run `make system-deps`"
        self.binary = binary
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="chanlite-soak-")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.directory, "--save", "", "--appendonly", "no",
                "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)


class ServerProcess:
    """``chanlite run`` of the soak app; its stderr lines are kept with their arrival time."""

    def __init__(self, name: str, redis_port: int, extra: tuple[str, ...] = ()) -> None:
        self.name = name
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "chanlite", "run", APP,
                "--port", str(self.port),
                "--layer", f"redis://127.0.0.1:{redis_port}/0",
                "--log-level", "warning", "--no-access-log", *extra,
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "SOAK_ORIGIN": name, "SOAK_PAD": "6000"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 40
        while not any("layer:" in line for _, line in self.lines):
            assert self.proc.poll() is None, f"{name} exited: {self.stderr()}"
            assert time.monotonic() < deadline, f"{name}: no banner: {self.stderr()}"
            time.sleep(0.05)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line))

    def stderr(self) -> str:
        return "".join(line for _, line in self.lines)

    def first_line_after(self, pattern: str, after: float) -> float | None:
        for when, line in list(self.lines):
            if when >= after and pattern in line:
                return when
        return None

    def post(self, path: str, body: str) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("POST", path, body=body)
            response = conn.getresponse()
            data = response.read()
            assert response.status == 200, (response.status, data)
            return json.loads(data)
        finally:
            conn.close()

    def get(self, path: str) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path)
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self._reader.join(10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class Batch:
    origin: str
    started: float
    ended: float
    numbers: range
    failed: set[int]


@dataclass
class Member:
    """A member on one process that reads everything: the numbers it got, per origin."""

    server: ServerProcess
    got: dict[str, list[int]] = field(default_factory=dict)
    closed: str | None = None
    joined: threading.Event = field(default_factory=threading.Event)

    def run(self, stop: threading.Event) -> None:
        sock = connect("127.0.0.1", self.server.port, path=MEMBER)
        reader = Reader(sock)
        try:
            while not stop.is_set():
                frame = reader.data_frame(timeout=1.0)
                if frame is None:
                    if reader.eof:
                        close = reader.parser.close_rcvd
                        self.closed = f"closed: {close}"
                        return
                    continue
                if frame.data == b"joined":
                    self.joined.set()
                    continue
                kind, origin, number, *_ = [*frame.data.split(b" ", 3), b""]
                if kind in (b"e", b"b"):
                    self.got.setdefault(origin.decode(), []).append(int(number))
        finally:
            sock.close()


def run(seconds: float, restarts: int = 1, ceiling_mib: float = 100.0) -> dict[str, Any]:
    """Run the soak for about *seconds* with *restarts* redis-server restarts spread over
    it; assert everything the module docstring says and return the figures."""
    redis = RedisServer()
    redis.start()
    servers: list[ServerProcess] = []
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        options = ("--ws-send-timeout", "2", "--ws-send-limit", str(1 << 20))
        servers = [ServerProcess("A", redis.port, options), ServerProcess("B", redis.port, options)]
        baseline = {s.name: rss_mib(s.proc.pid) for s in servers}
        peaks = dict(baseline)
        counts = {"churned": 0, "refused": 0, "slow": 0, "floods": 0, "errors": 0}
        members = [Member(s) for s in servers]
        for member in members:
            threads.append(threading.Thread(target=member.run, args=(stop,), daemon=True))
        batches: list[Batch] = []
        kills: list[float] = []

        def churn(server: ServerProcess) -> None:
            while not stop.is_set():
                try:
                    sock = connect("127.0.0.1", server.port, path=MEMBER)
                    frame = Reader(sock).data_frame(timeout=10)
                    if frame is not None and frame.data == b"joined":
                        counts["churned"] += 1
                    else:
                        counts["refused"] += 1  # 1013 "layer unavailable" during the outage
                    sock.close()
                except (OSError, AssertionError):
                    counts["errors"] += 1

        def slow_members(server: ServerProcess) -> None:
            held: list[socket.socket] = []
            while not stop.is_set():
                try:
                    held.append(connect("127.0.0.1", server.port, rcvbuf=4096, path=MEMBER))
                    counts["slow"] += 1
                except (OSError, AssertionError):
                    counts["errors"] += 1
                if len(held) > 6:
                    held.pop(0).close()
                stop.wait(1.0)
            for sock in held:
                sock.close()

        def flood(server: ServerProcess) -> None:
            while not stop.is_set():
                try:
                    _sent, sock = ping_flood(
                        "127.0.0.1", server.port, total=8 << 20, seconds=3, path=MEMBER
                    )
                    sock.close()
                    counts["floods"] += 1
                except (OSError, AssertionError):
                    counts["errors"] += 1

        def sample() -> None:
            while not stop.is_set():
                for s in servers:
                    peaks[s.name] = max(peaks[s.name], rss_mib(s.proc.pid))
                stop.wait(0.25)

        for s in servers:
            threads += [
                threading.Thread(target=churn, args=(s,), daemon=True),
                threading.Thread(target=slow_members, args=(s,), daemon=True),
            ]
        threads += [
            threading.Thread(target=flood, args=(servers[0],), daemon=True),
            threading.Thread(target=sample, daemon=True),
        ]
        for thread in threads:
            thread.start()
        for m in members:
            assert m.joined.wait(15), f"the reading member on {m.server.name}: {m.closed}"

        start = time.monotonic()
        end = start + seconds
        restart_at = [start + seconds * (i + 1) / (restarts + 1) for i in range(restarts)]
        number = 0
        turn = 0
        restarting: threading.Timer | None = None
        while time.monotonic() < end:
            if restart_at and time.monotonic() >= restart_at[0]:
                restart_at.pop(0)
                kills.append(time.monotonic())
                redis.kill()  # publishing goes on while it is down
                restarting = threading.Timer(1.0, redis.start)
                restarting.start()
            origin = servers[turn % 2]
            turn += 1
            began = time.monotonic()
            answer = origin.post("/publish", f"{number} 10")
            batches.append(
                Batch(origin.name, began, time.monotonic(), range(number, number + 10),
                      set(answer["failed"]))
            )  # fmt: skip
            number += 10
            time.sleep(0.02)

        if restarting is not None:
            restarting.join()
        # The outages: from each kill until each process logged its pub/sub reconnection.
        windows: dict[str, list[tuple[float, float]]] = {s.name: [] for s in servers}
        deadline = time.monotonic() + 15
        for kill in kills:
            for s in servers:
                assert s.first_line_after("Redis pub/sub connection lost", kill), s.stderr()
                while (back := s.first_line_after("Redis pub/sub reconnected", kill)) is None:
                    assert time.monotonic() < deadline, f"{s.name} never reconnected"
                    time.sleep(0.1)
                windows[s.name].append((kill, back + SLACK))

        def excused(batch: Batch, member_on: str) -> bool:
            if batch.origin == member_on:
                return False  # delivered in-process: no pub/sub on the way
            return any(
                batch.started <= w_end and batch.ended >= w_start
                for w_start, w_end in windows[member_on]
            )

        expected: dict[str, dict[str, set[int]]] = {m.server.name: {} for m in members}
        allowed_missing: dict[str, dict[str, set[int]]] = {m.server.name: {} for m in members}
        failed: set[int] = set()
        for batch in batches:
            failed |= batch.failed
            ok = set(batch.numbers) - batch.failed
            for m in members:
                target = allowed_missing if excused(batch, m.server.name) else expected
                target[m.server.name].setdefault(batch.origin, set()).update(ok)
        # Wait for the members to get everything they must.
        deadline = time.monotonic() + 20
        for m in members:
            name = m.server.name
            while (
                any(expected[name].get(o, set()) - set(m.got.get(o, ())) for o in ("A", "B"))
                and time.monotonic() < deadline
            ):
                time.sleep(0.1)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

        lost_in_outage = 0
        for m in members:
            name = m.server.name
            assert m.closed is None, f"the reading member on {name} was {m.closed}"
            for origin in ("A", "B"):
                got = m.got.get(origin, [])
                assert got == sorted(set(got)), f"{name} from {origin}: duplicates/disorder"
                missing = expected[name].get(origin, set()) - set(got)
                assert not missing, (
                    f"member on {name} lost {len(missing)} messages from {origin} sent "
                    f"outside any outage: {sorted(missing)[:20]}"
                )
                unexpected = set(got) & failed
                assert not unexpected, f"{name} got messages reported as failed: {unexpected}"
                lost_in_outage += len(allowed_missing[name].get(origin, set()) - set(got))

        # Every failed send was logged by the app that tried it, with its number.
        stats = {s.name: s.get("/stats") for s in servers}
        codes = {s.name: s.stop() for s in servers}
        logged: set[int] = set()
        for s in servers:
            for line in s.stderr().splitlines():
                found = re.search(r"soak: \d+ of \d+ messages not sent \(.*\): ([\d ]+)$", line)
                if found:
                    logged |= {int(n) for n in found.group(1).split()}
        report = {
            "seconds": seconds,
            "restarts": len(kills),
            "messages": number,
            "failed_sends": len(failed),
            "lost_in_outage": lost_in_outage,
            "counts": counts,
            "rss_mib": {
                n: {"before": round(baseline[n], 1), "peak": round(peaks[n], 1)} for n in peaks
            },
            "outage_s": {n: [round(e - SLACK - k, 2) for k, e in w] for n, w in windows.items()},
            "stats": stats,
        }
        print("layer soak:", json.dumps(report))
        assert logged == failed, (sorted(logged ^ failed)[:20], len(logged), len(failed))
        assert sum(st["failed_sends"] for st in stats.values()) == len(failed), stats
        for s in servers:
            err = s.stderr()
            assert codes[s.name] == 0, err
            assert "Traceback" not in err, err
            assert peaks[s.name] < ceiling_mib, f"{s.name} RSS peaked at {peaks[s.name]:.1f} MiB"
        assert counts["churned"] and counts["slow"] and counts["floods"], counts
        assert sum(st["slow_consumers"] for st in stats.values()) > 0, stats
        return report
    finally:
        stop.set()
        for s in servers:
            s.kill()
        redis.stop()


def main() -> int:
    seconds = float(os.environ.get("SOAK_SECONDS", "60"))
    run(seconds, restarts=max(1, int(seconds // 30)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
