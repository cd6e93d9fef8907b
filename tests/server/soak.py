"""A soak run against ``chanlite run``: churning connections, slow readers and a ping
flood at once, while one member checks that every broadcast promised to it arrives in
order. Asserts the server's RSS stays under a ceiling and comes back within 16 MiB of
where it started once the clients left (and prints it before, at its peak and after).

    make soak                        # 60 s
    SOAK_SECONDS=600 make soak       # longer

Not part of the normal suite (it is a script, not a test module): it takes minutes.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

from websockets.frames import Opcode

from tests.server.hostile import Reader, connect, masked, ping_flood, rss_mib
from tests.server.procs import start

SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
CEILING_MIB = float(os.environ.get("SOAK_RSS_CEILING_MIB", "160"))


def main() -> int:
    server = start(
        "tests/server/apps.py:broadcast_app",
        "--ws-send-timeout", "2",
        "--ws-send-limit", str(2 * 1024 * 1024),
        "--log-level", "error",
        "--no-access-log",
    )  # fmt: skip
    host, port = "127.0.0.1", int(server.url.rsplit(":", 1)[1])
    pid = server.proc.pid
    baseline = rss_mib(pid)
    stop = threading.Event()
    counts = {"churned": 0, "http": 0, "slow": 0, "floods": 0, "errors": 0}
    samples: list[float] = []

    def churn() -> None:
        while not stop.is_set():
            try:
                sock = connect(host, port)
                sock.close()
                counts["churned"] += 1
                with socket.create_connection((host, port), timeout=10) as http:
                    http.sendall(b"GET /members HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    while http.recv(65536):
                        pass
                counts["http"] += 1
            except OSError:
                counts["errors"] += 1

    def slow_readers() -> None:
        held: list[socket.socket] = []
        while not stop.is_set():
            try:
                held.append(connect(host, port, rcvbuf=4096))  # never reads
                counts["slow"] += 1
            except OSError:
                counts["errors"] += 1
            if len(held) > 20:
                held.pop(0).close()
            stop.wait(0.5)
        for sock in held:
            sock.close()

    def flood() -> None:
        while not stop.is_set():
            try:
                _sent, sock = ping_flood(host, port, total=16 << 20, seconds=5)
                sock.close()
                counts["floods"] += 1
            except OSError:
                counts["errors"] += 1

    def sample() -> None:
        while not stop.is_set():
            samples.append(rss_mib(pid))
            stop.wait(0.5)

    workers = [
        threading.Thread(target=f, daemon=True) for f in (churn, churn, slow_readers, flood, sample)
    ]
    for worker in workers:
        worker.start()
    member = connect(host, port)
    frames = Reader(member)
    bursts = delivered = 0
    deadline = time.monotonic() + SECONDS
    try:
        while time.monotonic() < deadline:
            member.sendall(masked(Opcode.TEXT, b"burst 100 4096"))
            expected = 0
            while True:
                frame = frames.data_frame(timeout=30)
                assert frame is not None, f"the reading member was closed after {delivered}"
                if frame.data == b"burst done":
                    break
                number = int(frame.data[:6])
                assert number == expected, f"burst {bursts}: got {number}, expected {expected}"
                expected += 1
                delivered += 1
            assert expected == 100, f"burst {bursts}: {expected} of 100 frames"
            bursts += 1
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
        member.close()
    time.sleep(3)
    after = rss_mib(pid)
    code, err = server.stop()
    peak = max(samples, default=after)
    print(
        f"soak {SECONDS:.0f} s: {bursts} bursts, {delivered} frames delivered in order; "
        f"{counts}; RSS before {baseline:.1f} MiB, peak {peak:.1f} MiB, after {after:.1f} MiB"
    )
    assert code == 0, err
    assert "Traceback" not in err, err
    assert peak < CEILING_MIB, f"RSS peaked at {peak:.1f} MiB (ceiling {CEILING_MIB} MiB)"
    # What the attackers took went back to the OS once they left.
    assert after - baseline < 16, f"RSS {after:.1f} MiB after, {baseline:.1f} MiB before"
    assert counts["churned"] > 0 and counts["slow"] > 0 and counts["floods"] > 0, counts
    return 0


if __name__ == "__main__":
    sys.exit(main())
