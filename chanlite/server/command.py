"""``chanlite run TARGET``: serve any ASGI app with the built-in server.

Every option has a ``CHANLITE_*`` environment variable (``--ws-max-size`` is
``CHANLITE_WS_MAX_SIZE``). Errors are one line and a non-zero exit; ``--log-level debug``
adds the traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import click

from chanlite.importer import AppLoadError
from chanlite.server import boot
from chanlite.server.config import LOG_LEVELS, Config
from chanlite.server.lifespan import LifespanError

logger = logging.getLogger("chanlite.server")
#: prometheus-client's multiprocess directory, set for workers (see chanlite.metrics).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _opt(*decls: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``click.option`` with a ``CHANLITE_<NAME>`` environment variable and shown default."""
    long = next(d for d in decls if d.startswith("--")).split("/")[0]
    kwargs.setdefault("envvar", "CHANLITE_" + long[2:].upper().replace("-", "_"))
    kwargs.setdefault("show_default", True)
    kwargs.setdefault("show_envvar", True)
    return click.option(*decls, **kwargs)


def _off_if_zero(value: Any) -> Any:
    return value or None


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("target", envvar="CHANLITE_TARGET")
@_opt("--host", default="127.0.0.1", help="Bind to this address.")
@_opt("--port", type=int, default=8000, help="Bind to this port (0: any free port).")
@_opt("--uds", default=None, help="Bind to this Unix domain socket instead.")
@_opt("--fd", type=int, default=None, help="Serve on this already-listening file descriptor.")
@_opt("--workers", type=click.IntRange(min=1), default=1, help="Worker processes.")
@_opt("--reload/--no-reload", default=False, help="Restart when Python files change.")
@_opt(
    "--reload-dir",
    "reload_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="Directory to watch with --reload (repeatable; default: the current directory).",
)
@_opt("--layer", default=None, help="Channel layer URL, e.g. sqlite:///chat.db.")
@_opt(
    "--metrics-path",
    default=None,
    help="Answer Prometheus scrapes at this path, e.g. /metrics (chanlite apps; needs "
    "chanlite[metrics]). Off by default.",
)
@_opt(
    "--log-level",
    type=click.Choice(list(LOG_LEVELS), case_sensitive=False),
    default="info",
    help="Log level; debug also shows tracebacks for errors.",
)
@_opt(
    "--log-config",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Logging configuration file: dictConfig .json or .yaml (PyYAML), else fileConfig "
    "(.ini). Replaces chanlite's own log set-up.",
)
@_opt(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    help="stderr lines as timestamped text, or one JSON object per line.",
)
@_opt(
    "--access-log/--no-access-log",
    default=True,
    help="Log one line per request when it ends, with its duration.",
)
@_opt(
    "--proxy-headers/--no-proxy-headers",
    default=True,
    help="Trust X-Forwarded-For/-Proto from --forwarded-allow-ips.",
)
@_opt(
    "--forwarded-allow-ips",
    default="127.0.0.1",
    help="Comma-separated proxy addresses or networks to trust ('*' for all).",
)
@_opt("--root-path", default="", help="ASGI root_path, for an app mounted below a prefix.")
@_opt("--ws-max-size", type=int, default=1024 * 1024, help="Largest WebSocket message (bytes).")
@_opt("--ws-ping-interval", type=float, default=20.0, help="Seconds between pings (0: off).")
@_opt("--ws-ping-timeout", type=float, default=20.0, help="Seconds to wait for a pong (0: off).")
@_opt(
    "--ws-per-message-deflate",
    type=click.BOOL,
    default=True,
    help="Offer permessage-deflate compression.",
)
@_opt("--ws-close-timeout", type=float, default=5.0, help="Seconds to finish a close handshake.")
@_opt("--ws-handshake-timeout", type=float, default=10.0, help="Seconds for the app to accept.")
@_opt(
    "--ws-max-fragments",
    type=click.IntRange(min=0),
    default=65536,
    help="Most frames in one WebSocket message; more closes 1002 (0: no limit).",
)
@_opt(
    "--ws-max-control-frames",
    type=click.IntRange(min=0),
    default=100,
    help="Most pings + pongs a client may send per second; more closes 1002 (0: no limit).",
)
@_opt(
    "--ws-send-limit",
    type=click.IntRange(min=1),
    default=8 * 1024 * 1024,
    help="Most bytes queued for one WebSocket client; more closes it 1013 (slow consumer).",
)
@_opt(
    "--ws-send-timeout",
    type=float,
    default=30.0,
    help="Seconds a client's queue may stay above --high-water before it is closed 1013 "
    "(0: no limit).",
)
@_opt(
    "--high-water",
    type=click.IntRange(min=1),
    default=64 * 1024,
    help="Buffered bytes per connection above which reading pauses and sends wait.",
)
@_opt("--timeout-keep-alive", type=float, default=5.0, help="Close idle keep-alive connections.")
@_opt(
    "--timeout-request-body",
    type=float,
    default=30.0,
    help="Seconds a request body may stall while the app waits for it (0: no limit).",
)
@_opt(
    "--timeout-response-write",
    type=float,
    default=30.0,
    help="Seconds a client may leave a response unread before it is dropped (0: no limit).",
)
@_opt("--timeout-request-header", type=float, default=10.0, help="Seconds to receive headers.")
@_opt(
    "--timeout-graceful-shutdown",
    type=float,
    default=30.0,
    help="Seconds to drain connections on shutdown.",
)
@_opt(
    "--limit-concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Most requests + WebSockets at once; more get 503.",
)
@_opt("--limit-request-line", type=int, default=8190, help="Longest request line (414).")
@_opt("--limit-request-fields", type=int, default=100, help="Most request headers (431).")
@_opt("--limit-request-header-size", type=int, default=32768, help="Most header bytes (431).")
@_opt("--backlog", type=int, default=2048, help="Listen backlog.")
@_opt(
    "--lifespan",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    help="Run ASGI lifespan startup/shutdown.",
)
@_opt("--server-header/--no-server-header", default=True, help="Send 'server: chanlite'.")
@_opt("--date-header/--no-date-header", default=True, help="Send the Date header.")
def run(target: str, **options: Any) -> None:
    """Serve the ASGI app TARGET (module:attr or path/to/file.py:attr).

    \b
    chanlite run app:app
    chanlite run examples/chat/app.py:app --layer sqlite:///chat.db --workers 2
    """
    options["reload_dirs"] = list(options["reload_dirs"])
    options["ws_ping_interval"] = _off_if_zero(options["ws_ping_interval"])
    for name in (
        "ws_ping_timeout",
        "ws_max_fragments",
        "ws_max_control_frames",
        "ws_send_timeout",
        "timeout_request_body",
        "timeout_response_write",
    ):
        options[name] = _off_if_zero(options[name])
    debug = options["log_level"].lower() in ("debug", "trace")
    if options["reload"] and options["workers"] > 1:
        # The reloader restarts one process; saying "workers: 2" and starting one would
        # hide that the app never ran as it will in production.
        raise click.UsageError(
            f"--reload runs one worker process, not --workers {options['workers']}: drop "
            "--reload to run several workers, or --workers to reload on changes"
        )
    try:
        config = boot.configure(options)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        app = boot.load(config, target)
    except AppLoadError as exc:
        _fail(str(exc), exc.__cause__, debug)
    if config.workers > 1:
        layer_url = getattr(app, "layer_url", None)
        if isinstance(layer_url, str) and layer_url.startswith("memory:"):
            _fail(
                f"--workers {config.workers} needs a channel layer the processes share, but "
                f"the app uses {layer_url} (one process only). Pick a shared layer, e.g. "
                "--layer sqlite:///chat.db",
                None,
                debug,
            )
    # Several workers each listen on their own SO_REUSEPORT socket: the kernel then
    # spreads connections evenly, where behind one shared socket one worker can take
    # nearly all of them. The supervisor only binds, to hold the port (port 0 included).
    own_sockets = config.workers > 1 and not config.reload and config.can_reuse_port()
    sock = _bind(config, debug, own_sockets)
    if config.workers > 1 or config.reload:
        from chanlite.server.workers import Supervisor

        if own_sockets:
            options["port"] = sock.getsockname()[1]
        supervisor = Supervisor(boot.worker, (target, options), options, sock, own_sockets)
        with _multiprocess_metrics():
            # The banner waits until every worker listens: "serving" should mean it.
            code = supervisor.run(on_ready=lambda: _banner(config, target, app, sock))
        _remove_uds(config)
        sys.exit(code)
    try:
        # The banner waits for the app's start-up (its channel layer reached): "serving"
        # should mean it.
        boot.serve_sockets(config, [sock], on_started=lambda: _banner(config, target, app, sock))
    except LifespanError as exc:
        _fail(str(exc), exc, debug, code=boot.EXIT_STARTUP_FAILED)
    except KeyboardInterrupt:  # pragma: no cover - signals are handled by the server
        pass
    finally:
        sock.close()
        _remove_uds(config)


@contextlib.contextmanager
def _multiprocess_metrics() -> Iterator[None]:
    """Give the workers a fresh directory for prometheus-client's multiprocess mode (a
    scrape of any worker then sums them all), unless one is set; removed at exit. Only
    an environment variable and a directory: the server imports no metrics code."""
    if os.environ.get(MULTIPROC_ENV):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="chanlite-metrics-") as directory:
        os.environ[MULTIPROC_ENV] = directory
        try:
            yield
        finally:
            os.environ.pop(MULTIPROC_ENV, None)


def _bind(config: Config, debug: bool, reuse_port: bool = False) -> socket.socket:
    try:
        return config.bind_socket(reuse_port=reuse_port, listen=not reuse_port)
    except OSError as exc:
        where = config.uds or (f"fd {config.fd}" if config.fd is not None else None)
        where = where or f"{config.host}:{config.port}"
        _fail(f"Could not listen on {where}: {exc.strerror or exc}", exc, debug)


def _remove_uds(config: Config) -> None:
    if config.uds:
        with contextlib.suppress(OSError):
            os.unlink(config.uds)


def url_of(config: Config, sock: socket.socket) -> str:
    """The address to print: clickable for TCP."""
    if config.uds:
        return f"unix:{config.uds}"
    name = sock.getsockname()
    if not isinstance(name, tuple):
        return f"unix:{name}" if name else f"fd {config.fd}"
    host, port = name[0], name[1]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _banner(config: Config, target: str, app: Any, sock: socket.socket) -> None:
    layer = "none"
    if getattr(app, "layer_url", None):
        layer = app.layer_url
    elif getattr(getattr(app, "hub", None), "_layer", None) is not None:
        layer = app.hub.describe_layer()  # a layer object: its repr
    workers = config.workers
    click.echo(f"chanlite serving {target}  (Ctrl+C to quit)", err=True)
    click.echo(f"  {url_of(config, sock)}", err=True)
    reload = "   reload: on" if config.reload else ""
    click.echo(f"  layer: {layer}   workers: {workers}{reload}", err=True)


def _fail(message: str, exc: BaseException | None, debug: bool, code: int = 1) -> NoReturn:
    if debug and exc is not None:
        traceback.print_exception(exc, file=sys.stderr)
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)
