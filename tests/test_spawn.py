"""Background tasks: ``app.spawn`` is kept, logged and cancelled; a bare ``create_task``
from the app's own module still running at shutdown is pointed out once."""

from __future__ import annotations

import asyncio
import logging

import pytest

from chanlite import App
from chanlite.testing import TestClient


async def tick_forever() -> None:
    while True:
        await asyncio.sleep(0.01)


async def test_a_bare_create_task_left_running_is_pointed_at_app_spawn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App(layer=None)
    started: list[asyncio.Task[None]] = []

    @app.on_startup
    async def start() -> None:
        started.append(asyncio.get_running_loop().create_task(tick_forever()))

    caplog.set_level(logging.WARNING, logger="chanlite")
    async with TestClient(app):
        pass
    warnings = [r.getMessage() for r in caplog.records if "app.spawn" in r.getMessage()]
    assert warnings == [
        "Background task tick_forever() still running at shutdown was started without "
        "app.spawn(): nothing cancels or awaits it, and a failure in it is lost. Start "
        "background work with app.spawn(coro): the app keeps it, logs its failure and "
        "cancels it at shutdown."
    ]
    started[0].cancel()


async def test_spawned_tasks_are_cancelled_at_shutdown_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App(layer=None)
    started: list[asyncio.Task[None]] = []

    @app.on_startup
    async def start() -> None:
        started.append(app.spawn(tick_forever()))

    caplog.set_level(logging.WARNING, logger="chanlite")
    async with TestClient(app):
        assert not started[0].done()
    assert started[0].cancelled()
    assert not [r for r in caplog.records if "app.spawn" in r.getMessage()]
