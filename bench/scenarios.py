"""The scenarios: one load against a freshly started server, and what that run measured.

The load comes from ``bench/out/wsload`` (compiled from ``bench/loadgen/wsload.c``), or
``wrk`` for HTTP, pinned to CPU 1, so server and client each have one core.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from servers import (
    BENCH,
    CLIENT_CPU,
    MAIN_BIN,
    OUT,
    ROOT,
    SERVER_CPU,
    SERVERS,
    WSLOAD,
    Server,
    _chanlite,
    _uvicorn,
    cpu_seconds,
    descendants,
    free_port,
    redis_server,
    rss_kb,
    running,
    wait_port,
)

WARMUP = float(os.environ.get("BENCH_WARMUP", "1"))
DURATION = float(os.environ.get("BENCH_DURATION", "4"))
IDLE_CONNS = int(os.environ.get("BENCH_IDLE_CONNS", "5000"))


# -- load ------------------------------------------------------------------------------------


def wsload(mode: str, port: int, *args: str, timeout: float = 120.0) -> dict[str, Any]:
    argv = ["taskset", "-c", CLIENT_CPU, str(WSLOAD), mode, "--port", str(port), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"wsload {mode} gave no result: {done.stderr.strip()[:300]}")
    result: dict[str, Any] = json.loads(lines[-1])
    if done.stderr.strip():
        result["stderr"] = done.stderr.strip()[:300]
    return result


def timed(pid: int | list[int], run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run *run* and add the server's CPU use (1.0 = one core busy) over its wall time."""
    procs = [p for top in ([pid] if isinstance(pid, int) else pid) for p in descendants(top)]
    cpu0, t0 = {p: cpu_seconds(p, tree=False) for p in procs}, time.monotonic()
    result = run()
    elapsed = time.monotonic() - t0
    busy = [round((cpu_seconds(p, tree=False) - cpu0[p]) / elapsed, 3) for p in procs]
    result["server_cpu"] = round(sum(busy), 3)
    if len(busy) > 1:  # a supervisor and its workers: show that every worker took load
        result["server_cpu_per_process"] = busy
    return result


def _summary(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"ERROR {result['error']}"
    if "kb_per_conn" in result:
        return f"{result['kb_per_conn']} KB/conn ({result['open']} open)"
    text = f"{result.get('rate', 0):,.0f}/s"
    if "p50_ms" in result:
        text += f" p50 {result['p50_ms']} ms p99 {result.get('p99_ms')} ms"
    if "server_cpu" in result:
        text += f" server_cpu {result['server_cpu']}"
    if result.get("client_cpu") is not None:
        text += f" client_cpu {result['client_cpu']}"
    if result.get("errors"):
        text += f" errors {result['errors']}"
    return text


# -- scenarios ------------------------------------------------------------------------------


def run_echo(server: Server, port: int) -> dict[str, Any]:
    with running(server, port) as pid:
        args = ["--conns", "50", "--size", "32", "--warmup", str(WARMUP)]
        return timed(pid, lambda: wsload("echo", port, *args, "--duration", str(DURATION)))


def _broadcast(subscribers: int) -> Callable[[Server, int], dict[str, Any]]:
    def run(server: Server, port: int) -> dict[str, Any]:
        with running(server, port) as pid:
            args = ["--conns", str(subscribers), "--size", "64", "--window", "4"]
            args += server.bcast_args
            args += ["--warmup", str(WARMUP), "--duration", str(DURATION)]
            return timed(pid, lambda: wsload("bcast", port, *args))

    return run


def run_handshake(server: Server, port: int) -> dict[str, Any]:
    with running(server, port) as pid:
        args = ["--conns", "50", "--warmup", str(WARMUP), "--duration", str(DURATION)]
        return timed(pid, lambda: wsload("hs", port, *args))


def run_idle(server: Server, port: int) -> dict[str, Any]:
    with running(server, port) as pid:
        # Warm the server (imports, allocator pools) so the delta is the connections alone.
        wsload("echo", port, "--conns", "20", "--warmup", "0", "--duration", "0.5")
        time.sleep(0.5)
        before = rss_kb(pid)
        argv = ["taskset", "-c", CLIENT_CPU, str(WSLOAD), "idle", "--port", str(port)]
        argv += ["--conns", str(IDLE_CONNS), "--hold", "90", "--connect-timeout", "50"]
        client = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert client.stdout is not None and client.stdin is not None
        try:
            ready, _, _ = select.select([client.stdout], [], [], 70)
            if not ready:
                raise RuntimeError("idle connections did not open within 70 s")
            status = json.loads(client.stdout.readline())
            # Let the server finish the handlers of the last connections before measuring.
            time.sleep(1.5)
            after = rss_kb(pid)
        finally:
            client.stdin.close()
            client.wait(timeout=30)
        opened = int(status["open"])
        return {
            "open": opened,
            "errors": status["errors"],
            "open_seconds": status["seconds"],
            "rss_before_kb": before,
            "rss_after_kb": after,
            "kb_per_conn": round((after - before) / max(opened, 1), 2),
        }


_WRK_LAT = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def _wrk(port: int, seconds: float) -> dict[str, Any]:
    argv = ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", "-c50", f"-d{seconds:g}s", "--latency"]
    out = subprocess.run(
        [*argv, f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not rps:
        raise RuntimeError(f"unexpected wrk output: {out[:300]}")
    result: dict[str, Any] = {"rate": float(rps.group(1))}
    if result["rate"] == 0:
        raise RuntimeError(f"wrk completed no request: {out.strip().splitlines()[-3:]}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    for pct, value, unit in _WRK_LAT.findall(out):
        result[f"p{pct}_ms"] = round(float(value) * scale[unit], 3)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    result["errors"] = int(errors.group(1)) if errors else 0
    if socket_errors:
        result["socket_errors"] = socket_errors.group(1)
    return result


def run_http(server: Server, port: int) -> dict[str, Any]:
    with running(server, port) as pid:
        _wrk(port, WARMUP)
        return timed(pid, lambda: _wrk(port, DURATION))


SCENARIOS: dict[str, Callable[[Server, int], dict[str, Any]]] = {
    "echo": run_echo,
    "broadcast200": _broadcast(200),
    "broadcast1000": _broadcast(1000),
    "idle": run_idle,
    "handshake": run_handshake,
    "http": run_http,
}
# Scenario names accepted on the command line, and what each expands to.
GROUPS = {
    "echo": ["echo"],
    "broadcast": ["broadcast200", "broadcast1000"],
    "broadcast200": ["broadcast200"],
    "broadcast1000": ["broadcast1000"],
    "idle": ["idle"],
    "handshake": ["handshake"],
    "handshakes": ["handshake"],
    "http": ["http"],
    "xproc": ["xproc"],
    "calibrate": ["calibrate"],
    "layers": ["layers"],
}
ORDER = ["calibrate", *SCENARIOS, "xproc", "layers"]


# -- the generator's own ceiling --------------------------------------------------------------


def run_calibrate() -> dict[str, Any]:
    """The same client modes against wsload's C server: the generator's ceiling."""
    port = free_port()
    argv = ["taskset", "-c", SERVER_CPU, str(WSLOAD), "serve", "--port", str(port), "--hold", "120"]
    proc = subprocess.Popen(argv, start_new_session=True)
    results: dict[str, Any] = {}
    try:
        wait_port(port, proc)
        common = ["--warmup", str(WARMUP), "--duration", str(DURATION)]
        results["echo"] = timed(proc.pid, lambda: wsload("echo", port, *common))
        for n in (200, 1000):
            results[f"broadcast{n}"] = timed(
                proc.pid, lambda n=n: wsload("bcast", port, "--conns", str(n), *common)
            )
        results["handshake"] = timed(proc.pid, lambda: wsload("hs", port, *common))
    finally:
        proc.kill()
        proc.wait()
    return results


# -- cross-process broadcast -------------------------------------------------------------------


def _has_plugin(module: str) -> bool:
    probe = [str(MAIN_BIN / "python"), "-c", f"import {module}"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def _xproc_load(port: int, port2: int | None) -> dict[str, Any]:
    args = ["--conns", "200", "--size", "64", "--window", "4"]
    if port2 is not None:
        args += ["--port2", str(port2)]
    return wsload("bcast", port, *args, "--warmup", str(WARMUP), "--duration", str(DURATION))


def run_xproc(only: set[str] | None) -> dict[str, Any]:
    """Broadcast to 200 subscribers split evenly over two server processes sharing a layer.

    Two single-process servers on two ports rather than ``--workers 2``: behind one shared
    listening socket the kernel may hand every connection to the same worker, and then
    nothing crosses a process.  wsload sends every other subscriber to the second port and
    the publisher to the first, so half of all deliveries cross the layer.
    """
    results: dict[str, Any] = {}
    db = OUT / "xproc.db"
    for suffix in ("", "-wal", "-shm", "-w2", "-w2-wal", "-w2-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    with redis_server() as redis_url:
        servers = []
        if _has_plugin("chanlite_sqlite"):
            servers.append(
                Server(
                    "chanlite-sqlite",
                    _chanlite("--layer", f"sqlite:///{db}"),
                    pin=False,
                    label="chanlite, SQLite layer",
                )
            )
        if _has_plugin("chanlite_redis"):
            servers.append(
                Server(
                    "chanlite-redis",
                    _chanlite("--layer", redis_url),
                    pin=False,
                    label="chanlite, Redis layer",
                )
            )
        # The same through `chanlite run --workers 2` (one SO_REUSEPORT socket per worker,
        # so the kernel spreads the connections; per-process CPU shows both took load).
        if _has_plugin("chanlite_sqlite"):
            servers.append(
                Server(
                    "chanlite-sqlite-workers2",
                    _chanlite("--workers", "2", "--layer", f"sqlite:///{db}-w2"),
                    pin=False,
                    label="chanlite --workers 2, SQLite layer",
                    bcast_args=("workers",),
                )
            )
        if _has_plugin("chanlite_redis"):
            servers.append(
                Server(
                    "chanlite-redis-workers2",
                    _chanlite("--workers", "2", "--layer", redis_url),
                    pin=False,
                    label="chanlite --workers 2, Redis layer",
                    bcast_args=("workers",),
                )
            )
        servers.append(
            Server(
                "channels-redis-uvicorn",
                _uvicorn("channels_app:application"),
                env={"BENCH_CHANNEL_LAYER": redis_url},
                pin=False,
                label="Channels + uvicorn, channels_redis",
            )
        )
        servers.append(
            Server(
                "channels-redispubsub-uvicorn",
                _uvicorn("channels_app:application"),
                env={"BENCH_CHANNEL_LAYER": redis_url, "BENCH_CHANNELS_REDIS": "pubsub"},
                pin=False,
                label="Channels + uvicorn, channels_redis pub/sub",
            )
        )
        for server in servers:
            if only and server.name not in only:
                continue
            SERVERS.setdefault(server.name, server)
            port, port2 = free_port(), free_port()
            try:
                if server.bcast_args == ("workers",):
                    with running(server, port) as pid:
                        time.sleep(1.5)  # the workers start after the supervisor listens
                        results[server.name] = timed(pid, lambda port=port: _xproc_load(port, None))
                else:
                    with running(server, port) as pid, running(server, port2) as pid2:
                        results[server.name] = timed(
                            [pid, pid2], lambda port=port, port2=port2: _xproc_load(port, port2)
                        )
            except Exception as exc:  # one broken server must not lose the others' numbers
                results[server.name] = {"error": str(exc)[:300]}
            print(f"  xproc {server.name}: {_summary(results[server.name])}", flush=True)
    return results


def run_layer_scripts() -> dict[str, Any]:
    """Run the layers' own benchmark scripts, when present, and keep their output."""
    results: dict[str, Any] = {}
    for name in ("sqlite_layer", "redis_layer"):
        script = BENCH / f"{name}.py"
        if not script.exists():
            continue
        try:
            done = subprocess.run(
                [str(MAIN_BIN / "python"), str(script)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=240,
                check=False,
            )
            results[name] = {"rc": done.returncode, "stdout": done.stdout[-6000:]}
            if done.returncode:
                results[name]["stderr"] = done.stderr[-1500:]
        except subprocess.TimeoutExpired:
            results[name] = {"rc": -1, "stdout": "", "stderr": "timed out after 240 s"}
        print(f"  layers {name}: rc={results[name]['rc']}", flush=True)
    return results
