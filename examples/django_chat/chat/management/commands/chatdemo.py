"""``python manage.py chatdemo``: migrate, add the demo users, serve on chanlite.

Extra arguments go to ``manage.py chanlite`` (e.g. ``--port 8001``).
"""

from __future__ import annotations

import sys
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

DEMO_USERS = ("alice", "bob")
DEMO_PASSWORD = "chanlite-demo"


class Command(BaseCommand):
    help = "Set the demo up (database, users alice and bob) and serve it with chanlite."

    def run_from_argv(self, argv: list[str]) -> None:
        call_command("migrate", verbosity=0, interactive=False)
        users = get_user_model()
        for name in DEMO_USERS:
            if not users.objects.filter(username=name).exists():
                users.objects.create_user(name, password=DEMO_PASSWORD)
        self.stdout.write(f"Demo users: {', '.join(DEMO_USERS)} (password {DEMO_PASSWORD})")
        from chanlite.contrib.django.management.commands.chanlite import Command as Serve

        Serve().run_from_argv([argv[0], "chanlite", *argv[2:]])

    def handle(self, *args: Any, **options: Any) -> None:  # pragma: no cover
        self.run_from_argv([sys.argv[0], "chatdemo"])
