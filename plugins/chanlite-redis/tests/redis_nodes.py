"""Real Redis processes on loopback for the tests: one server, or a Sentinel group.

:class:`RedisServer` is one ``redis-server`` that a test can kill and start again.
:class:`SentinelGroup` starts a master, one replica and three sentinels
(``redis-server --sentinel``), each a real process on a free 127.0.0.1 port, and waits
until the sentinels know the replica and each other, so a failover can happen as soon as
the master dies.
"""

from __future__ import annotations

import random
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

INSTALL_HINT = (
    "redis-server is not on PATH. The Redis layer's tests need a real Redis server: "
    "run `make system-deps` (or `apt-get install redis-server`) and try again."
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process on 127.0.0.1 that a test can stop and start again."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(INSTALL_HINT, pytrace=False)
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.tls: tuple[Path, Path] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log(self) -> Path:
        """Where the server logs (its own messages go to stdout otherwise, and are lost)."""
        return self.directory / "redis.log"

    def start(self, *extra: str, tls: tuple[Path, Path] | None = None) -> None:
        """Start (again) on the same port; with *tls* (cert, key) it speaks only TLS."""
        self.tls = tls
        self.directory.mkdir(parents=True, exist_ok=True)
        ports = ["--port", str(self.port)]
        if tls is not None:
            ports = [
                "--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", str(tls[0]), "--tls-key-file", str(tls[1]),
                "--tls-ca-cert-file", str(tls[0]), "--tls-auth-clients", "no",
            ]  # fmt: skip
        self.process = subprocess.Popen(
            [
                self.binary,
                *ports,
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
                "--loglevel", "warning",
                "--logfile", str(self.log),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                logged = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
                pytest.fail(
                    f"redis-server on port {self.port} exited at start: {err}{logged}",
                    pytrace=False,
                )
            try:
                if self._answers():
                    return
            except OSError:
                pass
            time.sleep(0.02)
        pytest.fail(f"redis-server did not answer on port {self.port}", pytrace=False)

    def _answers(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw:
            sock: socket.socket = raw
            if self.tls is not None:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                sock = context.wrap_socket(raw)
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None


SERVICE = "mymaster"
#: How long the sentinels wait before they call a silent master down (milliseconds).
DOWN_AFTER_MS = 1000


def _ask(port: int, *command: str, password: str | None = None) -> object:
    client = Redis(
        host="127.0.0.1",
        port=port,
        socket_timeout=2,
        socket_connect_timeout=2,
        password=password,
        retry=Retry(NoBackoff(), 0),  # a refused password is an answer, not worth a retry
    )
    try:
        return client.execute_command(*command)
    finally:
        client.close()


class Sentinel:
    """One ``redis-server --sentinel`` process watching the group's master."""

    def __init__(
        self,
        directory: Path,
        master_port: int,
        replica_port: int,
        ids: list[tuple[str, int]],
        password: str | None = None,
        sentinel_password: str | None = None,
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(INSTALL_HINT, pytrace=False)
        self.myid, self.port = ids[0]
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "sentinel.conf"
        # Told about the replica and the other sentinels up front, the sentinels are ready
        # at once instead of after their discovery rounds (seconds).
        known = "".join(
            f"sentinel known-sentinel {SERVICE} 127.0.0.1 {port} {myid}\n" for myid, port in ids[1:]
        )
        # Sentinel rewrites its configuration file as it learns; it must be writable.
        self.config.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {directory}\n"
            f"sentinel myid {self.myid}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
            f"sentinel known-replica {SERVICE} 127.0.0.1 {replica_port}\n"
            + known
            # The servers' password, then the sentinels' own (asked of clients and of each
            # other).
            + (f"sentinel auth-pass {SERVICE} {password}\n" if password else "")
            + (
                f"requirepass {sentinel_password}\nsentinel sentinel-pass {sentinel_password}\n"
                if sentinel_password
                else ""
            )
        )
        self.process = subprocess.Popen(
            [binary, str(self.config), "--sentinel", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class SentinelGroup:
    """A master, a replica and three sentinels on loopback; with *password* the servers
    require it, with *sentinel_password* the sentinels require that one."""

    def __init__(
        self,
        directory: Path,
        password: str | None = None,
        sentinel_password: str | None = None,
    ) -> None:
        self.directory = directory
        self.password = password
        self.sentinel_password = sentinel_password
        self.master = RedisServer(directory / "a")
        self.replica = RedisServer(directory / "b")
        self.sentinels: list[Sentinel] = []

    def start(self) -> None:
        for server in (self.master, self.replica):
            server.directory.mkdir(parents=True, exist_ok=True)
        auth = (
            ["--requirepass", self.password, "--masterauth", self.password] if self.password else []
        )
        self.master.start("--repl-diskless-sync-delay", "0", *auth)
        self.replica.start(
            "--replicaof", "127.0.0.1", str(self.master.port), "--repl-diskless-sync-delay", "0",
            *auth,
        )  # fmt: skip
        self._wait(self._replica_in_sync, "the replica to sync with the master")
        ids = [(secrets.token_hex(20), free_port()) for _ in range(3)]
        for n in range(3):
            mine = [ids[n], *ids[:n], *ids[n + 1 :]]
            self.sentinels.append(
                Sentinel(
                    self.directory / f"s{n}",
                    self.master.port,
                    self.replica.port,
                    mine,
                    self.password,
                    self.sentinel_password,
                )
            )
        self._wait(self._sentinels_ready, "the sentinels to know the replica and each other")

    @property
    def url(self) -> str:
        """The layer URL of the group's master (with the passwords, if any)."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        auth = f":{self.password}@" if self.password else ""
        query = f"?sentinel_password={self.sentinel_password}" if self.sentinel_password else ""
        return f"redis+sentinel://{auth}{hosts}/{SERVICE}/0{query}"

    def _sentinel(self, port: int, *command: str) -> object:
        return _ask(port, *command, password=self.sentinel_password)

    def _server(self, port: int, *command: str) -> object:
        return _ask(port, *command, password=self.password)

    def master_port(self) -> int:
        """The port of the master the sentinels name now."""
        reply = self._sentinel(
            self.sentinels[0].port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE
        )
        assert isinstance(reply, list)
        return int(reply[1])

    def cut_replication(self) -> None:
        """Stop the replica hearing the master's writes from now on (they are acknowledged
        all the same): it drops its link and cannot log in again (a wrong password)."""
        replica = self.replica if self.master_port() == self.master.port else self.master
        self._server(replica.port, "CONFIG", "SET", "masterauth", "not-the-password")
        self._server(replica.port, "CLIENT", "KILL", "TYPE", "master")

    def kill_master(self) -> RedisServer:
        """SIGKILL the current master; returns the server that took over."""
        port = self.master_port()
        old, new = (
            (self.master, self.replica) if port == self.master.port else (self.replica, self.master)
        )
        assert old.process is not None
        old.process.send_signal(signal.SIGKILL)
        old.process.wait(10)
        return new

    def wait_failover(self, new: RedisServer, timeout: float = 30) -> None:
        """Wait until every sentinel names *new* as the master."""

        def promoted() -> bool:
            return all(
                int(self._sentinel(s.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)[1])  # type: ignore[index]
                == new.port
                for s in self.sentinels
            )

        self._wait(promoted, "the failover", timeout)

    def _replica_in_sync(self) -> bool:
        info = Redis(port=self.replica.port, socket_timeout=2, password=self.password).info(
            "replication"
        )
        return bool(info.get("master_link_status") == "up")

    def _sentinels_ready(self) -> bool:
        for sentinel in self.sentinels:
            replicas = self._sentinel(sentinel.port, "SENTINEL", "REPLICAS", SERVICE)
            others = self._sentinel(sentinel.port, "SENTINEL", "SENTINELS", SERVICE)
            if not isinstance(replicas, list) or not isinstance(others, list):
                return False
            if len(replicas) != 1 or len(others) != 2:
                return False
        return True

    def _wait(self, ready: object, what: str, timeout: float = 30) -> None:
        assert callable(ready)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if ready():
                    return
            except (OSError, ConnectionError, TypeError, ValueError, IndexError):
                pass
            except Exception as exc:  # redis.exceptions while a node starts
                if "Connection" not in type(exc).__name__ and "Busy" not in str(exc):
                    raise
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}", pytrace=False)
            time.sleep(0.05)

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        self.replica.stop()
        self.master.stop()


def port_open(port: int) -> bool:
    """True if something accepts connections on 127.0.0.1:*port*."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def require_redis_7() -> None:
    """Fail loudly unless redis-server is 7 or later (shard channels, SPUBLISH)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    version = out.split("v=", 1)[1].split()[0] if "v=" in out else "0"
    if int(version.split(".")[0]) < 7:
        pytest.fail(
            f"redis-server {version} is too old for Redis Cluster's shard channels "
            "(SPUBLISH/SSUBSCRIBE need 7.0): install Redis 7 or later "
            "(e.g. from packages.redis.io) and try again.",
            pytrace=False,
        )


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free and exists too.

    Both below the kernel's ephemeral range (32768-60999 on Linux): the nodes start one
    after another, and a port in that range may meanwhile become the local port of an
    outgoing connection (a readiness check of the node started before it), which makes
    the node exit at start with "Address already in use".
    """
    for _ in range(1000):
        port = random.randint(10000, 22000)
        try:
            with socket.socket() as one, socket.socket() as two:
                one.bind(("127.0.0.1", port))
                two.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise AssertionError("no free port pair for a cluster node")


class ClusterGroup:
    """A Redis Cluster of *masters* masters (and *replicas* replicas each) on loopback,
    made with ``redis-cli --cluster create``."""

    def __init__(self, directory: Path, masters: int = 3, replicas: int = 0) -> None:
        require_redis_7()
        self.directory = directory
        self.replicas = replicas
        self.nodes = [RedisServer(directory / f"n{n}") for n in range(masters * (1 + replicas))]
        for node in self.nodes:
            node.port = _cluster_port()

    @property
    def url(self) -> str:
        """The layer URL: every node's address (any one would do)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.directory.mkdir(parents=True, exist_ok=True)
            node.start(
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(node.directory / "nodes.conf"),
                "--cluster-node-timeout", "1000",
                "--repl-diskless-sync-delay", "0",
            )  # fmt: skip
        cli = shutil.which("redis-cli")
        if cli is None:
            pytest.fail(INSTALL_HINT.replace("redis-server", "redis-cli"), pytrace=False)
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        done = subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", str(self.replicas),
             "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.fail(f"redis-cli --cluster create failed: {done.stdout}{done.stderr}")
        deadline = time.monotonic() + 30
        while not all(self._ready(n.port) for n in self.nodes):
            if time.monotonic() > deadline:
                pytest.fail("the cluster did not become ready", pytrace=False)
            time.sleep(0.05)

    def _ready(self, port: int) -> bool:
        try:
            info = _ask(port, "CLUSTER", "INFO")
        except Exception:
            return False
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in text

    def node_of(self, key: str) -> RedisServer:
        """The master that serves *key*'s slot now."""
        alive = [n for n in self.nodes if n.process is not None]
        slot = _ask(alive[0].port, "CLUSTER", "KEYSLOT", key)
        for node in alive:
            shards = _ask(node.port, "CLUSTER", "SLOTS")
            assert isinstance(shards, list)
            for start, end, master, *_ in shards:
                if int(start) <= int(slot) <= int(end):  # type: ignore[call-overload]
                    port = int(master[1])
                    return next(n for n in self.nodes if n.port == port)
        raise AssertionError(f"no node serves slot {slot}")

    def move_slot(self, key: str) -> RedisServer:
        """Migrate the slot of *key*, keys and all, to another master (the steps
        ``redis-cli --cluster reshard`` takes for each slot); returns that master."""
        source = self.node_of(key)
        target = next(n for n in self._masters() if n is not source)
        slot = int(_ask(source.port, "CLUSTER", "KEYSLOT", key))  # type: ignore[call-overload]
        source_id, target_id = (_text(_ask(n.port, "CLUSTER", "MYID")) for n in (source, target))
        _ask(target.port, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id)
        _ask(source.port, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id)
        while True:
            keys = _ask(source.port, "CLUSTER", "GETKEYSINSLOT", str(slot), "100")
            assert isinstance(keys, list)
            if not keys:
                break
            _ask(source.port, "MIGRATE", "127.0.0.1", str(target.port), "", "0", "5000",
                 "KEYS", *keys)  # fmt: skip
        # The new owner first, then the old one, then the rest (as redis-cli does).
        for node in (target, source, *(n for n in self._masters() if n not in (source, target))):
            _ask(node.port, "CLUSTER", "SETSLOT", str(slot), "NODE", target_id)
        return target

    def _masters(self) -> list[RedisServer]:
        masters = []
        for node in self.nodes:
            if node.process is None:
                continue
            role = _ask(node.port, "ROLE")
            if isinstance(role, list) and role[0] == b"master":
                masters.append(node)
        return masters

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
