"""``chanlite run`` as a real process on a real port: options, env vars, errors, workers."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.server.procs import APPS, ROOT, Running, chanlite, start, wait_until_serving

pytestmark = pytest.mark.timeout(120)


def test_run_serves_prints_banner_and_stops_on_sigterm(served: list[Running]) -> None:
    running = start(f"{APPS}:pid_app", "--no-access-log")
    served.append(running)
    banner = "".join(running.banner)
    assert re.search(r"^  http://127\.0\.0\.1:\d+$", banner, re.M), banner
    assert "layer: none   workers: 1" in banner
    body = wait_until_serving(running)
    assert body.startswith(f"hello {running.proc.pid} ")
    code, err = running.stop()
    assert code == 0, err


def test_env_vars_mirror_options(served: list[Running]) -> None:
    running = start(
        f"{APPS}:pid_app",
        env={"CHANLITE_PORT": "0", "CHANLITE_ROOT_PATH": "/mounted", "CHANLITE_ACCESS_LOG": "0"},
    )
    served.append(running)
    assert wait_until_serving(running).endswith(" /mounted")


def test_layer_option_and_memory_refusal_with_workers(served: list[Running]) -> None:
    running = start(f"{APPS}:chanlite_app", "--layer", "memory://")
    served.append(running)
    assert "layer: memory://   workers: 1" in "".join(running.banner)
    running.stop()
    proc = chanlite(f"{APPS}:chanlite_app", "--workers", "2", "--port", "0")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert "sqlite:///" in err and "memory://" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["nosuchmodule:app"], 'Could not import module "nosuchmodule"', 1),
        ([f"{APPS}:missing"], 'Attribute "missing" not found', 1),
        ([f"{APPS}:not_an_app"], "not an ASGI application", 1),
        (["tests/server/broken_app.py:app"], "RuntimeError: this module is broken on purpose", 1),
        ([f"{APPS}:failing_startup"], "database is on fire", 3),
        ([f"{APPS}:pid_app", "--lifespan", "sometimes"], "Invalid value for '--lifespan'", 2),
        ([f"{APPS}:chanlite_app", "--layer", "nope://x"], "Could not use --layer nope://x", 1),
    ],
)
def test_errors_are_one_clear_line(args: list[str], message: str, code: int) -> None:
    proc = chanlite(*args, "--port", "0")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert message in err
    assert "Traceback" not in err


def test_reload_with_several_workers_is_refused_not_run_as_one() -> None:
    proc = chanlite(f"{APPS}:pid_app", "--reload", "--workers", "2", "--port", "0")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2, err
    assert (
        "Error: --reload runs one worker process, not --workers 2: drop --reload to run "
        "several workers, or --workers to reload on changes"
    ) in err
    assert "workers: 2" not in err and "chanlite serving" not in err


def test_debug_log_level_shows_the_traceback() -> None:
    proc = chanlite("tests/server/broken_app.py:app", "--port", "0", "--log-level", "debug")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "Traceback" in err and "broken on purpose" in err


def test_port_in_use_is_reported() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = chanlite(f"{APPS}:pid_app", "--port", str(port))
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert f"Could not listen on 127.0.0.1:{port}" in err
    assert "Traceback" not in err


def test_unix_socket(tmp_path: Path, served: list[Running]) -> None:
    path = tmp_path / "s.sock"
    proc = chanlite(f"{APPS}:pid_app", "--uds", str(path))
    running = Running(proc, "", [])
    served.append(running)
    deadline = time.monotonic() + 15
    while not path.exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(path))
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := client.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK") and b"hello" in data
    code, _ = running.stop()
    assert code == 0 and not path.exists()


def test_workers_share_the_socket_and_are_replaced(served: list[Running]) -> None:
    running = start(f"{APPS}:pid_app", "--workers", "2", "--no-access-log")
    served.append(running)
    assert "workers: 2" in "".join(running.banner)
    wait_until_serving(running)
    pids: set[int] = set()
    deadline = time.monotonic() + 40
    while len(pids) < 2 and time.monotonic() < deadline:
        pids.add(int(running.get().split()[1]))
    assert len(pids) == 2 and running.proc.pid not in pids
    victim = pids.pop()
    os.kill(victim, signal.SIGKILL)
    seen: set[int] = set()
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            seen.add(int(running.get().split()[1]))
        if len(seen - {victim} - pids) >= 1:
            break
        time.sleep(0.05)
    replacement = seen - {victim} - pids
    assert replacement, f"no replacement worker answered (seen {seen})"
    code, err = running.stop()
    assert code == 0, err
    assert "died" in err
    for pid in (*pids, *replacement):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_workers_each_get_connections(served: list[Running]) -> None:
    """With SO_REUSEPORT every worker listens on its own socket: 40 connections open at
    once are spread by the kernel, so both workers answer some of them."""
    assert hasattr(socket, "SO_REUSEPORT"), "this platform has no SO_REUSEPORT"
    running = start(f"{APPS}:pid_app", "--workers", "2", "--no-access-log")
    served.append(running)
    wait_until_serving(running)
    host, port = running.url.removeprefix("http://").split(":")
    clients = [socket.create_connection((host, int(port)), timeout=10) for _ in range(40)]
    pids: list[int] = []
    try:
        for client in clients:
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        for client in clients:
            data = b""
            while chunk := client.recv(65536):
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), data
            pids.append(int(body.split()[1]))
    finally:
        for client in clients:
            client.close()
    assert len(set(pids)) == 2 and running.proc.pid not in pids, pids
    code, err = running.stop()
    assert code == 0, err


def test_reload_restarts_on_change(tmp_path: Path, served: list[Running]) -> None:
    app_file = tmp_path / "reloadme.py"
    source = (ROOT / APPS).read_text()
    app_file.write_text(source)
    running = start(
        f"{app_file}:pid_app", "--reload", "--reload-dir", str(tmp_path), "--no-access-log"
    )
    served.append(running)
    assert wait_until_serving(running).startswith("hello ")
    time.sleep(0.5)  # let the watcher settle
    app_file.write_text(source.replace('GREETING = "hello"', 'GREETING = "reloaded"'))
    deadline = time.monotonic() + 40
    body = ""
    while time.monotonic() < deadline:
        try:
            body = running.get()
        except OSError:
            body = ""
        if body.startswith("reloaded "):
            break
        time.sleep(0.1)
    assert body.startswith("reloaded ")
    code, err = running.stop()
    assert code == 0, err


def test_inherited_file_descriptor(served: list[Running]) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        fd = listener.fileno()
        running = start(f"{APPS}:pid_app", "--fd", str(fd), pass_fds=(fd,))
        served.append(running)
    assert running.url == f"http://127.0.0.1:{port}"
    assert wait_until_serving(running).startswith("hello ")
    code, err = running.stop()
    assert code == 0, err


def test_blocking_serve_function() -> None:
    code = (
        "from chanlite.server import serve\n"
        "from tests.server.apps import pid_app\n"
        "serve(pid_app, port=0, access_log=False)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert match, line
        running = Running(proc, match.group(0), [line])
        assert wait_until_serving(running).startswith("hello ")
        exit_code, err = running.stop(signal.SIGINT)
        assert exit_code == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_workers_report_a_failed_startup() -> None:
    proc = chanlite(f"{APPS}:failing_startup", "--workers", "2", "--port", "0")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert "database is on fire" in err
    assert "layer:" not in err  # no banner: nothing is serving


def test_workers_stop_when_the_supervisor_is_killed(served: list[Running]) -> None:
    running = start(f"{APPS}:pid_app", "--workers", "2", "--no-access-log")
    served.append(running)
    pids: set[int] = set()
    deadline = time.monotonic() + 40
    while len(pids) < 2 and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            pids.add(int(running.get().split()[1]))
    assert len(pids) == 2
    running.proc.kill()  # no chance to stop its workers
    running.proc.wait(10)
    deadline = time.monotonic() + 15
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        for pid in list(alive):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                alive.discard(pid)
        time.sleep(0.1)
    assert not alive, f"orphaned workers still running: {alive}"


def test_load_app_raises_a_typed_error_with_one_line() -> None:
    from chanlite.importer import AppLoadError, ImportFromStringError, load_app

    with pytest.raises(AppLoadError, match=r"^Could not load nowhere:app: Could not import"):
        load_app("nowhere:app")
    with pytest.raises(AppLoadError, match=r"is an int \(42\), not an ASGI application"):
        load_app("tests.server.apps:not_an_app")
    with pytest.raises(AppLoadError, match="RuntimeError: this module is broken") as info:
        load_app("tests/server/broken_app.py:app")
    assert isinstance(info.value.__cause__, RuntimeError)  # the traceback --log-level debug shows
    assert issubclass(ImportFromStringError, AppLoadError)
    assert callable(load_app("tests.server.apps:pid_app"))


def test_the_worker_supervisor_and_the_boot_sequence_never_import_the_command_line() -> None:
    code = (
        "import sys, chanlite.server.workers, chanlite.server.boot; "
        "print(sorted(m for m in sys.modules if m == 'click' or m.startswith('chanlite.cli') "
        "or m == 'chanlite.server.command'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_every_limit_is_a_flag_and_a_config_option() -> None:
    from click.testing import CliRunner

    from chanlite.server.command import run
    from chanlite.server.config import Config

    help_text = CliRunner().invoke(run, ["--help"], terminal_width=200).output
    for option in (
        "ws_max_fragments",
        "ws_max_control_frames",
        "ws_send_limit",
        "ws_send_timeout",
        "high_water",
        "timeout_request_body",
        "timeout_response_write",
    ):
        assert option in Config.option_names()
        flag = "--" + option.replace("_", "-")
        assert flag in help_text, flag
        assert "CHANLITE_" + option.upper() in help_text
