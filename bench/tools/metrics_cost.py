"""What the metrics path costs: ``chanlite run`` with and without ``--metrics-path
/metrics`` (scraped while the load runs), echo and broadcast, per server CPU-second.

    .venv/bin/python bench/tools/metrics_cost.py                      # the work tree
    .venv/bin/python bench/tools/metrics_cost.py --rev HEAD --pairs 20 --duration 6 \
        --runs echo:2,bcast:1,bcast:2     # a revision (a checkout in bench/out, so the
                                          # tree can change meanwhile)
    .venv/bin/python bench/tools/metrics_cost.py --null ...           # both without metrics
    .venv/bin/python bench/tools/metrics_cost.py --sequential ...     # one at a time
    .venv/bin/python bench/tools/metrics_cost.py --direct 30          # the pieces, in process

What "on" adds over "off" is all of the metrics path that is optional: prometheus-client
loaded, each worker copying its numbers into the multiprocess files once a second (with
``--workers 2``), and a scrape every ``--scrape`` seconds (Prometheus' default is 15 s; 1 s
is the harsh case). The counters themselves are plain ints kept in both runs; ``--direct``
times their statements beside an in-process echo round trip and broadcast.

A pair is two servers served at once, one with metrics and one without, every process of
both on CPU 0 and their two load generators (and the scraper) on CPU 1: whatever else the
shared machine runs meanwhile falls on both alike, which one-at-a-time runs cannot give
(their rate per CPU-second moved by up to 30 % from one run to the next here). The CPU is
the scheduler's nanosecond count of every thread of each server's processes. Which server
starts first alternates. Every pair is printed, then the median of the on/off ratios with
a bootstrap 95 % interval of that median and their range; ``--null`` runs the same with
neither server scraped nor exporting, to show what the method reads when there is no
difference.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WSLOAD = ROOT / "bench" / "out" / "wsload"


def checkout(rev: str) -> Path:
    """A detached worktree of *rev* in bench/out (made once), for PYTHONPATH."""
    sha = subprocess.check_output(
        ["git", "-C", str(ROOT), "rev-parse", "--short", rev], text=True
    ).strip()
    tree = ROOT / "bench" / "out" / f"ab-{sha}"
    if not tree.is_dir():
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(tree), sha],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return tree


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_pids(pid: int) -> list[int]:
    """*pid* and its descendants (the workers of a supervisor)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):  # gone meanwhile
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of *pids* (every thread), from the scheduler's nanosecond count
    (``/proc/PID/task/TID/schedstat``): the clock ticks of ``/proc/PID/stat`` are 10 ms,
    a few percent of a short run's CPU."""
    total = 0
    for p in pids:
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError, IndexError):  # gone meanwhile
                total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def wait_ready(port: int, path: str | None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if path is None:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            else:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def scraper(port: int, every: float, stop: threading.Event, count: list[int]) -> None:
    while not stop.wait(every):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        count[0] += 1


def start_server(
    workers: int, metrics: bool, args: argparse.Namespace, pythonpath: str, db: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """``chanlite run`` of the bench app on CPU 0: ``(process, port)``, once listening."""
    port = free_port()
    cmd = [
        "taskset", "-c", "0", str(ROOT / ".venv" / "bin" / "chanlite"), "run",
        "chanlite_app:app", "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    if metrics:
        cmd += ["--metrics-path", "/metrics"]
    layer = args.layer or ("memory://" if workers == 1 else f"sqlite:///{db}")
    cmd += ["--layer", layer]
    env = dict(os.environ, PYTHONPATH=pythonpath)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # chanlite run makes one per server
    server = subprocess.Popen(
        cmd, cwd=ROOT / "bench" / "apps", env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_ready(port, "/metrics" if metrics else None)
    except BaseException:
        server.kill()
        raise
    return server, port


def load_command(mode: str, port: int, args: argparse.Namespace) -> list[str]:
    load = [str(WSLOAD), mode, "--port", str(port), "--warmup", "1"]
    return ["taskset", "-c", "1", *load, "--duration", str(args.duration)]


def result(out: str, cpu: float, args: argparse.Namespace, scrapes: int) -> dict[str, float]:
    rate = float(json.loads(out.strip().splitlines()[-1])["rate"])
    seconds = args.duration + 1  # the warm-up second loads the server too
    return {"rate": rate, "cpu": cpu, "per_cpu": rate * seconds / cpu, "scrapes": scrapes}


def one(
    mode: str,
    workers: int,
    metrics: bool,
    args: argparse.Namespace,
    pythonpath: str,
) -> dict[str, float]:
    """One server alone: its rate and CPU under the load."""
    server, port = start_server(workers, metrics, args, pythonpath, args.db)
    stop, scrapes = threading.Event(), [0]
    try:
        time.sleep(0.5 if workers == 1 else 1.5)  # every worker listening
        pids = tree_pids(server.pid)
        thread = None
        if metrics:
            thread = threading.Thread(target=scraper, args=(port, args.scrape, stop, scrapes))
            thread.start()
        c0 = cpu_seconds(pids)
        out = subprocess.run(
            load_command(mode, port, args), capture_output=True, text=True, check=True
        ).stdout
        c1 = cpu_seconds(pids)
        stop.set()
        if thread is not None:
            thread.join()
    finally:
        stop.set()
        server.terminate()
        server.wait(30)
    return result(out, c1 - c0, args, scrapes[0])


def together(
    mode: str, workers: int, args: argparse.Namespace, pythonpath: str, first: bool
) -> dict[bool, dict[str, float]]:
    """Both servers at once, metrics off and on, on the same core (CPU 0), each under
    its own load generator (both on CPU 1): whatever else the machine runs meanwhile
    falls on both alike. *first* says which one is started (and loaded) first."""
    order = (first, not first)
    servers: dict[bool, tuple[subprocess.Popen[bytes], int]] = {}
    stop, scrapes = threading.Event(), [0]
    try:
        for metrics in order:
            on = metrics and not args.null  # --null: two servers without, to see the noise
            db = args.db.with_suffix(f".{int(metrics)}.db")
            servers[metrics] = start_server(workers, on, args, pythonpath, db)
        time.sleep(0.5 if workers == 1 else 1.5)  # every worker listening
        pids = {m: tree_pids(server.pid) for m, (server, _) in servers.items()}
        thread = threading.Thread(
            target=scraper, args=(servers[True][1], args.scrape, stop, scrapes)
        )
        if not args.null:
            thread.start()
        c0 = {m: cpu_seconds(p) for m, p in pids.items()}
        w0 = {m: [cpu_seconds([w]) for w in p[1:]] for m, p in pids.items()}
        loads = {
            m: subprocess.Popen(
                load_command(mode, servers[m][1], args), stdout=subprocess.PIPE, text=True
            )
            for m in order
        }
        outs = {m: load.communicate()[0] for m, load in loads.items()}
        c1 = {m: cpu_seconds(p) for m, p in pids.items()}
        w1 = {m: [cpu_seconds([w]) for w in p[1:]] for m, p in pids.items()}
        stop.set()
        if thread.is_alive():
            thread.join()
    finally:
        stop.set()
        for server, _ in servers.values():
            server.terminate()
        for server, _ in servers.values():
            server.wait(30)
    results = {}
    for m in (False, True):
        results[m] = result(outs[m], c1[m] - c0[m], args, scrapes[0] if m else 0)
        # With workers, how the kernel spread the connections shows in their CPU shares.
        spent = [b - a for a, b in zip(w0[m], w1[m], strict=True)]
        results[m]["busiest"] = max(spent) / sum(spent) if len(spent) > 1 and sum(spent) else 1.0
    return results


def summary(ratios: list[float], resamples: int = 10000) -> str:
    """Median of *ratios*, a bootstrap 95 % interval of that median, and the range."""
    rng = random.Random(1)
    medians = sorted(
        statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(resamples)
    )
    low, high = medians[int(resamples * 0.025)], medians[int(resamples * 0.975) - 1]
    return (
        f"median {statistics.median(ratios):.3f}, bootstrap 95 % {low:.3f}-{high:.3f}, "
        f"range {min(ratios):.3f}-{max(ratios):.3f} ({len(ratios)} pairs)"
    )


def cpu_ms(call: Callable[[], object], n: int) -> float:
    """Milliseconds of CPU (every thread of this process) per call, best of 5 batches."""
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for _ in range(n):
            call()
        best = min(best, (time.process_time() - start) / n * 1000)
    return best


#: The server's counter statements on the echo path, as written in ws_connection.py
#: (data_received, then send_now): what counting costs per round trip.
ECHO_COUNTERS = """\
counters = self.counters
counters.ws_bytes_in += len(data)
counters.ws_messages_in += len(messages)
counters = self.counters
counters.ws_messages_out += 1
counters.ws_bytes_out += len(payload)"""
ECHO_SETUP = """\
from chanlite.server.counters import ServerCounters
class Connection:  # slots, like the server's WebSocketConnection
    __slots__ = ("counters",)
self = Connection()
self.counters = ServerCounters()
data, messages, payload = b"x" * 38, [b"x" * 32], "x" * 32"""


#: The counter statements of one broadcast, as written in ws_connection.py (the publisher's
#: message in) and hub.py (broadcast, the reader, _broadcast); ``written += 1`` is the one
#: statement per member.
BROADCAST_COUNTERS = """\
counters = self.counters
counters.ws_bytes_in += len(data)
counters.ws_messages_in += len(messages)
began = perf_counter()
stats.broadcasts += 1
stats.layer_send_seconds += perf_counter() - began
stats.events_received += 1
written = 0
if frame is not None and written:
    pass
stats.broadcast_frames += written
stats.broadcast_bytes += written * len(frame)"""
BROADCAST_SETUP = (
    ECHO_SETUP
    + """
from time import perf_counter
from chanlite.hub import HubStats
stats = HubStats()
frame, written = b"x" * 66, 0"""
)


def counter_ns(statements: str, setup: str, n: int = 500_000) -> float:
    """Nanoseconds per run of *statements*, less an empty statement's (best of 5)."""
    import timeit

    spent = min(timeit.repeat(statements, setup, number=n, repeat=5))
    empty = min(timeit.repeat("pass", setup, number=n, repeat=5))
    return (spent - empty) / n * 1e9


def echo_share(rounds: int = 3, members: int = 200) -> None:
    """The counter statements' time beside a whole in-process echo round trip
    (bench/tools/inprocess.py), measured side by side so the machine's load cancels."""
    import importlib

    import inprocess  # bench/tools, beside this script
    import uvloop

    from chanlite.server.config import Config
    from chanlite.server.state import ServerState

    app = importlib.import_module("chanlite_app").app

    async def measure() -> None:
        state = ServerState(Config(app=app, access_log=False), app)
        for _ in range(rounds):
            echo_us = await inprocess.echoes(state, 20000)
            ns = counter_ns(ECHO_COUNTERS, ECHO_SETUP)
            print(f"echo round trip {echo_us:6.2f} us, its counter statements {ns:4.0f} ns "
                  f"= {ns / echo_us / 10:.2f} %")  # fmt: skip
            member_us = await inprocess.broadcasts(state, members, 1000)
            once = counter_ns(BROADCAST_COUNTERS, BROADCAST_SETUP)
            each = counter_ns("written += 1", BROADCAST_SETUP)
            ns = once / members + each
            print(f"broadcast to {members}, per member {member_us:6.3f} us, its counter "
                  f"statements {once:4.0f} ns per broadcast + {each:4.1f} ns per member "
                  f"= {ns:4.1f} ns = {ns / member_us / 10:.2f} %")  # fmt: skip

    uvloop.run(measure())


def direct(groups: int) -> None:
    """CPU per call of each periodic piece of the metrics path, in this process, with
    *groups* groups of 5 local members (what a report lists), and what it costs per
    CPU-second at its rate."""
    from chanlite import App
    from chanlite import metrics as metrics_module

    app = App(layer="memory://")
    hub = app.hub
    for g in range(groups):
        hub.local_groups[f"room.{g}"] = {f"ws.x!{g}.{m}" for m in range(5)}
    census = app.census
    endpoint = metrics_module.Metrics(census, "/metrics")
    rows = [
        ("census numbers (every counter)", cpu_ms(census.numbers, 2000), None),
        ("inspect report (numbers + groups)", cpu_ms(census.report, 2000), None),
        ("scrape, one process", cpu_ms(endpoint.exposition, 200), None),
    ]
    with tempfile.TemporaryDirectory() as directory:
        os.environ[metrics_module.MULTIPROC_ENV] = directory
        multiproc = metrics_module._Multiprocess()
        numbers = census.numbers()
        rows.append(("worker's copy into the multiprocess files", cpu_ms(
            lambda: multiproc.sync(census.numbers()), 2000), 1.0))  # fmt: skip
        endpoint._multiproc = multiproc
        rows.append(("scrape, multiprocess (this worker's files)",
                     cpu_ms(endpoint.exposition, 200), None))  # fmt: skip
        del numbers
        os.environ.pop(metrics_module.MULTIPROC_ENV)

    async def publishes(layer_url: str, n: int) -> float:
        from chanlite.census import Census
        from chanlite.hub import Hub

        publisher = Census(Hub(layer_url))
        publisher.hub.local_groups.update(hub.local_groups)
        await publisher.publish()
        start = time.process_time()
        for _ in range(n):
            await publisher.publish()
        spent = (time.process_time() - start) / n * 1000
        await publisher.stop()
        await publisher.hub.aclose()
        return spent

    with tempfile.TemporaryDirectory() as directory:
        sqlite_url = f"sqlite:///{Path(directory) / 'layer.db'}"
        rows.append(("heartbeat publish, memory://", asyncio.run(publishes("memory://", 200)),
                     0.5))  # fmt: skip
        rows.append(("heartbeat publish, SQLite", asyncio.run(publishes(sqlite_url, 50)),
                     0.5))  # fmt: skip
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load "
          f"{os.getloadavg()[0]:.1f}, {groups} groups")  # fmt: skip
    for name, ms, rate in rows:
        share = f"  = {ms * rate / 10:.3f} % of a CPU-second at {rate:g}/s" if rate else ""
        print(f"{name:45} {ms:8.3f} ms CPU{share}")
    scrape = next(ms for name, ms, _ in rows if name.startswith("scrape, multi"))
    print(f"{'scrape every 15 s / every 1 s':45} {scrape / 15 / 10:.4f} % / {scrape / 10:.3f} %")
    echo_share()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", help="a git revision to run (default: the work tree)")
    parser.add_argument("--runs", default="echo:2,bcast:1", help="mode:workers, ...")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--duration", type=int, default=4)
    parser.add_argument("--scrape", type=float, default=1.0, help="seconds between scrapes")
    parser.add_argument(
        "--layer", help="default: memory:// for one worker, a fresh SQLite file for more"
    )
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="one server at a time, on and off alternating (default: both at once)",
    )
    parser.add_argument(
        "--null",
        action="store_true",
        help="both servers without metrics: the ratios the method gives for no difference",
    )
    parser.add_argument(
        "--direct",
        type=int,
        metavar="GROUPS",
        help="instead: CPU per call of each periodic piece, with GROUPS groups",
    )
    args = parser.parse_args()
    if args.direct is not None:
        direct(args.direct)
        return
    if not WSLOAD.exists():
        sys.exit("build the load generator first: bash bench/run.sh calibrate")
    os.sched_setaffinity(0, {1})
    pythonpath = str(checkout(args.rev)) if args.rev else ""
    scratch = tempfile.TemporaryDirectory(prefix="chanlite-metrics-cost-")
    args.db = Path(scratch.name) / "layer.db"
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()[0]:.1f}")
    for run in args.runs.split(","):
        mode, workers = run.split(":")
        ratios: list[float] = []
        shares: list[float] = []  # on's CPU / off's: how evenly the core was shared
        for pair in range(args.pairs):
            if args.sequential:
                order = (False, True) if pair % 2 == 0 else (True, False)
                results = {}
                for metrics in order:
                    results[metrics] = one(mode, int(workers), metrics, args, pythonpath)
            else:
                results = together(mode, int(workers), args, pythonpath, first=pair % 2 == 0)
            for metrics in (False, True):
                r = results[metrics]
                print(
                    f"{mode:5} workers={workers} metrics={'on ' if metrics else 'off'} "
                    f"rate {r['rate']:10,.0f}/s  per server CPU-s {r['per_cpu']:10,.0f}  "
                    f"cpu {r['cpu']:.2f} s  scrapes {r['scrapes']}"
                    + (f"  busiest worker {r['busiest']:.0%}" if "busiest" in r else ""),
                    flush=True,
                )
            ratios.append(results[True]["per_cpu"] / results[False]["per_cpu"])
            shares.append(results[True]["cpu"] / results[False]["cpu"])
        shown = " ".join(f"{r:.3f}" for r in ratios)
        print(f"{mode} workers={workers}: on/off per CPU-s {shown}", flush=True)
        print(
            f"{mode} workers={workers}: {summary(ratios)}; load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        # A server that got far less of the core than the other does more per CPU-second
        # (a broadcast to 2 workers batches more): such pairs compare two loads, not two
        # servers. The pairs whose servers' CPU differs by less than 15 %:
        even = [r for r, share in zip(ratios, shares, strict=True) if 1 / 1.15 < share < 1.15]
        if len(even) != len(ratios) and len(even) > 1:
            print(f"{mode} workers={workers}, CPU within 15 %: {summary(even)}", flush=True)


if __name__ == "__main__":
    main()
