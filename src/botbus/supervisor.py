"""``botbus up``: the whole system as supervised processes.

Starts, in order: the embedded nats-server (unless ``NATS_URL`` is set), the
sandbox (in this process, unless ``TELEGRAM_BOT_TOKEN`` is set), the gateway
and every installed service (entry-point group ``botbus.services``) as child
processes. Each child gets
only its own NATS identity, a ``.creds`` file issued here from the bus's
authority (:mod:`botbus.auth`) with the grants the service declares, in its
environment; no child reads the authority or a ``.env`` file (this process
passes on its ``.env`` minus the secrets), so services never see the bot
token or another identity. A child that exits is restarted with exponential backoff and
reported, unless its exit code says a restart cannot help (a bad setting, a
refused login, a broker too old: :data:`botbus.exits.PERMANENT`); if that
child is the gateway, everything stops. Ctrl-C or SIGTERM stops the children
(SIGTERM, then SIGKILL after a grace period), then the sandbox and the broker.

One ``botbus up`` per data directory: a lock file (``<data dir>/up.lock``)
keeps a second one from starting a second nats-server on the same store.

The broker and sandbox addresses are written to ``<data dir>/up.json`` so
``botbus status`` and ``botbus chat`` find them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click
from dotenv import dotenv_values

from botbus import redact
from botbus._proc import die_with_parent_hook
from botbus.auth import (
    AUTHORITY_FILE,
    Authority,
    Grants,
    authority_dir,
    check_service_name,
    credentials_for,
)
from botbus.connect import UP_STATE_FILE
from botbus.errors import BotbusError, ConfigError
from botbus.exits import EXIT_CONFIG, PERMANENT
from botbus.natsserver import NatsCluster, NatsServer, free_ports
from botbus.service import declared_grants, installed_services
from botbus.settings import ENV_FILE_VAR, Settings, env_file, load_settings

log = logging.getLogger(__name__)

DEFAULT_NATS_PORT = 4222
DEFAULT_SANDBOX_PORT = 8081
DEV_BOT_USERNAME = "botbus_dev_bot"
RESTART_BACKOFF_START = 1.0  # seconds before restarting a crashed child
RESTART_BACKOFF_MAX = 30.0  # seconds
HEALTHY_AFTER = 60.0  # seconds of running that reset a child's backoff
STOP_GRACE = 10.0  # seconds a child gets to drain after SIGTERM
CHAT_HINT_AFTER = 8.0  # seconds after start-up to repeat how to chat with the sandbox bot
STATE_FILE = UP_STATE_FILE
LOCK_FILE = "up.lock"
# Environment a child may get that must never be written to up.json.
SECRET_ENV = ("TELEGRAM_BOT_TOKEN", "BOTBUS_WEBHOOK_SECRET")
# What no child inherits from this process's environment or .env: the secrets, and
# this process's own identity (each child gets its own).
_NOT_INHERITED = (*SECRET_ENV, "BOTBUS_NATS_CREDS")


class AlreadyRunning(ConfigError):
    """Another ``botbus up`` holds this data directory."""


def discover_services() -> list[str]:
    """Names of the installed services (entry-point group ``botbus.services``).

    An entry point whose name cannot be a service's (``my_svc``, ``admin``) is
    left out with one line saying why: one bad package never stops the rest.
    """
    names = []
    for name in installed_services():
        try:
            names.append(check_service_name(name))
        except ConfigError as exc:
            say(f"[up] skipping the installed entry point {name!r}: {exc}")
    return names


def state_path(settings: Settings) -> Path:
    """Where ``botbus up`` records the addresses it started."""
    return settings.data_dir / STATE_FILE


@contextlib.contextmanager
def data_dir_lock(settings: Settings) -> Iterator[Path]:
    """Hold ``<data dir>/up.lock`` for as long as this ``botbus up`` runs.

    An flock, so it is released by the kernel even if we are SIGKILLed.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / LOCK_FILE
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise AlreadyRunning(
                f"another botbus up (pid {holder}) is running on {settings.data_dir.resolve()}: "
                "stop it first, or give this one its own BOTBUS_DATA_DIR"
            ) from exc
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield path
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Child:
    """One supervised process and its restart bookkeeping."""

    name: str
    argv: list[str]
    env: dict[str, str]
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    backoff: float = RESTART_BACKOFF_START
    started_at: float = 0.0
    pumps: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        """Spawn the process, prefixing its output lines with its name."""
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
            preexec_fn=die_with_parent_hook(),
        )
        self.started_at = time.monotonic()
        assert self.proc.stdout is not None
        self.pumps = [asyncio.create_task(_pump(self.name, self.proc.stdout))]

    async def stop(self) -> None:
        """SIGTERM, wait for the drain, SIGKILL if it takes too long."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE)
        except TimeoutError:
            say(f"[up] {self.name} did not stop in {STOP_GRACE:.0f}s; killing it")
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        for pump in self.pumps:
            with contextlib.suppress(asyncio.CancelledError):
                await pump


def say(text: str) -> None:
    """Print a supervisor line; a closed terminal or pipe must not stop supervision.

    When our stdout goes away (``botbus up | tee`` and Ctrl-C kills tee
    first), there is nobody left to tell; what matters then is that the
    children are still stopped cleanly, so the write error is dropped.
    """
    with contextlib.suppress(OSError):
        click.echo(text)


async def _pump(name: str, stream: asyncio.StreamReader) -> None:
    width = 9
    while line := await stream.readline():
        # Children mask their own secrets; this is the second net for anything else.
        say(redact.redact(f"{name:<{width}}| {line.decode(errors='replace').rstrip()}"))


def mqtt_line(settings: Settings, port: int) -> str:
    """How an MQTT publisher connects to the embedded broker (nats.conf's mqtt block).

    A device logs in with a publisher identity's JWT as password; the line
    says how to issue one, never shows one.
    """
    return (
        f"[up] MQTT for publishers: 127.0.0.1:{port}; log in with the JWT of "
        "`botbus creds publisher SERVICE` as password (docs/alerts.md)"
    )


def _declared_grants(name: str) -> Grants:
    """What installed service ``name`` declares; none if it cannot even be imported
    (the child then starts, fails to import, and says why itself)."""
    try:
        return declared_grants(name)
    except BotbusError:  # load_service turns any failure of the import into one
        return Grants()


def component_creds(settings: Settings, component: str) -> Path | None:
    """The ``.creds`` file ``botbus up`` gives one child, issued from the authority.

    A service gets its own name and the grants it declares; None when the bus
    has no authority (an external broker without authentication).
    """
    if component == "gateway":
        return credentials_for(settings, component)
    directory = authority_dir(settings)
    if not (directory / AUTHORITY_FILE).exists():
        return None
    # Always a service identity: a service is never issued the admin's or the gateway's.
    check_service_name(component)
    return Authority.load(directory).ensure_creds(component, _declared_grants(component))


def _dotenv() -> dict[str, str]:
    """The settings this process read from its ``.env`` file, minus the secrets."""
    path = env_file()
    if path is None or not path.is_file():
        return {}
    return {
        key: value
        for key, value in dotenv_values(path).items()
        if value is not None and key not in _NOT_INHERITED
    }


def child_env(
    settings: Settings, component: str, nats_url: str, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of one child: its own NATS identity, no other secret.

    Every child, services included, gets a ``.creds`` file issued here
    (:func:`component_creds`), so no child needs the authority. Children read
    no ``.env``: its settings (not its secrets) are passed on in the environment.
    """
    env = {**_dotenv(), **os.environ}
    for secret in _NOT_INHERITED:
        env.pop(secret, None)
    if (creds := component_creds(settings, component)) is not None:
        env["BOTBUS_NATS_CREDS"] = str(creds.resolve())
    env.update(
        NATS_URL=nats_url,
        BOTBUS_DATA_DIR=str(settings.data_dir.resolve()),
        PYTHONUNBUFFERED="1",
    )
    env[ENV_FILE_VAR] = ""
    env.update(extra or {})
    return env


def _botbus_command() -> str:
    """The full path of the ``botbus`` script of this installation (for copy and paste)."""
    script = Path(sys.executable).parent / "botbus"
    return str(script) if script.exists() else "botbus"


def _say_where_it_runs(settings: Settings) -> None:
    """Point at the sandbox of the ``botbus up`` already running on this data directory."""
    from botbus.sandbox import running_url
    from botbus.sandbox._persist import state_dir

    base_url = running_url(state_dir(settings.data_dir))
    if base_url is not None:
        say(f"[up] use that one: web chat {base_url}/ , terminal chat {_botbus_command()} chat")


class Supervisor:
    """Runs the system until told to stop."""

    def __init__(
        self,
        settings: Settings,
        services: list[str],
        sandbox_port: int,
        cluster: int = 1,
        *,
        ephemeral: bool = False,
    ) -> None:
        self.settings = settings
        self.services = services
        self.sandbox_port = sandbox_port
        self.cluster = cluster
        self.ephemeral = ephemeral
        self.children: list[Child] = []
        self._stop = asyncio.Event()
        self._hints: list[str] = []  # how to chat with the sandbox bot, said again later
        self.failed: Child | None = None  # the gateway, if it exited for good

    async def run(self) -> None:
        """Start everything, supervise, and stop everything on a signal."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        async with contextlib.AsyncExitStack() as stack:
            nats_url = await self._broker(stack)
            gateway_extra = await self._telegram(stack)
            state = {
                "nats_url": nats_url,
                **{k.lower(): v for k, v in gateway_extra.items() if k not in SECRET_ENV},
            }
            self._write_state(state)
            stack.callback(lambda: state_path(self.settings).unlink(missing_ok=True))
            gateway_env = child_env(self.settings, "gateway", nats_url, gateway_extra)
            self.children.append(
                Child("gateway", [sys.executable, "-m", "botbus.gateway"], gateway_env)
            )
            for name in self.services:
                env = child_env(self.settings, name, nats_url)
                argv = [sys.executable, "-m", "botbus.service", name]
                self.children.append(Child(name, argv, env))
            for child in self.children:
                await child.start()
            say(f"[up] running: {', '.join(c.name for c in self.children)} (Ctrl-C stops)")
            reminder = asyncio.create_task(self._remind_how_to_chat())
            try:
                await self._supervise()
            finally:
                reminder.cancel()
                say("[up] stopping...")
                # The gateway first, so nothing new comes in while services drain.
                for child in self.children:
                    await child.stop()
                say("[up] stopped")

    async def _broker(self, stack: contextlib.AsyncExitStack) -> str:
        if self.settings.nats_url:
            say(f"[up] using NATS at {self.settings.nats_url}")
            return self.settings.nats_url
        if self.cluster > 1:
            return await self._cluster(stack)
        port = DEFAULT_NATS_PORT if _port_free(DEFAULT_NATS_PORT) else -1
        server = NatsServer(self.settings.data_dir / "nats", self.settings, port=port)
        await stack.enter_async_context(server)
        say(f"[up] embedded nats-server at {server.url} (data in {server.data_dir})")
        if server.mqtt_port is not None:
            say(mqtt_line(self.settings, server.mqtt_port))
        return server.url

    async def _cluster(self, stack: contextlib.AsyncExitStack) -> str:
        wanted = [DEFAULT_NATS_PORT + i for i in range(self.cluster)]
        ports = wanted if all(_port_free(p) for p in wanted) else free_ports(self.cluster)
        cluster = NatsCluster(
            self.settings.data_dir / "nats-cluster",
            self.settings,
            size=self.cluster,
            client_ports=ports,
        )
        await stack.enter_async_context(cluster)
        say(
            f"[up] JetStream cluster of {self.cluster} nats-servers at {cluster.url} "
            f"(data in {self.settings.data_dir / 'nats-cluster'})"
        )
        return cluster.url

    async def _telegram(self, stack: contextlib.AsyncExitStack) -> dict[str, str]:
        extra = await self._bot(stack)
        # child_env keeps secrets from every child; the gateway needs this one.
        if self.settings.webhook_secret is not None:
            extra["BOTBUS_WEBHOOK_SECRET"] = self.settings.webhook_secret.get_secret_value()
        return extra

    async def _bot(self, stack: contextlib.AsyncExitStack) -> dict[str, str]:
        if self.settings.telegram_bot_token is not None:
            say("[up] using the Telegram bot from TELEGRAM_BOT_TOKEN")
            extra = {"TELEGRAM_BOT_TOKEN": self.settings.telegram_bot_token.get_secret_value()}
            if self.settings.telegram_api_url:
                extra["TELEGRAM_API_URL"] = self.settings.telegram_api_url
            return extra
        from botbus.sandbox import SandboxBusy, SandboxServer
        from botbus.sandbox._persist import state_dir
        from botbus.sandbox.cli import busy_message, start_on

        data = None if self.ephemeral else state_dir(self.settings.data_dir)
        sandbox = SandboxServer(data_dir=data)
        try:
            base_url = await start_on(
                sandbox,
                "127.0.0.1",
                self.sandbox_port,
                default_port=self.sandbox_port == DEFAULT_SANDBOX_PORT,
            )
        except SandboxBusy as exc:
            raise BotbusError(busy_message(exc)) from exc
        except OSError as exc:
            raise BotbusError(
                f"cannot listen on 127.0.0.1:{self.sandbox_port}: {exc.strerror or exc}; "
                "try another --sandbox-port"
            ) from exc
        stack.push_async_callback(sandbox.stop)
        bot = sandbox.find_bot(DEV_BOT_USERNAME) or sandbox.add_bot(username=DEV_BOT_USERNAME)
        redact.register(bot.token)
        kept = f"state kept in {data}" if data is not None else "nothing kept (--ephemeral)"
        say(f"[up] no TELEGRAM_BOT_TOKEN: local sandbox at {base_url} (@{bot.username}; {kept})")
        self._hints = [
            f"[up] web chat:      {base_url}/",
            f"[up] terminal chat: {_botbus_command()} chat   (from {Path.cwd()})",
        ]
        for hint in self._hints:
            say(hint)
        return {"TELEGRAM_BOT_TOKEN": bot.token, "TELEGRAM_API_URL": sandbox.api_url}

    async def _remind_how_to_chat(self) -> None:
        """Say again how to chat once the children's start-up logs have scrolled past."""
        if not self._hints:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), CHAT_HINT_AFTER)
            return  # stopping: no reminder
        for hint in self._hints:
            say(hint)

    def _write_state(self, state: dict[str, str]) -> None:
        path = state_path(self.settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(state, indent=2))

    async def _supervise(self) -> None:
        while not self._stop.is_set():
            waits = {
                asyncio.create_task(c.proc.wait()): c for c in self.children if c.proc is not None
            }
            stop = asyncio.create_task(self._stop.wait())
            done, pending = await asyncio.wait({*waits, stop}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            if self._stop.is_set():
                return
            for task in done:
                child = waits.get(task)
                if child is None:
                    continue
                code = task.result()
                if code in PERMANENT:
                    self._give_up(child, code)
                    if child.name == "gateway":
                        self.failed = child
                        return
                    continue
                await self._restart(child, code)

    def _give_up(self, child: Child, code: int) -> None:
        say(
            f"[up] {child.name} exited with code {code}: a restart cannot fix that "
            "(see its last line above); not restarting it"
        )
        child.proc = None

    async def _restart(self, child: Child, code: int) -> None:
        if time.monotonic() - child.started_at > HEALTHY_AFTER:
            child.backoff = RESTART_BACKOFF_START
        child.restarts += 1
        say(
            f"[up] {child.name} exited with code {code}; restart #{child.restarts} "
            f"in {child.backoff:.0f}s"
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), child.backoff)
        if self._stop.is_set():
            return
        child.backoff = min(child.backoff * 2, RESTART_BACKOFF_MAX)
        await child.start()


@click.command()
@click.option(
    "--services",
    "names",
    default="",
    help="Comma-separated services to run (default: every installed service).",
)
@click.option(
    "--sandbox-port",
    default=DEFAULT_SANDBOX_PORT,
    show_default=True,
    help="Port of the local sandbox (used when TELEGRAM_BOT_TOKEN is not set).",
)
@click.option(
    "--cluster",
    default=1,
    show_default=True,
    type=click.IntRange(1, 5),
    help="Run the embedded NATS as a JetStream cluster of this many local nodes (e.g. 3).",
)
@click.option(
    "--ephemeral",
    is_flag=True,
    help="The sandbox keeps nothing in BOTBUS_DATA_DIR (its chats are gone at the next start).",
)
def up(names: str, sandbox_port: int, cluster: int, ephemeral: bool) -> None:
    """Start NATS, the sandbox (without a token), the gateway and the services."""
    try:
        settings = load_settings()
    except BotbusError as exc:
        raise click.ClickException(str(exc)) from exc
    logging.basicConfig(level=settings.log_level, format="[up] %(levelname)s %(name)s: %(message)s")
    available = discover_services()
    chosen = [n.strip() for n in names.split(",") if n.strip()] or available
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        raise click.ClickException(
            f"unknown service(s) {', '.join(unknown)}; available: {', '.join(available)}"
        )
    redact.install(settings)
    try:
        with data_dir_lock(settings):
            supervisor = Supervisor(settings, chosen, sandbox_port, cluster, ephemeral=ephemeral)
            asyncio.run(supervisor.run())
    except AlreadyRunning as exc:
        say(f"[up] cannot run: {exc}")
        _say_where_it_runs(settings)
        sys.exit(EXIT_CONFIG)
    except BotbusError as exc:
        say(f"[up] cannot run: {exc}")
        sys.exit(EXIT_CONFIG if isinstance(exc, ConfigError) else 1)
    if supervisor.failed is not None:
        sys.exit(EXIT_CONFIG)
