"""docker-compose.yml and the Dockerfile hold what a deployment needs.

The fast tests read the files as compose and docker would; the slow ones
run every compose service as a local process (see ``compose.py``) with the
environment compose gives it, wait for each healthcheck, and talk to the
bot: in sandbox mode (the ``sandbox`` profile) and with a token (a sandbox
on this machine standing in for Telegram).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import aiomqtt
import pytest

from botbus.auth import Credentials
from botbus.connect import MIN_NATS_SERVER
from botbus.creds import bootstrap
from botbus.sandbox import SandboxClient, SandboxServer
from botbus.settings import Settings
from tests.support.waiting import eventually

from . import compose

SANDBOX_TOKEN = "7000000001:DEVONLY-sandbox-token"
LONG_RUNNING = ("nats", "sandbox", "gateway", "echo", "search", "alerts", "games", "sentiment")
COMPONENTS = ("echo", "search", "alerts", "games", "sentiment")
AUTH_DIR = Path("/nonexistent/botbus-auth")  # the files are read only when processes run


def secrets_env(auth_dir: Path = AUTH_DIR) -> dict[str, str]:
    """A .env a user would write: where `botbus creds bootstrap` put the identities."""
    return {"BOTBUS_AUTH_DIR": str(auth_dir)}


def issued(directory: Path) -> dict[str, str]:
    """Run what README says once (`botbus creds bootstrap DIR --publisher alerts`)."""
    bootstrap(directory, COMPONENTS, publishers=("alerts",))
    return secrets_env(directory)


def sandbox_env() -> dict[str, str]:
    """The variables README gives for the sandbox profile."""
    return {
        **secrets_env(),
        "TELEGRAM_BOT_TOKEN": SANDBOX_TOKEN,
        "TELEGRAM_API_URL": "http://sandbox:8081/bot",
    }


# -- the files, as compose and docker read them ---------------------------------------


def test_every_secret_is_required_and_named_when_missing() -> None:
    for missing in ["BOTBUS_AUTH_DIR", "TELEGRAM_BOT_TOKEN"]:
        env = sandbox_env()
        env[missing] = ""  # empty counts as missing, as `${X:?}` says
        with pytest.raises(compose.ComposeError, match=missing):
            compose.load(env)


def test_a_live_token_never_defaults_to_the_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**secrets_env(), "TELEGRAM_BOT_TOKEN": "123456:live-token-of-the-user"}
    gateway = compose.load(env)["services"]["gateway"]["environment"]
    assert "sandbox" not in str(gateway.get("TELEGRAM_API_URL", ""))
    # What the gateway makes of that environment: Telegram's API, long polling.
    for key, value in gateway.items():
        monkeypatch.setenv(key, str(value))
    settings = Settings(_env_file=None)
    assert settings.telegram_api_url is None
    assert settings.webhook_url is None
    assert settings.webhook_secret is None


def test_the_nats_image_has_message_schedules() -> None:
    image = compose.load(sandbox_env())["services"]["nats"]["image"]
    match = re.match(r"nats:(\d+)\.(\d+)", image)
    assert match, f"pin a nats version in docker-compose.yml, not {image!r}"
    assert (int(match[1]), int(match[2])) >= MIN_NATS_SERVER


def test_ports_are_loopback_by_default_and_scale() -> None:
    services = compose.load(sandbox_env())["services"]
    for name, spec in services.items():
        for host_ip, host_port, _container in compose.published_ports(spec):
            assert host_ip == "127.0.0.1", f"{name} publishes {host_port} on {host_ip or 'all'}"
    # alerts is the service people scale while publishing its HTTP port: a range.
    (_, alerts_port, _) = compose.published_ports(services["alerts"])[0]
    low, _, high = alerts_port.partition("-")
    assert high and int(high) - int(low) >= 1, "a fixed host port breaks --scale alerts=2"
    assert ("nats", "1883") in {
        (n, p) for n, s in services.items() for _, p, _ in compose.published_ports(s)
    }, "MQTT devices expect the standard port 1883"


def test_bind_address_is_one_setting() -> None:
    services = compose.load({**sandbox_env(), "BOTBUS_BIND": "0.0.0.0"})["services"]
    assert {ip for s in services.values() for ip, _, _ in compose.published_ports(s)} == {"0.0.0.0"}


def test_every_long_running_service_has_a_healthcheck() -> None:
    services = compose.load(sandbox_env())["services"]
    for name in LONG_RUNNING:
        test = (services[name].get("healthcheck") or {}).get("test")
        assert test and test[0] == "CMD", f"{name} has no healthcheck"


def test_the_image_is_built_from_a_wheel_and_runs_unprivileged() -> None:
    image = compose.read_dockerfile()
    assert image.stages >= 2, "build the wheel in its own stage"
    assert image.user not in ("root", "0", ""), "the final stage must switch to a plain USER"
    runs = " ".join(image.run_lines)
    assert "pip wheel" in runs
    assert not re.search(r"pip install[^&]*\s-e\s", runs), "no editable install in the image"
    assert image.entrypoint == ["botbus"]


# -- the services, started as compose would start them -------------------------------


@contextlib.asynccontextmanager
async def run(project: compose.Project) -> AsyncIterator[compose.Project]:
    """The project started; stopped (and checked to stop cleanly) on the way out."""
    try:
        await project.start()
        yield project
    except BaseException:
        await project.stop()  # the failure that got us here is the one to report
        raise
    codes = await project.stop()
    unclean = {name: code for name, code in codes.items() if code != 0}
    tails = {r.name: r.log_tail(10) for reps in project.replicas.values() for r in reps}
    assert not unclean, f"processes did not stop cleanly: {unclean}\n{tails}"


def test_each_component_mounts_only_its_own_identity() -> None:
    services = compose.load(sandbox_env())["services"]
    for name in ("gateway", *COMPONENTS):
        spec = services[name]
        mounts = [str(v) for v in spec.get("volumes", []) if str(AUTH_DIR) in str(v)]
        assert mounts == [f"{AUTH_DIR}/{name}.creds:/run/botbus/nats.creds:ro"], name
        assert spec["environment"]["BOTBUS_NATS_CREDS"] == "/run/botbus/nats.creds"
    nats_mounts = " ".join(str(v) for v in services["nats"]["volumes"])
    assert f"{AUTH_DIR}/auth.conf" in nats_mounts and ".creds" not in nats_mounts


@pytest.fixture
async def sandbox_project(tmp_path: Path) -> AsyncIterator[compose.Project]:
    env = {**sandbox_env(), **issued(tmp_path / "auth")}
    project = compose.Project(
        compose.load(env), tmp_path, profiles=("sandbox",), scale={"alerts": 2}
    )
    async with run(project) as running:
        yield running


def address(project: compose.Project, service: str, index: int = 0) -> str:
    return project.replicas[service][index].address


async def ask(user: SandboxClient, bot_id: int, text: str, expect: str) -> None:
    """Once the bot's menu offers the command, send ``text``; wait for ``expect``.

    Until the gateway has discovered the service, the command is unknown to it
    (and so answered as such): the menu, set from discovery, says when it is not.
    """
    command = text.split()[0].lstrip("/")

    async def offered() -> bool:
        return any(c["command"] == command for c in await user.commands(bot_id))

    await eventually(offered, timeout=60, what=f"/{command} in the bot's menu")
    sent = await user.send_text(bot_id, text)
    after = 0
    seen: list[str] = []
    async with asyncio.timeout(60):
        while not any(expect in t for t in seen):
            events = await user.wait_for(
                bot_id, sent["chat_id"], kind="message", after=after, timeout=60
            )
            after = events[-1]["seq"]
            seen.extend(str((e.get("message") or {}).get("text")) for e in events)


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_every_service_starts_and_answers_in_sandbox_mode(
    sandbox_project: compose.Project,
) -> None:
    project = sandbox_project
    base = f"http://{address(project, 'sandbox')}:8081"
    user = SandboxClient(base)
    try:
        [bot] = await user.bots()
        await ask(user, bot.id, "/echo hello from compose", "hello from compose")
    finally:
        await user.close()
    # Both alerts replicas serve their HTTP endpoint on the same container port.
    async with aiohttp.ClientSession() as http:
        for index in range(2):
            url = f"http://{address(project, 'alerts', index)}:8470/healthz"
            async with http.get(url) as resp:
                assert resp.status == 200
    # MQTT devices reach NATS on 1883 with a publisher identity's JWT as password.
    async with aiomqtt.Client(
        address(project, "nats"),
        1883,
        username="device",
        password=Credentials.read(project.root / "auth" / "publisher-alerts.creds").jwt,
        identifier="compose-test-device",
    ) as device:
        await device.publish("alerts/nochannel", b"{}", qos=1)


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_the_gateway_runs_with_a_token_against_its_api_url(tmp_path: Path) -> None:
    # A sandbox on this machine plays Telegram; compose gets the token and its URL.
    # Not on 127.0.0.1: inside a container that address is the container itself.
    telegram = SandboxServer()
    await telegram.start("127.0.0.2", 0)
    bot = telegram.add_bot(username="compose_live_bot")
    env = {
        **issued(tmp_path / "auth"),
        "TELEGRAM_BOT_TOKEN": bot.token,
        "TELEGRAM_API_URL": telegram.api_url,
    }
    project = compose.Project(compose.load(env), tmp_path, only=("nats", "gateway", "echo"))
    user = SandboxClient(telegram.base_url)
    try:
        async with run(project):
            await ask(user, bot.id, "/echo live and well", "live and well")
    finally:
        await user.close()
        await telegram.stop()
