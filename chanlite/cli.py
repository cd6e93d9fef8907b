"""The ``chanlite`` command line: ``run``, ``send``, ``routes``, ``plugins``."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from chanlite.__about__ import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="chanlite")
def main() -> None:
    """chanlite: WebSockets, HTTP and channel layers on one small ASGI core."""


def _load(target: str) -> Any:
    from chanlite.importer import ImportFromStringError, import_from_string

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


@main.command()
@click.option("--layer", "layer_url", required=True, envvar="CHANLITE_LAYER", help="Layer URL.")
@click.option("--channel", "channel", default=None, help="Send to this channel, not a group.")
@click.option("--broadcast-text", default=None, help="Write this text frame to GROUP's sockets.")
@click.argument("group", required=False)
@click.argument("event", required=False)
def send(
    layer_url: str,
    channel: str | None,
    broadcast_text: str | None,
    group: str | None,
    event: str | None,
) -> None:
    """Send EVENT (a JSON object with a "type") to GROUP, or to --channel NAME.

    \b
    chanlite send --layer sqlite:///chat.db room.lobby '{"type": "chat.message", "text": "hi"}'
    chanlite send --layer sqlite:///chat.db --broadcast-text 'hello all' room.lobby
    chanlite send --layer redis://localhost:6379/0 --channel ws.ab12!3 '{"type": "ping"}'
    """
    from chanlite import sync
    from chanlite.layers import LayerError

    if channel is not None and group is not None and event is None:
        group, event = None, group  # `--channel NAME EVENT`: the only argument is the event
    try:
        if broadcast_text is not None:
            if group is None or event is not None or channel is not None:
                raise click.UsageError("--broadcast-text needs exactly one GROUP argument")
            sync.broadcast(layer_url, group, text=broadcast_text)
            return
        if event is None:
            raise click.UsageError("Give a GROUP and an EVENT, or --channel NAME and an EVENT")
        try:
            message = json.loads(event)
        except ValueError as exc:
            raise click.BadParameter(f"not valid JSON ({exc})", param_hint="EVENT") from None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise click.BadParameter(
                'must be a JSON object with a "type", e.g. {"type": "chat.message"}',
                param_hint="EVENT",
            )
        if channel is not None:
            sync.send(layer_url, channel, message)
        elif group is not None:
            sync.group_send(layer_url, group, message)
    except (LayerError, TypeError, OSError) as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
    finally:
        sync.close()


def _register_run() -> None:
    try:
        from chanlite.server.command import run
    except ImportError as exc:  # pragma: no cover - the server ships with the package
        print(f"chanlite: the run command is unavailable: {exc}", file=sys.stderr)
        return
    main.add_command(run)


_register_run()
