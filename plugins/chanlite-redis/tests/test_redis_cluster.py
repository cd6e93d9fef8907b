"""The layer on a Redis Cluster: the URL, one slot per operation, shard channels, two
processes broadcasting through it, and the shared contract suites on a real 3-master
cluster (``redis-cli --cluster create``).
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from chanlite_redis import RedisLayer
from chanlite_redis.config import ClusterTarget
from chanlite_redis.scripts import Keys
from chanlite_redis.stream_scripts import StreamKeys
from redis import Redis
from redis.crc import key_slot
from redis_nodes import ClusterGroup
from test_redis_failover import Accounts, start_pair

from chanlite.layers import LayerConfigError, get_layer
from chanlite.testing import HistoryContract, LayerContract, PresenceContract

WAIT = 10.0


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterGroup]:
    """Three masters on loopback, shared by the session (tests keep apart by prefix)."""
    with tempfile.TemporaryDirectory(prefix="chanlite-cluster-") as directory:
        group = ClusterGroup(Path(directory))
        try:
            group.start()
            yield group
        finally:
            group.stop()


@pytest.fixture
async def make_cluster_layer(cluster: ClusterGroup, prefix: str) -> AsyncIterator[Any]:
    """Factory of layers on the session's cluster, closed afterwards."""
    made: list[RedisLayer] = []

    async def make(**options: Any) -> RedisLayer:
        options.setdefault("prefix", prefix)
        layer = RedisLayer(cluster.url, **options)
        made.append(layer)
        return layer

    yield make
    for layer in made:
        await layer.close()


def test_the_url_names_some_nodes() -> None:
    layer = get_layer("redis+cluster://:s%40cret@n1:7000,n2,[::1]:7002?capacity=5")
    assert isinstance(layer, RedisLayer)
    target = layer._target
    assert isinstance(target, ClusterTarget)
    assert target.nodes == [("n1", 7000), ("n2", 6379), ("::1", 7002)]
    assert target.connection["password"] == "s@cret"
    assert layer.capacity == 5
    assert "s@cret" not in repr(layer)
    with pytest.raises(LayerConfigError, match="only db 0"):
        get_layer("redis+cluster://n1:7000/3")
    with pytest.raises(LayerConfigError, match="only apply to redis\\+sentinel"):
        get_layer("redis+cluster://n1:7000?sentinel_password=x")


def test_every_operation_stays_on_one_slot() -> None:
    keys, streams = Keys("chanlite:"), StreamKeys("chanlite:")
    group, process, plain = "room.1", "abcdef123456", "worker-jobs"
    per_group = [
        keys.members(group),
        keys.group_topic(group),
        *streams.history(group),
        *streams.presence(group),
        streams.owned(group, process),
    ]
    per_process = [keys.inbox(process), keys.counts(process), keys.alive(process)]
    per_channel = [
        keys.channel(plain),
        keys.wake_topic(plain),
        keys.taken(plain, "t0k3n"),
        keys.dropped(plain, "t0k3n"),
    ]
    for together in (per_group, per_process, per_channel):
        assert len({key_slot(key.encode()) for key in together}) == 1, together
    # ... and different groups spread over the slots.
    assert len({key_slot(keys.members(f"room.{n}").encode()) for n in range(50)}) > 40


async def test_a_group_message_is_published_on_one_node_only(
    make_cluster_layer: Any, cluster: ClusterGroup
) -> None:
    sender, receiver = await make_cluster_layer(), await make_cluster_layer()
    groups = [f"spread.{n}" for n in range(12)]
    channel = await receiver.new_channel()
    for group in groups:
        await receiver.group_add(group, channel)
    before = [_commands(node.port) for node in cluster.nodes]
    for group in groups:
        await sender.group_send(group, {"type": "m", "group": group})
    heard = set()
    for _ in groups:
        _, message = await asyncio.wait_for(receiver.receive_local(), WAIT)
        heard.add(message["group"])
    assert heard == set(groups)
    after = [_commands(node.port) for node in cluster.nodes]
    spublished = [
        a.get("spublish", 0) - b.get("spublish", 0) for a, b in zip(after, before, strict=True)
    ]
    published = [
        a.get("publish", 0) - b.get("publish", 0) for a, b in zip(after, before, strict=True)
    ]
    assert sum(spublished) == len(groups)  # once per message, on its group's node
    assert sum(1 for n in spublished if n) > 1  # the groups are spread over the nodes
    assert published == [0, 0, 0]  # nothing went to every node


async def test_two_processes_broadcast_through_the_cluster(
    cluster: ClusterGroup, prefix: str
) -> None:
    a, b = peers = await start_pair(cluster.url, prefix)
    accounts = Accounts()
    try:
        for peer in peers:
            for kind in ("got", "gotd"):
                await peer.wait_for(lambda e, k=kind: e["event"] == k and e["n"] >= 30)
        await accounts.settle(a, b)
    finally:
        await accounts.finish(*peers)
    accounts.check(a, b)
    for name, other in (("a", "b"), ("b", "a")):
        summary, last = accounts.summaries[name], accounts.lasts[other]
        assert accounts.lost()[name] == (0, 0)
        for kind in ("", "_direct"):
            received = summary["received" + kind]  # all, in order
            assert received == list(range(min(received), last["last" + kind] + 1))


async def test_broadcasts_survive_a_cluster_master_killed_mid_broadcast(
    tmp_path: Path, prefix: str
) -> None:
    # Three masters with a replica each; the master of the group's slot is SIGKILLed
    # while two processes broadcast to each other through it. The cluster promotes its
    # replica; both processes keep delivering, and every message is delivered or counted.
    group = ClusterGroup(tmp_path, replicas=1)
    group.start()
    try:
        a, b = peers = await start_pair(group.url, prefix)
        accounts = Accounts()
        try:
            for peer in peers:
                for kind in ("got", "gotd"):
                    await peer.wait_for(lambda e, k=kind: e["event"] == k and e["n"] >= 50)
            master = group.node_of("{room}")
            killed_at = time.time()
            master.stop()  # SIGKILL
            firsts = [
                await peer.wait_for(lambda e: e["event"] == "got" and e["at"] > killed_at, 60)
                for peer in peers
            ]
            for peer in peers:
                for kind in ("got", "gotd"):
                    n = (await peer.wait_for(lambda e, k=kind: e["event"] == k))["n"]
                    await peer.wait_for(lambda e, k=kind, n=n: e["event"] == k and e["n"] >= n + 50)
            await accounts.settle(a, b)
        finally:
            await accounts.finish(*peers)
        assert group.node_of("{room}") is not master  # its replica took over
    finally:
        group.stop()
    accounts.check(a, b)
    print(
        "first delivery after the kill, s:",
        [round(f["now"] - killed_at, 3) for f in firsts],
        "lost (group, direct):",
        accounts.lost(),
    )


async def test_inboxes_and_groups_survive_their_slots_moving(
    cluster: ClusterGroup, prefix: str
) -> None:
    # While two processes broadcast to each other and send to each other's channel, the
    # slot of b's inbox and then the slot of the group move to another master (keys
    # migrated with MIGRATE, as resharding does). Delivery goes on, and every message is
    # delivered or counted.
    a, b = peers = await start_pair(cluster.url, prefix)
    accounts = Accounts()
    moved = []
    try:
        for peer in peers:
            for kind in ("got", "gotd"):
                await peer.wait_for(lambda e, k=kind: e["event"] == k and e["n"] >= 30)
        owner = RedisLayer.owner_of(b.channel)
        assert owner is not None
        for key in (Keys(prefix).inbox(owner), Keys(prefix).group_topic("room")):
            before = cluster.node_of(key)
            after = await asyncio.to_thread(cluster.move_slot, key)
            assert cluster.node_of(key) is after is not before
            moved.append((before.port, after.port))
            for peer in peers:
                for kind in ("got", "gotd"):
                    n = max(e["n"] for e in peer.events if e["event"] == kind)
                    await peer.wait_for(lambda e, k=kind, n=n: e["event"] == k and e["n"] >= n + 30)
        await accounts.settle(a, b)
    finally:
        await accounts.finish(*peers)
    accounts.check(a, b)
    print("moved:", moved, "lost (group, direct):", accounts.lost())


def _commands(port: int) -> dict[str, int]:
    client = Redis(port=port)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


class TestClusterContract(LayerContract):
    @pytest.fixture
    def make_layer(self, make_cluster_layer: Any) -> Any:
        return make_cluster_layer


class TestClusterStreams(HistoryContract, PresenceContract):
    @pytest.fixture
    def make_layer(self, make_cluster_layer: Any) -> Any:
        return make_cluster_layer


async def test_a_loop_change_leaves_no_unclosed_client_behind(
    make_cluster_layer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # The connections of a closed loop cannot be closed; they are dropped without redis-py
    # reporting "Unclosed RedisCluster client" (an ERROR) when they are collected.
    layer = await make_cluster_layer()

    def on_own_loop(make: Any) -> Any:
        return asyncio.run(make())

    channel = await asyncio.to_thread(on_own_loop, layer.new_channel)
    await asyncio.to_thread(on_own_loop, lambda: layer.group_add("unclosed", channel))
    await asyncio.to_thread(on_own_loop, lambda: layer.send(channel, {"type": "d"}))
    got = await asyncio.to_thread(on_own_loop, layer.receive_local)
    assert (list(got[0]), got[1]) == ([channel], {"type": "d"})
    await layer.close()
    gc.collect()
    assert not [r for r in caplog.records if "Unclosed" in r.getMessage()]
