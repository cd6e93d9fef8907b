"""Real `chanlite run` processes and a real headless Chromium for the browser tests."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError as exc:  # fail loudly with the fix, not a bare ModuleNotFoundError
    raise ImportError(
        "The browser tests need Playwright for Python: `.venv/bin/pip install playwright` "
        "(only the Python package: the tests drive the OS Chromium, no browser download)."
    ) from exc

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHANLITE_TEST_CHROMIUM", "/usr/bin/chromium")
# What a headless browser needs here: no sandbox (we run as root), and nothing that phones
# home or updates itself in the middle of a test.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
EXPECT_TIMEOUT_MS = 15_000  # for conditions that normally hold within milliseconds
EXAMPLE_VARIABLES = ("CHAT_LAYER", "TICKER_INTERVAL")
BANNER_URL = re.compile(r"^\s+(http://\S+?):(\d+)\s*$", re.MULTILINE)


def chanlite_command() -> list[str]:
    """The `chanlite` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "chanlite"
    return [str(script)] if script.exists() else [sys.executable, "-m", "chanlite"]


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run `chanlite ARGS...` to completion; a non-zero exit fails the test with its output."""
    done = subprocess.run(
        [*chanlite_command(), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        pytest.fail(
            f"chanlite {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
        )
    return done


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """The system Chromium, headless; fails (never skips) with the reason if it cannot start."""
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests drive the OS Chromium. Install it with "
            "`make system-deps` (apt-get install -y chromium), or point CHANLITE_TEST_CHROMIUM "
            "at a Chromium binary."
        )
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=60_000
            )
        except Exception as exc:
            pytest.fail(f"Chromium ({CHROMIUM}) did not start: {type(exc).__name__}: {exc}")
        try:
            yield browser
        finally:
            browser.close()


class ChanliteServer:
    """`chanlite run TARGET ARGS...` as a child process, on a free (or given) port.

    Output goes to *log* (kept beside the test's other artifacts); the URL is read from the
    startup banner, so ``port=0`` needs no guessing.
    """

    def __init__(
        self, target: str, *args: str, log: Path, env: dict[str, str] | None = None
    ) -> None:
        self.target = target
        self.args = args
        self.log = log
        # The user's CHANLITE_* settings (CHANLITE_WORKERS, CHANLITE_LAYER...) and the
        # examples' own variables would change what is being tested.
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("CHANLITE_") and k not in EXAMPLE_VARIABLES
        }
        self.env = {**inherited, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.url = ""
        self._log_start = 0

    def start(self, port: int = 0, timeout: float = 30) -> str:
        """Start the server and wait until it answers HTTP; returns its base URL."""
        assert self.process is None, "already running"
        self._log_start = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    *chanlite_command(),
                    "run",
                    self.target,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    *self.args,
                ],
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: workers included in a kill
            )
        deadline = time.monotonic() + timeout
        while not (found := BANNER_URL.search(self.output())):
            self._check_alive("before printing its address")
            if time.monotonic() > deadline:
                self._give_up(f"printed no address within {timeout:.0f}s")
            time.sleep(0.05)
        self.url = f"{found.group(1)}:{found.group(2)}"
        self.port = int(found.group(2))
        # The banner comes right after bind; workers may still be importing the app.
        while True:
            try:
                with urllib.request.urlopen(self.url + "/", timeout=5) as response:
                    response.read()
                break
            except urllib.error.HTTPError:
                break  # an app with no "/" route answers 404: it is serving
            except OSError:
                self._check_alive("while starting")
                if time.monotonic() > deadline:
                    self._give_up(f"did not answer HTTP within {timeout:.0f}s")
                time.sleep(0.05)
        return self.url

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, as a service manager would; returns the exit code."""
        process = self.process
        assert process is not None, "not running"
        self.process = None
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            pytest.fail(
                f"chanlite run did not stop within {timeout:.0f}s of SIGTERM\n{self.tail()}"
            )

    def output(self) -> str:
        """What the current run has logged so far."""
        with self.log.open("rb") as f:
            f.seek(self._log_start)
            return f.read().decode(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def _check_alive(self, when: str) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            code = self.process.returncode
            self.process = None
            pytest.fail(f"chanlite run exited {code} {when}:\n{self.tail()}")

    def _give_up(self, what: str) -> None:
        assert self.process is not None
        _kill_group(self.process)
        self.process = None
        pytest.fail(f"chanlite run {what}:\n{self.tail()}")

    def __enter__(self) -> ChanliteServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.stop()
            else:
                self.process = None


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a server and the workers it spawned (they share its process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


@contextlib.contextmanager
def artifacts_on_failure(
    folder: Path, pages: dict[str, Page], server: ChanliteServer
) -> Iterator[None]:
    """On failure, screenshot every page into *folder* and show the server's last lines."""
    try:
        yield
    except BaseException:
        for name, page in pages.items():
            with contextlib.suppress(Exception):  # the page may be what broke
                page.screenshot(path=str(folder / f"failure-{name}.png"))
        print(f"\nfailure screenshots and server.log in {folder}\n{server.tail()}")
        raise
