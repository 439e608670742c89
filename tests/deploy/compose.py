"""docker-compose.yml, read the way compose reads it, run as local processes.

There is no container engine in CI, so the test suite reads the compose
file itself: variables are interpolated with compose's rules (``${X:-d}``,
``${X:?message}``, ...), profiles and ``--scale`` pick the replicas, and each
replica runs as a local process with exactly the environment compose would
give it (the image's ``ENV`` lines, then the service's ``environment``),
its command after the image's entrypoint, and its healthcheck.

What a container network provides is mapped, not mocked:

- every replica gets its own loopback address (127.x.y.N), so two replicas
  listening on the same port, as in containers, do not clash; a service's
  name in a value (``nats:4222``) becomes that address, and "0.0.0.0",
  "127.0.0.1" and "localhost" in its own settings become its own address;
- volumes become directories: a named volume one directory shared by the
  replicas that mount it, a bind-mounted file a copy (addresses mapped
  likewise), the image's working directory a private directory;
- the image ``nats:*`` is the nats-server binary of the virtualenv; our
  image's entrypoint (from the Dockerfile) is the virtualenv's ``botbus``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import shlex
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from botbus._proc import die_with_parent_hook

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
BIN = Path(sys.executable).parent
HEALTH_POLL = 0.5  # seconds between two runs of a healthcheck while waiting
STOP_GRACE = 15.0  # seconds a process gets after SIGTERM

_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)"
    r"(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class ComposeError(Exception):
    """What ``docker compose`` itself would refuse, with its message."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """``text`` with compose's variable substitution applied."""

    def one(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        unset_or_empty = value is None or value == ""
        if op in (":-", "-"):
            missing = unset_or_empty if op == ":-" else value is None
            return interpolate(arg, env) if missing else str(value)
        if op in (":?", "?"):
            missing = unset_or_empty if op == ":?" else value is None
            if missing:
                raise ComposeError(f"required variable {name} is missing a value: {arg}")
            return str(value)
        if op in (":+", "+"):
            present = not unset_or_empty if op == ":+" else value is not None
            return interpolate(arg, env) if present else ""
        return value or ""

    return _VAR.sub(one, text)


def _walk(value: Any, env: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return interpolate(value, env)
    if isinstance(value, list):
        return [_walk(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _walk(v, env) for k, v in value.items() if not str(k).startswith("x-")}
    return value


def load(env: Mapping[str, str], path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file, parsed and interpolated (raises :class:`ComposeError`)."""
    raw = yaml.safe_load(path.read_text())
    return dict(_walk(raw, env))


@dataclass
class Image:
    """What the Dockerfile's final stage gives every container of our image."""

    entrypoint: list[str]
    env: dict[str, str]
    workdir: str
    user: str
    stages: int
    run_lines: list[str]


def read_dockerfile(path: Path = DOCKERFILE) -> Image:
    """The final stage's ENTRYPOINT, ENV, WORKDIR and USER, and every RUN line."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    stages = sum(1 for ln in lines if ln.upper().startswith("FROM "))
    image = Image(entrypoint=[], env={}, workdir="/", user="root", stages=stages, run_lines=[])
    for line in lines:
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            image.env, image.workdir, image.user = {}, "/", "root"
        elif word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                image.env[key] = value
        elif word == "WORKDIR":
            image.workdir = rest.strip()
        elif word == "USER":
            image.user = rest.strip()
        elif word == "ENTRYPOINT":
            image.entrypoint = list(json.loads(rest))
        elif word == "RUN":
            image.run_lines.append(rest)
    return image


def published_ports(spec: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host ip, host port or range, container port) of each ``ports:`` entry."""
    out = []
    for entry in spec.get("ports", []):
        parts = str(entry).rsplit(":", 2)
        if len(parts) == 3:
            out.append((parts[0], parts[1], parts[2]))
        elif len(parts) == 2:
            out.append(("", parts[0], parts[1]))
        else:
            out.append(("", "", parts[0]))
    return out


@dataclass
class Replica:
    """One container of a service, as a local process."""

    service: str
    index: int
    address: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    healthcheck: list[str] | None
    log_path: Path
    proc: asyncio.subprocess.Process | None = None

    @property
    def name(self) -> str:
        """``service-N``, as compose names containers."""
        return f"{self.service}-{self.index}"

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the process wrote."""
        if not self.log_path.exists():
            return "(no output)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Project:
    """Replicas of the chosen services, started in dependency order."""

    compose: dict[str, Any]
    root: Path
    profiles: tuple[str, ...] = ()
    scale: dict[str, int] = field(default_factory=dict)
    only: tuple[str, ...] = ()
    replicas: dict[str, list[Replica]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        net = f"127.{random.randint(100, 250)}.{random.randint(1, 250)}"
        image = read_dockerfile()
        services: dict[str, Any] = self.compose["services"]
        chosen = [
            name
            for name, spec in services.items()
            if (not spec.get("profiles") or set(spec["profiles"]) & set(self.profiles))
            and (not self.only or name in self.only)
        ]
        host = 10
        for name in chosen:
            self.replicas[name] = []
            for index in range(1, self.scale.get(name, 1) + 1):
                self.replicas[name].append(
                    Replica(name, index, f"{net}.{host}", [], {}, self.root, None, Path())
                )
                host += 1
        addresses = {name: reps[0].address for name, reps in self.replicas.items()}
        for name, reps in self.replicas.items():
            for replica in reps:
                self._prepare(replica, services[name], image, addresses)

    # -- mapping a container onto this machine ----------------------------------------

    def _map(self, text: str, own: str, addresses: dict[str, str], paths: dict[str, Path]) -> str:
        for other, address in addresses.items():
            text = re.sub(rf"(?<![\w.-]){re.escape(other)}(?=:\d)", address, text)
        text = re.sub(r"(?<![\d.])(0\.0\.0\.0|127\.0\.0\.1|localhost)(?![\d.])", own, text)
        for target in sorted(paths, key=len, reverse=True):
            pattern = rf"(?<![\w/.]){re.escape(target)}(?=/|$|[\s\"'])"
            text = re.sub(pattern, str(paths[target]), text)
        return text

    def _prepare(
        self, replica: Replica, spec: dict[str, Any], image: Image, addresses: dict[str, str]
    ) -> None:
        box = self.root / "containers" / replica.name
        box.mkdir(parents=True, exist_ok=True)
        replica.log_path = box / "output.log"
        paths: dict[str, Path] = {}
        ours = "build" in spec
        if ours:
            workdir = box / image.workdir.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
            paths[image.workdir] = workdir
        copies: list[tuple[Path, Path]] = []
        for volume in spec.get("volumes", []):
            source, _, rest = str(volume).partition(":")
            target = rest.split(":")[0]
            if source.startswith((".", "/")):
                host_source = (COMPOSE_FILE.parent / source).resolve()
                if host_source.is_file():
                    copy = box / target.lstrip("/")
                    copies.append((host_source, copy))
                    paths[target] = copy
                else:
                    paths[target] = host_source
            else:
                shared = self.root / "volumes" / source
                shared.mkdir(parents=True, exist_ok=True)
                paths[target] = shared
        for original, copy in copies:
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_text(self._map(original.read_text(), replica.address, addresses, {}))
        environment = spec.get("environment", {})
        if isinstance(environment, list):
            environment = dict(item.partition("=")[::2] for item in environment)
        env = {"PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        if ours:
            env.update(image.env)
        env.update({k: "" if v is None else str(v) for k, v in environment.items()})
        replica.env = {k: self._map(v, replica.address, addresses, paths) for k, v in env.items()}
        replica.env["PATH"] = env["PATH"]
        command = [str(c) for c in spec.get("command", [])]
        if ours:
            entry = [str(BIN / image.entrypoint[0]), *image.entrypoint[1:]]
            replica.cwd = paths[image.workdir]
        elif str(spec.get("image", "")).startswith("nats:"):
            entry = [str(BIN / "nats-server")]  # the official image runs nats-server "$@"
            replica.cwd = box
        else:
            raise AssertionError(f"no local stand-in for image {spec.get('image')!r}")
        replica.argv = [self._map(a, replica.address, addresses, paths) for a in entry + command]
        test = (spec.get("healthcheck") or {}).get("test")
        if test:
            if test[0] != "CMD":
                raise AssertionError(f"{replica.service}: healthcheck must use the CMD form")
            check = [self._map(str(a), replica.address, addresses, paths) for a in test[1:]]
            if check[0] == "botbus":
                check[0] = str(BIN / "botbus")
            replica.healthcheck = check

    # -- running -----------------------------------------------------------------------

    def order(self) -> list[str]:
        """Services in start order: each after what it depends on."""
        services = self.compose["services"]
        done: list[str] = []

        def visit(name: str) -> None:
            if name in done or name not in self.replicas:
                return
            deps = services[name].get("depends_on") or []
            for dep in deps if isinstance(deps, list) else list(deps):
                visit(dep)
            done.append(name)

        for name in self.replicas:
            visit(name)
        return done

    async def start(self, health_timeout: float = 90.0) -> None:
        """Start every replica; wait for the dependencies' health before dependents."""
        started: set[str] = set()
        for name in self.order():
            deps = self.compose["services"][name].get("depends_on") or []
            for dep in deps if isinstance(deps, list) else list(deps):
                if dep in self.replicas and dep in started:
                    await self.wait_healthy(dep, health_timeout)
            for replica in self.replicas[name]:
                await self._spawn(replica)
            started.add(name)
        for name in self.replicas:
            await self.wait_healthy(name, health_timeout)

    async def _spawn(self, replica: Replica) -> None:
        log = replica.log_path.open("ab")
        try:
            replica.proc = await asyncio.create_subprocess_exec(
                *replica.argv,
                env=replica.env,
                cwd=replica.cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                # A test killed by its timeout must not leave its "containers" running.
                preexec_fn=die_with_parent_hook(),
            )
        finally:
            log.close()

    async def healthy(self, replica: Replica) -> bool:
        """Run the replica's healthcheck once, as the engine would."""
        check = replica.healthcheck
        if check is None:
            return replica.proc is not None and replica.proc.returncode is None
        if check[0] == "wget":
            url = check[-1]
            try:
                async with (
                    aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http,
                    http.get(url) as resp,
                ):
                    return resp.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False
        proc = await asyncio.create_subprocess_exec(
            *check,
            env=replica.env,
            cwd=replica.cwd,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        return await proc.wait() == 0

    async def wait_healthy(self, name: str, timeout: float) -> None:
        """Wait until every replica of ``name`` passes its healthcheck."""
        for replica in self.replicas[name]:
            try:
                async with asyncio.timeout(timeout):
                    while not await self.healthy(replica):
                        assert replica.proc is not None
                        if replica.proc.returncode is not None:
                            raise AssertionError(
                                f"{replica.name} exited with code {replica.proc.returncode}:\n"
                                f"{replica.log_tail()}"
                            )
                        await asyncio.sleep(HEALTH_POLL)
            except TimeoutError:
                raise AssertionError(
                    f"{replica.name} not healthy within {timeout:.0f}s:\n{replica.log_tail()}"
                ) from None

    async def stop(self) -> dict[str, int]:
        """SIGTERM every replica (dependents first); their exit codes."""
        codes: dict[str, int] = {}
        for name in reversed(self.order()):
            for replica in self.replicas[name]:
                proc = replica.proc
                if proc is None:
                    continue
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), STOP_GRACE)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
                codes[replica.name] = proc.returncode if proc.returncode is not None else -1
        return codes
