"""Run chanlite and its peers through the same scenarios and record the numbers.

    bench/.venv/bin/python bench/bench.py                 # every scenario, every server
    bench/.venv/bin/python bench/bench.py echo http       # just these scenarios
    bench/.venv/bin/python bench/bench.py echo --servers chanlite,starlette-uvicorn

Servers run pinned to CPU 0 and the load generator (``bench/out/wsload``, compiled from
``bench/loadgen/wsload.c``; ``wrk`` for HTTP) to CPU 1, so each side has one core of this
2-core machine.  Results are merged into ``bench/out/results.json``; ``report.py`` turns them
into ``bench/RESULTS.md`` and ``bench/results.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
APPS = BENCH / "apps"
OUT = BENCH / "out"
MAIN_BIN = ROOT / ".venv" / "bin"
PEER_BIN = BENCH / ".venv" / "bin"
WSLOAD = OUT / "wsload"
RESULTS = OUT / "results.json"

SERVER_CPU = "0"
CLIENT_CPU = "1"
WARMUP = float(os.environ.get("BENCH_WARMUP", "1"))
DURATION = float(os.environ.get("BENCH_DURATION", "4"))
IDLE_CONNS = int(os.environ.get("BENCH_IDLE_CONNS", "5000"))
UVICORN = [
    "--host", "127.0.0.1", "--loop", "uvloop", "--http", "httptools",
    "--ws", "websockets-sansio", "--log-level", "warning", "--no-access-log",
]  # fmt: skip


@dataclass
class Server:
    """How to start one server under test."""

    name: str
    argv: Callable[[int], list[str]]
    env: dict[str, str] = field(default_factory=dict)
    pin: bool = True
    label: str = ""
    # Extra wsload arguments for the broadcast scenarios (e.g. other routes).
    bcast_args: tuple[str, ...] = ()
    scenarios: tuple[str, ...] = ()  # empty: every scenario


def _chanlite(*extra: str) -> Callable[[int], list[str]]:
    def argv(port: int) -> list[str]:
        cmd = [str(MAIN_BIN / "chanlite"), "run", "chanlite_app:app"]
        return [*cmd, "--host", "127.0.0.1", "--port", str(port), *CHANLITE_FLAGS, *extra]

    return argv


def _chanlite_asgi(port: int) -> list[str]:
    cmd = [str(MAIN_BIN / "chanlite"), "run", "raw_asgi:app"]
    return [*cmd, "--host", "127.0.0.1", "--port", str(port), *CHANLITE_FLAGS]


def _uvicorn(target: str, *extra: str) -> Callable[[int], list[str]]:
    def argv(port: int) -> list[str]:
        return [str(PEER_BIN / "uvicorn"), target, "--port", str(port), *UVICORN, *extra]

    return argv


def _daphne(port: int) -> list[str]:
    cmd = [str(PEER_BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "-v", "0"]
    return [*cmd, "channels_app:application"]


# Quiet flags for `chanlite run`, probed once from its --help (access logs cost throughput).
CHANLITE_FLAGS: list[str] = []

SERVERS: dict[str, Server] = {
    s.name: s
    for s in [
        Server("chanlite", _chanlite(), label="chanlite (built-in server)"),
        Server(
            "chanlite-handlers",
            _chanlite(),
            label="chanlite, group_send + on handler (no broadcast fast path)",
            bcast_args=("--sub-path", "/ws/sub-handler", "--pub-path", "/ws/pub-handler"),
            scenarios=("broadcast200", "broadcast1000"),
        ),
        Server(
            "chanlite-uvicorn",
            _uvicorn("chanlite_app:app"),
            env={"PYTHONPATH": f"{APPS}:{ROOT}"},
            label="chanlite App on uvicorn",
        ),
        Server(
            "asgi-chanlite",
            _chanlite_asgi,
            label="raw ASGI on chanlite's server",
            scenarios=("echo", "idle", "handshake", "http"),
        ),
        Server("starlette-uvicorn", _uvicorn("starlette_app:app"), label="Starlette + uvicorn"),
        Server("asgi-uvicorn", _uvicorn("raw_asgi:app"), label="raw ASGI + uvicorn"),
        Server(
            "channels-uvicorn", _uvicorn("channels_app:application"), label="Channels + uvicorn"
        ),
        Server("channels-daphne", _daphne, label="Channels + Daphne"),
    ]
}
PEERS_HTTP = list(SERVERS)


# -- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port} within {timeout:.0f} s")


def descendants(pid: int) -> list[int]:
    """*pid* and every process below it (workers of a multi-process server)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def rss_kb(pid: int) -> int:
    total = 0
    for p in descendants(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def cpu_seconds(pid: int, tree: bool = True) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in descendants(pid) if tree else [pid]:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


@contextlib.contextmanager
def running(server: Server, port: int, extra_env: dict[str, str] | None = None) -> Iterator[int]:
    """Start *server* on *port*, yield its pid, stop it (SIGINT, then SIGKILL) afterwards."""
    env = {**os.environ, "PYTHONPATH": str(APPS), **server.env, **(extra_env or {})}
    argv = server.argv(port)
    if server.pin:
        argv = ["taskset", "-c", SERVER_CPU, *argv]
    log = open(OUT / f"server-{server.name}.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        argv, cwd=APPS, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_port(port, proc)
        yield proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=8)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        log.close()


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


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    exe = shutil.which("redis-server")
    if not exe:
        raise RuntimeError("redis-server is not installed (make system-deps installs it)")
    port = free_port()
    argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_port(port, proc)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


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


# -- driver ------------------------------------------------------------------------------------


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


def _better(scenario: str, new: dict[str, Any], old: dict[str, Any] | None) -> bool:
    if old is None or "error" in old:
        return True
    if "error" in new:
        return False
    if scenario == "idle":
        return float(new["kb_per_conn"]) < float(old["kb_per_conn"])
    return float(new.get("rate", 0)) > float(old.get("rate", 0))


def _probe_chanlite_flags() -> None:
    help_text = subprocess.run(
        [str(MAIN_BIN / "chanlite"), "run", "--help"], capture_output=True, text=True, check=False
    ).stdout
    if "--no-access-log" in help_text:
        CHANLITE_FLAGS.append("--no-access-log")
    if "--log-level" in help_text:
        CHANLITE_FLAGS.extend(["--log-level", "warning"])


def versions() -> dict[str, str]:
    found: dict[str, str] = {"python": sys.version.split()[0]}
    for python, names in [
        (
            PEER_BIN / "python",
            ["uvicorn", "starlette", "channels", "daphne", "channels_redis", "django",
             "websockets", "uvloop", "httptools", "twisted"],
        ),
        (MAIN_BIN / "python", ["chanlite", "websockets", "httptools", "uvloop"]),
    ]:  # fmt: skip
        script = (
            "import importlib.metadata as m, json, sys\n"
            "out = {}\n"
            "for n in sys.argv[1:]:\n"
            "    try: out[n] = m.version(n)\n"
            "    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(out))\n"
        )
        done = subprocess.run(
            [str(python), "-c", script, *names], capture_output=True, text=True, check=False
        )
        tag = "chanlite venv" if python.parent == MAIN_BIN else "peers venv"
        for key, value in json.loads(done.stdout or "{}").items():
            found[f"{key} ({tag})" if key in ("websockets", "httptools", "uvloop") else key] = value
    rev = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "chanlite", "plugins"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()
    # The tree is measured as it is on disk, which may be ahead of the commit.
    found["chanlite commit"] = rev + (f" + {len(dirty)} uncommitted file(s)" if dirty else "")
    return found


def machine() -> dict[str, str]:
    info: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    info["cores"] = str(os.cpu_count())
    with contextlib.suppress(OSError):
        mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
        info["memory"] = f"{int(mem) // 1024} MiB"
    info["kernel"] = os.uname().release
    info["load before run"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return info


def load_results() -> dict[str, Any]:
    if RESULTS.exists():
        data: dict[str, Any] = json.loads(RESULTS.read_text())
        return data
    return {"scenarios": {}, "runs": []}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("scenarios", nargs="*", help=f"any of {', '.join(GROUPS)} (default: all)")
    parser.add_argument("--servers", help="comma-separated server names (default: all)")
    parser.add_argument("--repeat", type=int, default=int(os.environ.get("BENCH_REPEAT", "1")))
    parser.add_argument("--fresh", action="store_true", help="forget earlier results first")
    opts = parser.parse_args()

    unknown = [s for s in opts.scenarios if s not in GROUPS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; choose from {', '.join(GROUPS)}")
    wanted = {name for s in opts.scenarios for name in GROUPS[s]} or set(ORDER)
    only = set(opts.servers.split(",")) if opts.servers else None

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    OUT.mkdir(exist_ok=True)
    _probe_chanlite_flags()
    data = {"scenarios": {}, "runs": []} if opts.fresh else load_results()
    data["machine"] = machine()
    data["versions"] = versions()
    data["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    data["settings"] = {
        "warmup_s": WARMUP,
        "duration_s": DURATION,
        "idle_conns": IDLE_CONNS,
        "repeat": opts.repeat,
        "server_cpu": SERVER_CPU,
        "client_cpu": CLIENT_CPU,
        "chanlite_flags": " ".join(CHANLITE_FLAGS),
    }
    data["labels"] = {name: s.label or name for name, s in SERVERS.items()}

    def save() -> None:
        RESULTS.write_text(json.dumps(data, indent=1, sort_keys=True))

    started = time.monotonic()
    for round_no in range(opts.repeat):
        for scenario in ORDER:
            if scenario not in wanted:
                continue
            print(f"== {scenario} (round {round_no + 1}/{opts.repeat})", flush=True)
            if scenario == "calibrate":
                data["calibrate"] = run_calibrate()
                for key, value in data["calibrate"].items():
                    print(f"  generator ceiling {key}: {_summary(value)}", flush=True)
            elif scenario == "xproc":
                table = data["scenarios"].setdefault("xproc", {})
                for name, result in run_xproc(only).items():
                    # A new run replaces earlier numbers; repeats within it keep the best.
                    if round_no == 0 or _better("xproc", result, table.get(name)):
                        table[name] = result
                data["labels"].update({n: s.label or n for n, s in SERVERS.items()})
            elif scenario == "layers":
                data["layer_scripts"] = run_layer_scripts()
            else:
                table = data["scenarios"].setdefault(scenario, {})
                for name, server in SERVERS.items():
                    if only and name not in only:
                        continue
                    if server.scenarios and scenario not in server.scenarios:
                        continue
                    try:
                        result = SCENARIOS[scenario](server, free_port())
                    except Exception as exc:  # keep going: one broken server loses one cell
                        result = {"error": str(exc)[:300]}
                    result["when"] = time.strftime("%H:%M:%S", time.gmtime())
                    data["runs"].append({"scenario": scenario, "server": name, **result})
                    if round_no == 0 or _better(scenario, result, table.get(name)):
                        table[name] = result
                    print(f"  {name}: {_summary(result)}", flush=True)
            save()
    data["machine"]["load after run"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    data["machine"]["run took"] = f"{time.monotonic() - started:.0f} s"
    save()
    print(f"done in {time.monotonic() - started:.0f} s; results in {RESULTS}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
