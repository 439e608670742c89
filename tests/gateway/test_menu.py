"""The command menu: every live service gets its share, and one bad entry spoils nothing."""

from __future__ import annotations

import asyncio
import json

from nats.micro import add_service

from botbus import subjects
from botbus.connect import close_within
from botbus.gateway import Gateway
from botbus.gateway.app import fair_share
from botbus.gateway.registry import MAX_COMMANDS_PER_SERVICE, CommandSpec
from botbus.natsserver import NatsServer
from botbus.sandbox import SandboxBot, SandboxClient
from botbus.settings import Settings

from .conftest import MiniService, connect_admin


def _spec(command: str, description: str = "x") -> dict[str, object]:
    return {"command": command, "description": {"en": description}}


async def test_menu_is_shared_fairly_and_skips_what_telegram_refuses(
    gateway: Gateway,
    echo: MiniService,
    user: SandboxClient,
    bot: SandboxBot,
    nats_server: NatsServer,
    gw_settings: Settings,
) -> None:
    """Four services claim 40 commands each, all sorting before /echo; another claims
    "zz\\n" (the newline once passed the name check) and one with a blank description:
    Telegram refuses a whole setMyCommands for one such entry."""
    assert gateway.registry is not None
    nc = await connect_admin(nats_server, gw_settings)
    try:
        names = ["aa", "ab", "ac", "ad"]
        for name in names:
            claims = [_spec(f"{name}_{i:02d}") for i in range(40)]
            await add_service(
                nc, name=name, version="1.0.0", metadata={"botbus.commands": json.dumps(claims)}
            )
        odd = [_spec("zz\n"), _spec("blank", "   "), _spec("fine")]
        await add_service(
            nc, name="odd", version="1.0.0", metadata={"botbus.commands": json.dumps(odd)}
        )
        async with asyncio.timeout(15):
            while not all(gateway.registry.is_live(n) for n in [*names, "odd", "echo"]):
                await gateway.registry.next_round()
            await gateway.registry.next_round()  # the menu is synced at the end of a round
            await gateway.registry.next_round()
        menu = [c["command"] for c in await user.commands(bot.id)]
    finally:
        await close_within(nc, 5)
    assert len(menu) == 100
    assert {"help", "language", "forgetme", "echo", "fine"} <= set(menu)
    assert "blank" not in menu and not any(c.startswith("zz") for c in menu)
    # 97 places for 4 x 30 + 2 commands: each of the four gets 23 or 24, none more than 30.
    shares = [sum(c.startswith(f"{n}_") for c in menu) for n in names]
    assert sum(shares) == 95 and max(shares) - min(shares) <= 1
    assert gateway.registry.conflicts.excess == {
        n: [f"{n}_{i:02d}" for i in range(MAX_COMMANDS_PER_SERVICE, 40)] for n in names
    }
    assert subjects.is_valid_name("zz") and not subjects.is_valid_name("zz\n")


def test_fair_share_takes_one_command_per_service_in_turn() -> None:
    offered = [("a", CommandSpec(command=f"a{i}")) for i in range(5)]
    offered += [("b", CommandSpec(command="b0")), ("c", CommandSpec(command="c0"))]
    offered += [("c", CommandSpec(command="c1"))]
    assert [s.command for _, s in fair_share(offered, 5)] == ["a0", "a1", "b0", "c0", "c1"]
    assert fair_share(offered, 100) == offered
    assert fair_share(offered, 0) == []
