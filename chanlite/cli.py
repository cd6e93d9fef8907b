"""The ``chanlite`` command line: ``run``, ``send``, ``routes``, ``plugins``, ``inspect``."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any

import click

from chanlite.__about__ import __version__
from chanlite.broadcast import broadcast_event


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="chanlite")
def main() -> None:
    """chanlite: WebSockets, HTTP and channel layers on one small ASGI core."""


@main.result_callback()
def _exit_status(result: Any, **_: Any) -> None:
    # A channel layer that stopped the process (its storage gone for good) shut the
    # server down gracefully; the exit status says it was not a normal stop.
    from chanlite.layers.base import layer_gave_up

    if layer_gave_up() is not None:
        sys.exit(1)


def _load(target: str) -> Any:
    import os

    from chanlite.importer import ImportFromStringError, import_from_string

    # As `chanlite run` does: `chanlite routes app:app` finds ./app.py.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return import_from_string(target)
    except ImportFromStringError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.argument("target")
def routes(target: str) -> None:
    """List the routes of the chanlite App at TARGET (module:attr or file.py:attr)."""
    from chanlite.app import App

    app = _load(target)
    if not isinstance(app, App):
        raise click.ClickException(f"{target} is a {type(app).__name__}, not a chanlite App")
    from chanlite.routing import WebSocketRoute

    lines: list[tuple[str, str, str]] = []
    for route in app.routes:
        lines.append(route.describe())
        if isinstance(route, WebSocketRoute):
            lines.extend(("", "", f"  on {event}") for event in sorted(route.endpoint.events))
    if not lines:
        click.echo("(no routes)")
        return
    width = max(len(kind) for kind, _, _ in lines)
    path_width = max(len(path) for _, path, _ in lines)
    for kind, path, name in lines:
        click.echo(f"{kind:<{width}}  {path:<{path_width}}  {name}".rstrip())


@main.command()
def plugins() -> None:
    """List the installed channel layer plugins (scheme, distribution, version)."""
    from chanlite.layers import installed_layers

    for scheme, dist, version in installed_layers():
        click.echo(f"{scheme + '://':<12} {dist} {version}")


#: Exit statuses of ``chanlite send`` (listed in its --help).
SEND_OK, SEND_FAILED, SEND_USAGE, SEND_NOBODY = 0, 1, 2, 3


@main.command()
@click.option("--layer", "layer_url", required=True, envvar="CHANLITE_LAYER", help="Layer URL.")
@click.option("--channel", "channel", default=None, help="Send to this channel, not a group.")
@click.option("--broadcast-text", default=None, help="Write this text frame to GROUP's sockets.")
@click.option(
    "--create",
    is_flag=True,
    help="Create the layer's storage (an SQLite file) if it does not exist; without it a "
    "missing file is an error, so a typo in the path does not make a new database.",
)
@click.argument("group", required=False)
@click.argument("event", required=False)
def send(
    layer_url: str,
    channel: str | None,
    broadcast_text: str | None,
    create: bool,
    group: str | None,
    event: str | None,
) -> None:
    """Send EVENT (a JSON object with a "type") to GROUP, or to --channel NAME.

    \b
    chanlite send --layer sqlite:///chat.db room.lobby '{"type": "chat.message", "text": "hi"}'
    chanlite send --layer sqlite:///chat.db --broadcast-text 'hello all' room.lobby
    chanlite send --layer redis://localhost:6379/0 --channel ws.ab12!3 '{"type": "ping"}'

    It prints what it did: "delivered to 3 members of group 'room.lobby'", "nobody is in
    group 'room.lobby'", or "sent ..." when the layer cannot tell who received it.

    \b
    Exit status:
      0  sent (to at least one member, or the layer cannot tell)
      3  sent, but nobody was there to receive it: an empty group, or a
         channel whose process is not running
      1  not sent: the layer cannot be used (unreachable, its file missing,
         locked, read-only or not a database), the channel is full, or the
         event cannot be encoded
      2  bad arguments
    """
    if channel is not None and group is not None and event is None:
        group, event = None, group  # `--channel NAME EVENT`: the only argument is the event
    if broadcast_text is not None:
        if group is None or event is not None or channel is not None:
            raise click.UsageError("--broadcast-text needs exactly one GROUP argument")
        message: dict[str, Any] = broadcast_event(text=broadcast_text)
    else:
        if event is None or (channel is None and group is None):
            raise click.UsageError("Give a GROUP and an EVENT, or --channel NAME and an EVENT")
        message = _parse_event(event)
    reached, created = _send_through(layer_url, create, channel, group, message)
    if created:
        click.echo(f"created the layer's storage for {layer_url} (it did not exist)")
    where = f"channel {channel!r}" if channel is not None else f"group {group!r}"
    if reached is None:
        if channel is not None:
            click.echo(f"queued on {where} (whoever receives from it next gets it)")
        else:
            click.echo(f"sent to {where} (the layer does not report how many members it has)")
    elif reached == 0:
        if channel is not None:
            click.echo(f"nobody is listening on {where}: its process is not running")
        else:
            click.echo(f"nobody is in {where}: the message reached no one")
        sys.exit(SEND_NOBODY)
    elif channel is not None:
        click.echo(f"delivered to {where}")
    else:
        click.echo(f"delivered to {reached} member{'' if reached == 1 else 's'} of {where}")


def _parse_event(event: str) -> dict[str, Any]:
    try:
        message = json.loads(event)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON ({exc})", param_hint="EVENT") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise click.BadParameter(
            'must be a JSON object with a "type", e.g. {"type": "chat.message"}',
            param_hint="EVENT",
        )
    return message


def _send_through(
    layer_url: str, create: bool, channel: str | None, group: str | None, message: dict[str, Any]
) -> tuple[int | None, bool]:
    """Send *message* through a layer made for this call; returns who it reached and
    whether the layer created its storage to do so."""
    from chanlite import sync
    from chanlite.layers import LayerError, StorageNotFound, get_layer

    layer = None
    try:
        layer = get_layer(layer_url)
        layer.create_storage = create
        sender = sync.SyncSender(layer)
        if channel is not None:
            reached = sender.send(channel, message)
        else:
            assert group is not None
            reached = sender.group_send(group, message)
        return reached, layer.storage_created
    except StorageNotFound as exc:
        hint = "Check the path, or pass --create to create it."
        raise click.ClickException(f"{exc} {hint}") from None
    except LayerError as exc:
        raise click.ClickException(str(exc)) from None
    except (TypeError, OSError) as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
    finally:
        if layer is not None:
            with contextlib.suppress(Exception):
                sync.run(layer.close())


def _register_run() -> None:
    try:
        from chanlite.server.command import run
    except ImportError as exc:  # pragma: no cover - the server ships with the package
        print(f"chanlite: the run command is unavailable: {exc}", file=sys.stderr)
        return
    main.add_command(run)


_register_run()


@main.command()
@click.option("--layer", "layer_url", required=True, envvar="CHANLITE_LAYER", help="Layer URL.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document and exit.")
@click.option(
    "--watch",
    "watch_every",
    type=float,
    default=None,
    is_flag=False,
    flag_value=2.0,
    help="Redraw every N seconds (default 2) until Ctrl+C (needs chanlite[inspect]).",
)
def inspect(layer_url: str, as_json: bool, watch_every: float | None) -> None:
    """Show every process sharing the layer at --layer: pid, host, uptime, connections,
    groups with member counts, presence, drops, slow consumers and the age of its last
    heartbeat, as each process published it (processes served by chanlite run)."""
    import asyncio

    from chanlite import inspector
    from chanlite.layers import LayerError

    try:
        if watch_every is not None:
            inspector.watch(layer_url, watch_every)
            return
        view = asyncio.run(inspector.gather(layer_url))
    except (LayerError, ImportError, OSError) as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
    if as_json:
        click.echo(json.dumps(view, indent=2, sort_keys=True))
    else:
        click.echo(inspector.render_text(view))
