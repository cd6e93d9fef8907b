from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from chanlite import __version__
from chanlite.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_python_dash_m() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "chanlite", "--version"], capture_output=True, text=True, check=True
    )
    assert __version__ in out.stdout


def test_routes_lists_http_ws_and_events() -> None:
    result = CliRunner().invoke(main, ["routes", str(ROOT / "examples/chat/app.py") + ":app"])
    assert result.exit_code == 0, result.output
    assert "WS" in result.output and "/ws/{room}" in result.output
    assert "HTTP GET" in result.output and "/room/{room}" in result.output
    assert "MOUNT" in result.output and "/static" in result.output


def test_routes_finds_a_module_in_the_working_directory(tmp_path: Path) -> None:
    # `chanlite routes app:app` in the app's own folder, as `chanlite run app:app` works
    # (the console script: `python -m` would put the folder on sys.path itself).
    (tmp_path / "routes_cwd_app.py").write_text(
        "from chanlite import App\n"
        "app = App()\n"
        "@app.http('/health')\n"
        "async def health(request):\n"
        "    return {'ok': True}\n"
    )
    out = subprocess.run(
        [str(Path(sys.executable).with_name("chanlite")), "routes", "routes_cwd_app:app"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "/health" in out.stdout


def test_routes_bad_target() -> None:
    result = CliRunner().invoke(main, ["routes", "no_such_module_xyz:app"])
    assert result.exit_code != 0
    assert 'Could not import module "no_such_module_xyz"' in result.output
    result = CliRunner().invoke(main, ["routes", "examples.echo"])
    assert "<module>:<attribute>" in result.output


def test_routes_not_an_app() -> None:
    result = CliRunner().invoke(main, ["routes", "json:dumps"])
    assert result.exit_code != 0
    assert "not a chanlite App" in result.output


def test_plugins_lists_memory() -> None:
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 0
    assert "memory://" in result.output and "chanlite" in result.output


def test_send_errors_are_one_clear_line() -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["send", "--layer", "memory://", "g", "{not json"])
    assert result.exit_code == 2
    assert "not valid JSON" in result.output
    result = runner.invoke(main, ["send", "--layer", "memory://", "g", '{"no": "type"}'])
    assert result.exit_code == 2
    assert 'must be a JSON object with a "type"' in result.output
    result = runner.invoke(main, ["send", "--layer", "nats://x", "g", '{"type": "a"}'])
    assert result.exit_code == 1
    assert "No channel layer is installed for the scheme 'nats'" in result.output
    result = runner.invoke(main, ["send", "--layer", "memory://", "bad group!", '{"type": "a"}'])
    assert result.exit_code == 1
    assert "Group name must be a valid unicode string" in result.output


def test_send_to_memory_says_nobody_is_there() -> None:
    # A memory layer made for the command has no members: it says so, with status 3.
    result = CliRunner().invoke(main, ["send", "--layer", "memory://", "g", '{"type": "a"}'])
    assert (result.exit_code, result.output) == (
        3,
        "nobody is in group 'g': the message reached no one\n",
    )
    result = CliRunner().invoke(
        main, ["send", "--layer", "memory://", "--broadcast-text", "hi", "g"]
    )
    assert result.exit_code == 3, result.output
    result = CliRunner().invoke(
        main, ["send", "--layer", "memory://", "--channel", "jobs", '{"type": "a"}']
    )
    assert (result.exit_code, result.output) == (
        0,
        "queued on channel 'jobs' (whoever receives from it next gets it)\n",
    )


def test_send_help_lists_the_exit_statuses() -> None:
    result = CliRunner().invoke(main, ["send", "--help"])
    assert result.exit_code == 0
    for line in ("0  sent", "3  sent, but nobody was there", "1  not sent", "2  bad arguments"):
        assert line in result.output
    assert "--create" in result.output
