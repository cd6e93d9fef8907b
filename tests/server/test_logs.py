"""What ``chanlite run`` logs: timestamps, a start and a stop line, one access line per
request when it ends (an event stream the client leaves included) with its duration,
``--log-format json`` and ``--log-config``."""

from __future__ import annotations

import json
import re
import socket
import textwrap
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.server.procs import Running, chanlite, start

pytestmark = pytest.mark.timeout(60)

APP = "tests/server/logs_app.py:app"
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}"


def leave_an_event_stream(running: Running) -> None:
    """Read the first event of /events, then hang up."""
    parts = urlsplit(running.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"data: tick" not in data:
            chunk = sock.recv(4096)
            assert chunk, data
            data += chunk


def wait_for(running: Running, path: str) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            running.get(path)
            return
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_text_lines_have_timestamps_durations_and_a_start_and_stop(
    served: list[Running],
) -> None:
    running = start(APP)
    served.append(running)
    wait_for(running, "/")
    leave_an_event_stream(running)
    time.sleep(0.3)  # the server notices the hang-up; nothing to wait on from outside
    code, err = running.stop()
    assert code == 0, err
    lines = "".join(running.banner).splitlines() + err.splitlines()
    logged = [line for line in lines if re.match(STAMP, line)]
    assert re.fullmatch(rf"{STAMP} INFO:  Started server process \[\d+\]", logged[0]), lines
    assert re.fullmatch(rf"{STAMP} INFO:  Stopped server process \[\d+\]", logged[-1]), lines
    access = [line for line in logged if '"GET ' in line]
    assert re.fullmatch(
        rf'{STAMP} INFO:  127\.0\.0\.1:\d+ - "GET / HTTP/1\.1" 200 \d+\.\dms', access[0]
    )
    streams = [line for line in access if "/events" in line]
    assert len(streams) == 1, access
    assert re.fullmatch(
        rf'{STAMP} INFO:  127\.0\.0\.1:\d+ - "GET /events HTTP/1\.1" 200 \d+\.\dms \(client left\)',
        streams[0],
    )
    assert any("Shutting down" in line for line in logged)


def test_json_format_is_one_object_per_line(served: list[Running]) -> None:
    running = start(APP, "--log-format", "json")
    served.append(running)
    wait_for(running, "/?x=1")
    _, err = running.stop()
    records = [
        json.loads(line) for line in running.banner + err.splitlines() if line.startswith("{")
    ]
    assert records[0]["message"].startswith("Started server process")
    assert records[-1]["message"].startswith("Stopped server process")
    access = [r for r in records if r["logger"] == "chanlite.access" and r.get("path") == "/?x=1"]
    assert len(access) == 1
    entry = access[0]
    assert (entry["level"], entry["method"], entry["status"]) == ("INFO", "GET", 200)
    assert isinstance(entry["duration_ms"], float) and entry["client_left"] is False
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])


def test_log_config_json_file_takes_over(tmp_path: Path, served: list[Running]) -> None:
    out = tmp_path / "access.log"
    config = tmp_path / "logging.json"
    config.write_text(
        json.dumps(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "formatters": {"plain": {"format": "ACCESS %(message)s"}},
                "handlers": {
                    "file": {
                        "class": "logging.FileHandler",
                        "filename": str(out),
                        "formatter": "plain",
                    }
                },
                "loggers": {"chanlite.access": {"handlers": ["file"], "level": "INFO"}},
            }
        )
    )
    running = start(APP, "--log-config", str(config))
    served.append(running)
    wait_for(running, "/")
    running.stop()
    assert re.search(r'^ACCESS 127\.0\.0\.1:\d+ - "GET / HTTP/1\.1" 200 ', out.read_text(), re.M)


def test_log_config_ini_file(tmp_path: Path, served: list[Running]) -> None:
    out = tmp_path / "server.log"
    config = tmp_path / "logging.ini"
    config.write_text(
        textwrap.dedent(
            f"""\
            [loggers]
            keys=root,server
            [handlers]
            keys=file
            [formatters]
            keys=plain
            [logger_root]
            handlers=
            [logger_server]
            qualname=chanlite.server
            level=INFO
            handlers=file
            [handler_file]
            class=FileHandler
            args=({str(out)!r},)
            formatter=plain
            [formatter_plain]
            format=SERVER %(message)s
            """
        )
    )
    running = start(APP, "--log-config", str(config))
    served.append(running)
    running.stop()
    text = out.read_text()
    assert re.search(r"^SERVER Started server process \[\d+\]$", text, re.M), text
    assert re.search(r"^SERVER Stopped server process \[\d+\]$", text, re.M), text


def test_a_broken_log_config_is_one_error_line(tmp_path: Path) -> None:
    config = tmp_path / "logging.json"
    config.write_text('{"version": 1, "handlers": {"x": {"class": "no.such.Handler"}}}')
    proc = chanlite(APP, "--port", "0", "--log-config", str(config))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert f"Error: --log-config {config}: Unable to configure handler 'x'" in err
    assert "Traceback" not in err


def test_a_yaml_log_config_without_pyyaml_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from chanlite.server.logs import load_log_config

    config = tmp_path / "logging.yaml"
    config.write_text("version: 1\n")
    monkeypatch.setitem(sys.modules, "yaml", None)  # as if PyYAML were not installed
    with pytest.raises(ValueError) as info:
        load_log_config(str(config))
    assert str(info.value) == (
        f"--log-config {config}: a YAML file needs PyYAML (pip install pyyaml)"
    )
