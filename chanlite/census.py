"""What one process reports about itself, and the heartbeat that publishes it into the layer.

:func:`process_report` gathers, at the moment it is called, this process's numbers: the
server's counters (offered in the lifespan scope, see ``chanlite.server.counters``; read
through the small :class:`CounterSource` protocol, so the app side never imports the
server), the hub's counters, the layer's drops, the groups and presence entries of local
connections, the latest slow-consumer decisions, CPU, memory and the event loop's lag.
Nothing here runs per message: the counters are plain ints kept where things happen.

:class:`Census` runs one heartbeat task per process (under a real server only): every
*interval* seconds it measures the loop's lag and publishes the report as the meta of a
process-level presence entry in the reserved group :data:`PROCESSES_GROUP`. Presence
already gives every layer what ``chanlite inspect`` needs: entries of a process that
stops refreshing (``kill -9``) vanish after the layer's ``presence_timeout``, on SQLite and
Redis alike, and :func:`read_processes` is one ``presence()`` call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
import time
from dataclasses import asdict
from typing import Any, Protocol

from chanlite.hub import Hub
from chanlite.layers.base import BaseLayer
from chanlite.layers.errors import NotSupported
from chanlite.layers.streams import PresenceError

logger = logging.getLogger("chanlite.census")

#: The reserved group whose presence entries are the processes sharing a layer.
PROCESSES_GROUP = "chanlite.processes"
#: Seconds between two heartbeats (the report's age shows in ``chanlite inspect``).
DEFAULT_INTERVAL = 2.0
#: At most this many groups (the largest) go into one report; the rest are summed.
MAX_GROUPS = 30
#: The newest slow-consumer decisions a report carries.
MAX_SLOW_REPORTS = 3

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class CounterSource(Protocol):
    """What a server offers in ``scope["extensions"]["chanlite.counters"]["server"]``."""

    def snapshot(self) -> dict[str, int]:
        """Every counter as ``name -> value``."""


def rss_bytes() -> int:
    """This process's resident memory now (Linux ``/proc``), else its peak."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak * 1024 if os.uname().sysname == "Linux" else peak


class Census:
    """This process's numbers, and their heartbeat into the layer."""

    def __init__(self, hub: Hub, interval: float = DEFAULT_INTERVAL) -> None:
        self.hub = hub
        self.interval = interval
        #: The server's counters, once the lifespan startup offered them (else None).
        self.server: CounterSource | None = None
        #: The event loop's lag measured at the last heartbeat, and the largest seen.
        self.loop_lag = 0.0
        self.loop_lag_max = 0.0
        self.last_heartbeat = 0.0
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.key = f"{self.host}:{self.pid}"
        self._task: asyncio.Task[None] | None = None
        self._channel: str | None = None
        self._layer: BaseLayer | None = None

    # -- the report -------------------------------------------------------------------

    def numbers(self) -> dict[str, float]:
        """Every counter and gauge of this process as a flat ``name -> number`` dict."""
        hub = self.hub
        values: dict[str, float] = {}
        server = self.server
        if server is not None:
            values.update(server.snapshot())
            # The server's slow consumers (bytes unread) and the hub's (events) differ.
            values["slow_consumers_server"] = values.pop("slow_consumers", 0)
            values["slow_consumer_bytes_server"] = values.pop("slow_consumer_bytes", 0)
        else:
            values["slow_consumers_server"] = values["slow_consumer_bytes_server"] = 0
        for name, value in asdict(hub.stats).items():
            values[name] = value
        # The server writes broadcast frames without counting them (its hot path): the
        # hub counts them once per broadcast, and the totals out include them.
        values["ws_messages_out"] = values.get("ws_messages_out", 0) + hub.stats.broadcast_frames
        values["ws_bytes_out"] = values.get("ws_bytes_out", 0) + hub.stats.broadcast_bytes
        layer = hub.built_layer  # a layer not built yet has dropped nothing
        values["channel_full_drops"] = layer.dropped if layer is not None else 0
        inbox = layer.local_inbox if layer is not None else None
        values["expired_drops"] = inbox.expired if inbox is not None else 0
        values["layer_receive_wait_seconds"] = inbox.waited if inbox is not None else 0.0
        values["local_channels"] = len(hub.connections)
        values["cpu_seconds"] = time.process_time()
        values["rss_bytes"] = rss_bytes()
        values["loop_lag_seconds"] = self.loop_lag
        values["uptime_seconds"] = time.time() - hub.started_at
        return values

    def report(self) -> dict[str, Any]:
        """What this process publishes: identity, numbers, groups, presence, slow consumers."""
        hub = self.hub
        groups = sorted(hub.local_groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        presence = {group: len(chans) for group, chans in hub.local_presence.items() if chans}
        return {
            "pid": self.pid,
            "host": self.host,
            "started": hub.started_at,
            "heartbeat": time.time(),
            "interval": self.interval,
            "numbers": self.numbers(),
            "groups": {group: len(members) for group, members in groups[:MAX_GROUPS] if members},
            "groups_total": sum(1 for _, members in groups if members),
            "presence": presence,
            "slow_consumers": [
                r.as_dict() for r in list(hub.slow_consumer_reports)[-MAX_SLOW_REPORTS:]
            ],
        }

    # -- the heartbeat ----------------------------------------------------------------

    def start(self, server: CounterSource | None) -> None:
        """Begin the heartbeat on the running loop (the lifespan startup calls this)."""
        self.server = server
        self.pid = os.getpid()  # a worker forked after the App was made
        self.key = f"{self.host}:{self.pid}"
        if self._task is None or self._task.done():
            self._task = self.hub.spawn(self._beat())

    async def stop(self) -> None:
        """Stop the heartbeat and withdraw this process's entry (a clean exit)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        layer, channel = self._layer, self._channel
        if layer is not None and channel is not None:
            self._layer = self._channel = None
            with contextlib.suppress(Exception):  # the layer may be down; its timeout cleans up
                await layer.presence_leave(PROCESSES_GROUP, channel)

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.interval
        while True:
            await self.publish()
            expected = loop.time() + interval
            await asyncio.sleep(interval)
            # How late the loop woke us: callbacks that held it (blocking code, a flood).
            lag = max(0.0, loop.time() - expected)
            self.loop_lag = lag
            self.loop_lag_max = max(self.loop_lag_max, lag)

    async def publish(self) -> None:
        """Publish the report now (one presence write); failures are logged at debug."""
        try:
            layer = self.hub.layer
            if "presence" not in layer.extensions:
                return
            if self._layer is not layer or self._channel is None:
                self._layer = layer
                self._channel = await layer.new_channel("chanlite.process")
            report = self.report()
            try:
                await layer.presence_join(PROCESSES_GROUP, self._channel, self.key, report)
            except PresenceError:
                # Over the layer's meta size limit: the largest groups and the newest
                # decision still fit; the totals stay in "numbers" and "groups_total".
                groups = report["groups"]
                report["groups"] = dict(list(groups.items())[:5])
                report["presence"] = dict(list(report["presence"].items())[:5])
                report["slow_consumers"] = report["slow_consumers"][-1:]
                await layer.presence_join(PROCESSES_GROUP, self._channel, self.key, report)
            self.last_heartbeat = time.time()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the layer's outage is the hub's to report
            logger.debug("Publishing this process's report failed: %r", exc)


async def read_processes(layer: BaseLayer) -> list[dict[str, Any]]:
    """The reports of every process sharing *layer*, sorted by host and pid.

    Raises :class:`~chanlite.layers.NotSupported` for a layer without presence.
    """
    if "presence" not in layer.extensions:
        raise NotSupported(layer, "presence")
    present = await layer.presence(PROCESSES_GROUP)
    reports = []
    for metas in present.values():
        # A process has one entry; two (a layer re-made in one process) keep the newest.
        newest = max(metas, key=lambda meta: meta.get("heartbeat", 0.0))
        reports.append({k: v for k, v in newest.items() if k != "ref"})
    reports.sort(key=lambda r: (str(r.get("host")), int(r.get("pid") or 0)))
    return reports
