"""``chanlite inspect --layer URL``: every process sharing a layer, from its own heartbeat.

Each chanlite process served by ``chanlite run`` publishes a report into the layer every
few seconds (:mod:`chanlite.census`); this module reads them back and shows them as text,
as JSON (``--json``) or as a table that refreshes (``--watch``, drawn with ``rich``:
``pip install chanlite[inspect]``). A process killed without a word disappears when the
layer's presence timeout removes its entry (``presence_timeout``, a layer URL option). On
``memory://`` no other process can be seen: the command shows its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Any

from chanlite.census import Census, read_processes
from chanlite.hub import Hub
from chanlite.layers.base import BaseLayer
from chanlite.layers.registry import get_layer

INSTALL_HINT = (
    "chanlite inspect --watch draws with rich: pip install 'chanlite[inspect]' "
    "(from a chanlite checkout: pip install -e '.[inspect]')"
)


async def gather(url: str) -> dict[str, Any]:
    """Everything ``chanlite inspect`` shows: the processes' reports and the totals."""
    layer = get_layer(url)
    try:
        return await gather_from(layer, url)
    finally:
        await layer.close()


async def gather_from(layer: BaseLayer, url: str) -> dict[str, Any]:
    """:func:`gather` on a layer already built (closed by the caller)."""
    if url.split("://", 1)[0].lower() == "memory":
        # A memory layer lives in one process: the only one to show is this one.
        processes = [Census(Hub(layer)).report()]
    else:
        processes = await read_processes(layer)
    groups: Counter[str] = Counter()
    presence: Counter[str] = Counter()
    for report in processes:
        groups.update(report.get("groups") or {})
        presence.update(report.get("presence") or {})
    return {
        "layer": url,
        "at": time.time(),
        "processes": processes,
        "groups": dict(groups.most_common()),
        "presence": dict(presence.most_common()),
    }


# -- text -------------------------------------------------------------------------------

COLUMNS = (
    "PID",
    "HOST",
    "UPTIME",
    "WS",
    "HTTP",
    "SSE",
    "TOPICS",
    "GROUPS",
    "DROPS",
    "SLOW",
    "BEAT",
)


def rows(view: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row of :data:`COLUMNS` per process."""
    now = view["at"]
    out: list[tuple[str, ...]] = []
    for report in view["processes"]:
        n = report.get("numbers") or {}
        drops = int(
            n.get("channel_full_drops", 0)
            + n.get("slow_consumer_events", 0)
            + n.get("expired_drops", 0)
        )
        # The hub's (events piled up) and the server's (bytes left unread).
        slow = int(n.get("slow_consumers", 0)) + int(n.get("slow_consumers_server", 0))
        out.append(
            (
                str(report.get("pid")),
                str(report.get("host")),
                duration(now - float(report.get("started") or now)),
                str(int(n.get("ws_open", 0))),
                str(int(n.get("http_open", 0))),
                str(int(n.get("subscriptions_open", 0))),
                str(int(n.get("topic_connections_open", 0))),
                str(int(report.get("groups_total", 0))),
                str(drops),
                str(slow),
                f"{max(0.0, now - float(report.get('heartbeat') or now)):.1f}s ago",
            )
        )
    return out


def duration(seconds: float) -> str:
    """``3d4h``, ``2h5m``, ``4m10s`` or ``12s``."""
    s = int(seconds)
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60}m"
    if s >= 60:
        return f"{s // 60}m{s % 60}s"
    return f"{s}s"


def details(view: dict[str, Any]) -> list[str]:
    """Lines under the table: groups, presence, and each process's slow consumers."""
    lines = []
    if view["groups"]:
        shown = ", ".join(f"{g} ({n})" for g, n in list(view["groups"].items())[:20])
        lines.append(f"groups (members): {shown}")
    if view["presence"]:
        shown = ", ".join(f"{g} ({n})" for g, n in list(view["presence"].items())[:20])
        lines.append(f"presence (entries): {shown}")
    for report in view["processes"]:
        for slow in report.get("slow_consumers") or ():
            lines.append(
                f"slow consumer in [{report.get('pid')}] at "
                f"{time.strftime('%H:%M:%S', time.localtime(slow['at']))}: "
                f"{slow['peer']} {slow['path']} channel {slow['channel'] or '-'} "
                f"groups {', '.join(slow['groups']) or '-'}, {waiting(slow)}"
            )
    return lines


def waiting(slow: dict[str, Any]) -> str:
    """What a slow consumer left: ``"N bytes waiting"`` and, when events piled up
    rather than unread bytes, how many events those bytes are."""
    if slow.get("kind") == "events" and slow.get("events") is not None:
        return f"{slow['waiting']} bytes waiting ({slow['events']} events for its handlers)"
    return f"{slow['waiting']} bytes waiting (unread by its client)"


def render_text(view: dict[str, Any]) -> str:
    """The plain-text view: a header line, a table, the details."""
    count = len(view["processes"])
    lines = [f"{count} process{'' if count == 1 else 'es'} on {view['layer']}"]
    table = [COLUMNS, *rows(view)]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    for row in table:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    lines.extend(details(view))
    return "\n".join(lines)


def render_rich(view: dict[str, Any]) -> Any:
    """The same view as a ``rich`` renderable (for ``--watch``)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    count = len(view["processes"])
    table = Table(title=f"{count} process{'' if count == 1 else 'es'} on {view['layer']}")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("HOST", "BEAT") else "right")
    for row in rows(view):
        table.add_row(*row)
    return Group(table, *(Text(line) for line in details(view)))


def watch(url: str, interval: float) -> None:
    """Refresh the table every *interval* seconds until Ctrl+C."""
    try:
        from rich.live import Live
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc

    async def loop() -> None:
        layer = get_layer(url)
        try:
            with Live(render_rich(await gather_from(layer, url)), auto_refresh=False) as live:
                while True:
                    await asyncio.sleep(interval)
                    live.update(render_rich(await gather_from(layer, url)), refresh=True)
        finally:
            await layer.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(loop())
