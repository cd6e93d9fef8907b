"""``/metrics``: this deployment's numbers in the Prometheus text format (opt-in).

Turned on by ``App(metrics="/metrics")``, ``app.enable_metrics(path)`` or
``chanlite run --metrics-path /metrics``; never on by default. Needs the official
``prometheus-client`` (``pip install chanlite[metrics]``).

The counters themselves are plain ints where things happen (the server's
``ServerCounters``, the hub's ``HubStats``); this module only reads them, through
:class:`~chanlite.census.Census`, when someone asks:

* **One process**: a scrape reads the numbers of this process through a custom collector.
* **Several workers** (``chanlite run --workers N`` sets ``PROMETHEUS_MULTIPROC_DIR`` for
  its workers): prometheus-client's multiprocess mode. Each worker copies its numbers
  into the library's per-process files once a second (and the scraped worker once more
  right before answering); whichever worker a scrape reaches, the library sums every
  worker's files. Counters of a worker that died keep counting in the totals (what it
  did, it did); gauges of a dead worker are dropped at the next scrape. Nothing is
  counted twice, because no worker reports another's numbers. The library's mode was
  chosen over publishing numbers into the channel layer because it needs no shared
  layer (``memory://`` workers too) and it is the format Prometheus users already know.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from chanlite.census import Census

logger = logging.getLogger("chanlite.metrics")

#: The environment variable of prometheus-client's multiprocess mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Seconds between two copies of a worker's numbers into the multiprocess files.
SYNC_INTERVAL = 1.0
INSTALL_HINT = (
    "chanlite's metrics need prometheus-client: pip install 'chanlite[metrics]' "
    "(from a chanlite checkout: pip install -e '.[metrics]')"
)


@dataclass(frozen=True)
class Series:
    """One exported series: a metric name, its labels, and the number it reads."""

    metric: str
    labels: tuple[tuple[str, str], ...]
    number: str  # a key of Census.numbers()


@dataclass(frozen=True)
class Family:
    """One metric family: its name, kind, help, how workers combine, and its series."""

    name: str
    kind: str  # "counter" or "gauge"
    doc: str
    series: tuple[Series, ...]
    # For gauges under several workers: "livesum" (a total) or "liveall" (one per pid).
    mode: str = "livesum"


def _one(name: str, kind: str, doc: str, number: str, mode: str = "livesum") -> Family:
    return Family(name, kind, doc, (Series(name, (), number),), mode)


def _by(name: str, kind: str, doc: str, label: str, numbers: Sequence[tuple[str, str]]) -> Family:
    return Family(
        name, kind, doc, tuple(Series(name, ((label, value),), key) for value, key in numbers)
    )


#: Everything exported, in one table: names, help and where each number comes from.
FAMILIES: tuple[Family, ...] = (
    _by(
        "chanlite_connections_open",
        "gauge",
        "Connections open now, by kind.",
        "kind",
        [
            ("http", "http_open"),
            ("websocket", "ws_open"),
            ("subscription", "subscriptions_open"),
            ("topics", "topic_connections_open"),
        ],
    ),
    _one("chanlite_http_requests", "counter", "HTTP requests handed to the app.", "http_requests"),
    _one(
        "chanlite_websocket_accepted",
        "counter",
        "WebSocket handshakes accepted by the app.",
        "ws_accepted",
    ),
    _by(
        "chanlite_websocket_refused",
        "counter",
        "WebSocket handshakes refused, by reason.",
        "reason",
        [
            ("app", "ws_refused_app"),
            ("denial", "ws_refused_denial"),
            ("error", "ws_refused_error"),
            ("over_limit", "ws_refused_over_limit"),
            ("timeout", "ws_refused_timeout"),
        ],
    ),
    _by(
        "chanlite_websocket_messages",
        "counter",
        "WebSocket messages, by direction (out includes broadcast frames).",
        "direction",
        [("in", "ws_messages_in"), ("out", "ws_messages_out")],
    ),
    _by(
        "chanlite_websocket_bytes",
        "counter",
        "WebSocket bytes: read from clients (in), message payloads written (out).",
        "direction",
        [("in", "ws_bytes_in"), ("out", "ws_bytes_out")],
    ),
    _by(
        "chanlite_events",
        "counter",
        "Layer events this process's hub handled, by outcome.",
        "outcome",
        [
            ("received", "events_received"),
            ("dispatched", "events_delivered"),
            ("unhandled", "events_unhandled"),
            ("undeliverable", "events_undeliverable"),
            ("replayed", "events_replayed"),
        ],
    ),
    _by(
        "chanlite_layer_sends",
        "counter",
        "Sends through the channel layer, by verb.",
        "verb",
        [("send", "sends"), ("group_send", "group_sends"), ("broadcast", "broadcasts")],
    ),
    _one(
        "chanlite_layer_send_seconds",
        "counter",
        "Time spent in the layer's send and group_send (divide by chanlite_layer_sends).",
        "layer_send_seconds",
    ),
    _one(
        "chanlite_layer_receive_wait_seconds",
        "counter",
        "How long the events this process's reader took had waited: from their send when "
        "the layer knows it (SQLite), else from their arrival in the process (divide by "
        'chanlite_events_total{outcome="received"}).',
        "layer_receive_wait_seconds",
    ),
    _one(
        "chanlite_layer_errors",
        "counter",
        "Failed layer calls (the hub retries and logs an outage once).",
        "layer_errors",
    ),
    _one(
        "chanlite_broadcast_member_writes",
        "counter",
        "Broadcast frames written straight to a member socket.",
        "broadcast_frames",
    ),
    _by(
        "chanlite_dropped",
        "counter",
        "Events dropped, by reason: a member's channel was full (group_send), they were "
        "waiting for a connection closed as a slow consumer, or they expired unread.",
        "reason",
        [
            ("channel_full", "channel_full_drops"),
            ("slow_consumer", "slow_consumer_events"),
            ("expired", "expired_drops"),
        ],
    ),
    _by(
        "chanlite_slow_consumers",
        "counter",
        "Connections closed as slow consumers, by what piled up: bytes its client left "
        "unread (server), or events waiting for its handlers.",
        "kind",
        [("bytes", "slow_consumers_server"), ("events", "slow_consumers")],
    ),
    _by(
        "chanlite_slow_consumer_waiting_bytes",
        "counter",
        "Bytes that were waiting for connections closed as slow consumers, by what piled "
        "up: unread by the client (bytes), or the waiting events encoded as the layers "
        "carry them (events).",
        "kind",
        [("bytes", "slow_consumer_bytes_server"), ("events", "slow_consumer_bytes")],
    ),
    _one(
        "chanlite_event_loop_lag_seconds",
        "gauge",
        "How late the event loop woke the last heartbeat, per worker.",
        "loop_lag_seconds",
        "liveall",
    ),
    _one(
        "chanlite_process_cpu_seconds",
        "gauge",
        "CPU time (user + system) used by each worker.",
        "cpu_seconds",
        "liveall",
    ),
    _one(
        "chanlite_process_resident_memory_bytes",
        "gauge",
        "Resident memory of each worker.",
        "rss_bytes",
        "liveall",
    ),
)


def _numbers(census: Census) -> dict[str, float]:
    return census.numbers()


def require_client() -> None:
    """Raise :class:`ImportError` with what to install when prometheus-client is missing."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc


class Metrics:
    """The ``/metrics`` endpoint of one App: an ASGI app, plus the multiprocess copy task."""

    def __init__(self, census: Census, path: str) -> None:
        if not path.startswith("/"):
            raise ValueError(f"the metrics path must start with '/', not {path!r}")
        require_client()
        self.census = census
        self.path = path
        self._multiproc: _Multiprocess | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def multiprocess(self) -> bool:
        """True when workers share their numbers through ``PROMETHEUS_MULTIPROC_DIR``."""
        return bool(os.environ.get(MULTIPROC_ENV))

    def start(self, spawn: Callable[[Any], asyncio.Task[None]]) -> None:
        """Begin copying this worker's numbers into the multiprocess files (if in use)."""
        if self.multiprocess and (self._task is None or self._task.done()):
            self._multiproc = _Multiprocess()
            self._task = spawn(self._sync_forever())

    async def stop(self) -> None:
        """Stop copying; a clean exit drops this worker's gauges at once."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._multiproc is not None:
            self._multiproc.sync(_numbers(self.census))
            from prometheus_client import multiprocess

            with contextlib.suppress(OSError):
                multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]
                    os.getpid()
                )

    async def _sync_forever(self) -> None:
        multiproc = self._multiproc
        assert multiproc is not None
        while True:
            try:
                multiproc.sync(_numbers(self.census))
            except Exception:  # a full disk must not stop the worker; say it once a minute
                logger.exception("Copying this worker's metrics failed")
                await asyncio.sleep(60)
            await asyncio.sleep(SYNC_INTERVAL)

    def exposition(self) -> tuple[bytes, str]:
        """The text a scrape gets, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        multiproc = self._multiproc
        if multiproc is not None:
            from prometheus_client import multiprocess

            multiproc.sync(_numbers(self.census))  # this worker's newest, at least
            _forget_dead_workers()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        else:
            registry.register(_Collector(self.census))
        return generate_latest(registry), CONTENT_TYPE_LATEST

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("method") not in ("GET", "HEAD"):
            await _respond(send, 405, b"Method Not Allowed\n", "text/plain", (b"allow", b"GET"))
            return
        body, content_type = self.exposition()
        await _respond(send, 200, b"" if scope["method"] == "HEAD" else body, content_type)


async def _respond(
    send: Any, status: int, body: bytes, content_type: str, *extra: tuple[bytes, bytes]
) -> None:
    headers = [(b"content-type", content_type.encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _Collector:
    """A prometheus-client collector reading one process's numbers at scrape time."""

    def __init__(self, census: Census) -> None:
        self.census = census

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        numbers = _numbers(self.census)
        for family in FAMILIES:
            labels = [name for name, _ in family.series[0].labels]
            cls = CounterMetricFamily if family.kind == "counter" else GaugeMetricFamily
            metric = cls(family.name, family.doc, labels=labels)
            for series in family.series:
                metric.add_metric([v for _, v in series.labels], numbers.get(series.number, 0))
            yield metric


class _Multiprocess:
    """This worker's prometheus-client metrics, written to the multiprocess files."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        # Not the default registry: the app's own metrics stay the app's.
        registry = CollectorRegistry(auto_describe=False)
        self.metrics: list[tuple[Family, Any]] = []
        for family in FAMILIES:
            labels = [name for name, _ in family.series[0].labels]
            if family.kind == "counter":
                metric: Any = Counter(family.name, family.doc, labels, registry=registry)
            else:
                metric = Gauge(
                    family.name,
                    family.doc,
                    labels,
                    registry=registry,
                    multiprocess_mode=family.mode,  # type: ignore[arg-type]
                )
            self.metrics.append((family, metric))
        self.sent: dict[str, float] = {}

    def sync(self, numbers: dict[str, float]) -> None:
        sent = self.sent
        for family, metric in self.metrics:
            for series in family.series:
                child = metric.labels(*[v for _, v in series.labels]) if series.labels else metric
                value = float(numbers.get(series.number, 0))
                if family.kind == "counter":
                    delta = value - sent.get(series.number, 0.0)
                    if delta > 0:
                        child.inc(delta)
                        sent[series.number] = value
                else:
                    child.set(value)


def _forget_dead_workers() -> None:
    """Drop the live gauges of workers that are gone (``kill -9`` leaves their files)."""
    from prometheus_client import multiprocess

    directory = os.environ.get(MULTIPROC_ENV, "")
    pids = set()
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        with contextlib.suppress(ValueError):
            pids.add(int(path.rsplit("_", 1)[1][:-3]))
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]
                pid, directory
            )
        except PermissionError:
            pass  # alive, another user's
