# mypy: disable-error-code="import-untyped"
"""``python manage.py chanlite``: serve the whole site on chanlite's built-in server.

It is ``chanlite run`` with the project's ASGI entry as the target: every option of
``chanlite run`` works (``manage.py chanlite --help`` lists them), ``--noreload`` as in
``runserver`` too. Defaults come from ``CHANLITE["SERVER"]`` (option names, e.g.
``{"port": 8001}``); like ``runserver``, the server restarts on code changes when
``DEBUG`` is on.
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

#: The target used when ``ASGI_APPLICATION`` does not name one.
DEFAULT_TARGET = "chanlite.contrib.django.asgi:application"
# manage.py's own options, already applied by the time the command runs.
_DJANGO_OPTIONS = ("--settings", "--pythonpath")


def target() -> str:
    """``ASGI_APPLICATION`` (``"mysite.asgi.application"``) as a ``module:attr`` target."""
    from django.conf import settings

    dotted = getattr(settings, "ASGI_APPLICATION", None)
    if not dotted:
        return DEFAULT_TARGET
    module, _, attr = str(dotted).rpartition(".")
    if not module:
        raise CommandError(f"ASGI_APPLICATION = {dotted!r} is not a dotted path to an object")
    return f"{module}:{attr}"


def server_arguments(argv: list[str]) -> list[str]:
    """The ``chanlite run`` arguments for ``manage.py chanlite`` *argv*."""
    args: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _DJANGO_OPTIONS:
            skip = True
        elif arg.split("=", 1)[0] in _DJANGO_OPTIONS:
            pass
        elif arg == "--noreload":
            args.append("--no-reload")
        else:
            args.append(arg)
    return [target(), *args]


def server_defaults() -> dict[str, Any]:
    """Option defaults: reload in DEBUG, watch ``BASE_DIR``, then ``CHANLITE["SERVER"]``."""
    from django.conf import settings

    from chanlite.contrib.django import conf

    defaults: dict[str, Any] = {"reload": bool(settings.DEBUG)}
    base_dir = getattr(settings, "BASE_DIR", None)
    if base_dir is not None:
        defaults["reload_dirs"] = [str(base_dir)]
    defaults.update(conf.get().server)
    return defaults


class Command(BaseCommand):  # type: ignore[misc]
    help = "Serve the site (pages and WebSockets) on chanlite's server; options as chanlite run."
    requires_system_checks: list[str] = []  # checked below, before the server starts

    def run_from_argv(self, argv: list[str]) -> None:
        # Parse nothing here: the server's own command line (click) owns every option.
        self.serve(argv[2:], prog_name=f"{argv[0]} {argv[1]}")

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> Any:
        # For call_command("chanlite", "--port", "0"): every argument Django does not know
        # is kept, in order, for the server's command line.
        parser = super().create_parser(prog_name, subcommand, **kwargs)

        def parse_args(args: Any = None, namespace: Any = None) -> Any:
            options, extra = parser.parse_known_args(args, namespace)
            options.args = extra
            return options

        parser.parse_args = parse_args
        return parser

    def handle(self, *args: str, **options: Any) -> None:
        self.serve(list(args), prog_name="manage.py chanlite")

    def serve(self, argv: list[str], prog_name: str) -> None:
        """Run the checks, then hand over to ``chanlite run`` (which does not return)."""
        from chanlite.server.command import run

        if any(arg in ("-h", "--help") for arg in argv):
            sys.exit(
                help_command().main(
                    args=["--help"], prog_name=prog_name, default_map=server_defaults()
                )
            )
        self.check(display_num_errors=False)
        self.check_migrations()
        sys.exit(
            run.main(
                args=server_arguments(argv),
                prog_name=prog_name,
                default_map=server_defaults(),
                standalone_mode=True,
            )
        )


def help_command() -> Any:
    """``chanlite run`` as ``manage.py chanlite --help`` shows it: the same options, no
    TARGET (the site is the target), and what the command does."""
    import click

    from chanlite.server.command import run

    return click.Command(
        "chanlite",
        params=[p for p in run.params if not isinstance(p, click.Argument)],
        help=(
            "Serve the Django site, pages and WebSockets, on chanlite's server: the "
            'chanlite App of CHANLITE["APP"], with Django for every request its routes '
            f"do not take. The target is ASGI_APPLICATION if set, else {DEFAULT_TARGET}."
            "\n\nLike runserver it reloads on code changes when DEBUG is on (--noreload "
            "or --no-reload turn that off) and runs the system checks first. Every option "
            'of chanlite run works; CHANLITE["SERVER"] holds defaults for them.'
        ),
        context_settings={"help_option_names": ["-h", "--help"]},
    )


def __getattr__(name: str) -> Any:
    """``cli``: :func:`help_command`'s command, which the command line reference renders
    (mkdocs-click reads a module attribute); built on first use, so that importing this
    module, as ``manage.py`` does for every command, builds nothing."""
    if name == "cli":
        return help_command()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
