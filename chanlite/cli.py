"""The ``chanlite`` command line: ``run``, ``send``, ``routes``, ``plugins``."""

from __future__ import annotations

import click

from chanlite.__about__ import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="chanlite")
def main() -> None:
    """chanlite: WebSockets, HTTP and channel layers on one small ASGI core."""
