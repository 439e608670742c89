"""``botbus chat``: talk to a sandboxed bot as a Telegram user, from a terminal.

One-shot (scripts): ``botbus chat --send "/help"`` prints the bot's answer to
that message and exits 0, or exits 1 when a command got no answer in time
(plain text nobody answers is not an error, nor is a command addressed to
another bot, ``/cmd@otherbot``, which bots ignore: it says so). Without
``--send`` or ``--press`` it is interactive: type text, ``:press LABEL``,
``:photo PATH``, ``:edit N TEXT`` and the other commands of :data:`HELP`,
``:quit`` (or Ctrl-D / Ctrl-C); a bad line gets an ``error:`` line and the
session goes on.

The sandbox is found from ``--url``, ``TELEGRAM_API_URL``, or the sandbox
running on ``BOTBUS_DATA_DIR`` (``make run`` / ``botbus sandbox``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from botbus.errors import ConfigError
from botbus.sandbox._errors import UserApiError
from botbus.sandbox._persist import running_url, state_dir
from botbus.sandbox.client import SandboxClient
from botbus.settings import load_settings

DEFAULT_TIMEOUT = 10.0  # seconds to wait for the bot's first answer
PLAIN_TEXT_WAIT = 3.0  # seconds to wait for an answer to text that is not a command
SETTLE = 0.5  # seconds of quiet after which the bot is considered done answering
NO_PLAIN_REPLY = "no reply: the bot does not answer plain text here"
# A Telegram language_code is an IETF tag ("es", "pt-br"); services answer in
# any language they ship a catalogue for and in English otherwise, so the tool
# checks the form only, not a list.
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*")
# "/cmd@name ...": Telegram's way to address a command to one bot of a group.
_ADDRESSED_RE = re.compile(r"/[A-Za-z0-9_]{1,64}@([A-Za-z0-9_]{1,64})(?:\s|$)")
LANGUAGE_HELP = (
    "The user's Telegram language_code: any language code (en, es, fr, pt-BR...). "
    "Services answer in it when they have its catalogue, else in English."
)


def _language_code(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``--lang``'s value if it is a language code; else a usage error saying so."""
    if not _LANGUAGE_TAG.fullmatch(value):
        raise click.BadParameter(f"{value!r} is not a language code (e.g. en, es, fr, pt-BR)")
    return value


@dataclass
class Session:
    """Who is talking, where, and the last event seen."""

    client: SandboxClient
    bot_id: int
    user: int
    chat: int
    lang: str
    as_json: bool
    cursor: int = 0
    keyboard_message: int | None = None


def _sandbox_url(url: str | None) -> str:
    if url:
        return url
    try:
        settings = load_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if settings.telegram_api_url:
        return settings.telegram_api_url.rstrip("/").removesuffix("/bot")
    directory = state_dir(settings.data_dir)
    running = running_url(directory)
    if running is None:
        raise click.ClickException(
            f"no sandbox is running with the data directory {directory.resolve()}: "
            "start one with `make run` or `botbus sandbox` here, "
            "or pass --url http://127.0.0.1:8081 (or set TELEGRAM_API_URL)"
        )
    return running


async def _pick_bot(client: SandboxClient, bot_id: int | None) -> int:
    if bot_id is not None:
        return bot_id
    bots = await client.bots()
    if len(bots) == 1:
        return bots[0].id
    if not bots:
        raise click.ClickException("the sandbox has no bot; start one with `botbus sandbox`")
    names = ", ".join(f"{b.id} (@{b.username})" for b in bots)
    raise click.ClickException(f"the sandbox has several bots; pick one with --bot-id: {names}")


def _render(event: dict[str, Any]) -> str:
    kind = event["kind"]
    message = event.get("message") or {}
    if kind in ("message", "edit"):
        text = message.get("text") or message.get("caption") or ""
        if "photo" in message:
            text = f"[photo {message['photo'][-1]['file_id']}] {text}".strip()
        elif "document" in message:
            text = f"[document {message['document'].get('file_name', '')}] {text}".strip()
        prefix = "bot" if kind == "message" else f"bot (edited #{message.get('message_id')})"
        lines = [f"{prefix}: {text}"]
        rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
        number = 0
        for row in rows:
            cells = []
            for button in row:
                number += 1
                cells.append(f"[{number}] {button.get('text')}")
            lines.append("    " + "  ".join(cells))
        return "\n".join(lines)
    if kind == "callback_answer":
        alert = " (alert)" if event.get("show_alert") else ""
        return f"bot answers the button{alert}: {event.get('text') or '(no text)'}"
    if kind == "chat_action":
        return f"bot is {event.get('action')}…"
    if kind == "delete":
        return f"bot deleted message #{event.get('message_id')}"
    return json.dumps(event)


def _show(session: Session, events: list[dict[str, Any]]) -> None:
    for event in events:
        session.cursor = max(session.cursor, int(event["seq"]))
        message = event.get("message") or {}
        if (message.get("reply_markup") or {}).get("inline_keyboard"):
            session.keyboard_message = int(message["message_id"])
        click.echo(json.dumps(event, ensure_ascii=False) if session.as_json else _render(event))


def _belongs(event: dict[str, Any], asked: int | None, ours: set[int]) -> bool | None:
    """Whether ``event`` answers what we did: True, False, or None (does not tell).

    A message replying to another message answers that one, not ours; an edit
    or a button answer concerns ours only if it touches a message we got.
    """
    kind = event["kind"]
    message = event.get("message") or {}
    if kind == "message":
        replied = (message.get("reply_to_message") or {}).get("message_id")
        return replied is None or replied == asked
    if kind == "edit":
        return message.get("message_id") in ours or message.get("message_id") == asked
    if kind == "callback_answer":
        return event.get("message_id") == asked
    if kind == "delete":
        return event.get("message_id") in ours or event.get("message_id") == asked
    return None


async def _answer(
    session: Session, timeout: float, asked: int | None = None
) -> list[dict[str, Any]]:
    """The bot's events after the cursor that answer ``asked`` (our message, or the pressed one).

    Waits up to ``timeout`` for the first answer, then until the bot is quiet
    for SETTLE; answers to other messages are skipped, chat actions kept.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    events: list[dict[str, Any]] = []
    ours: set[int] = set()
    answered = False
    while True:
        wait = SETTLE if answered else deadline - loop.time()
        if wait <= 0:
            return events
        batch = await session.client.messages(
            session.bot_id, session.chat, after=session.cursor, timeout=wait
        )
        if not batch:
            if answered:
                return events
            continue
        for event in batch:
            session.cursor = max(session.cursor, int(event["seq"]))
            verdict = _belongs(event, asked, ours)
            if verdict is False:
                continue
            events.append(event)
            if verdict:
                answered = True
                message_id = (event.get("message") or {}).get("message_id")
                if isinstance(message_id, int):
                    ours.add(message_id)


async def _latest(session: Session, chat_id: int) -> tuple[int, int | None]:
    """The last event seq in ``chat_id`` and its latest message with buttons, if any."""
    events = await session.client.messages(session.bot_id, chat_id)
    keyboard: int | None = None
    for event in events:
        message = event.get("message") or {}
        if (message.get("reply_markup") or {}).get("inline_keyboard"):
            keyboard = int(message["message_id"])
    return (int(events[-1]["seq"]) if events else 0), keyboard


async def _latest_seq(session: Session) -> int:
    seq, session.keyboard_message = await _latest(session, session.chat)
    return seq


async def _press(session: Session, label: str) -> int:
    """Press ``label`` on the latest message with buttons; returns that message's id."""
    if session.keyboard_message is None:
        raise click.ClickException(f"no message with buttons in chat {session.chat} to press")
    pressed = session.keyboard_message
    await session.client.press(
        session.bot_id,
        chat_id=session.chat,
        message_id=session.keyboard_message,
        user=session.user,
        label=label,
        lang=session.lang,
    )
    return pressed


async def _other_bot(session: Session, text: str) -> tuple[str, str] | None:
    """(the bot named, this bot) when ``text`` is a command addressed to another bot."""
    match = _ADDRESSED_RE.match(text.lstrip())
    if match is None:
        return None
    mine = next((b.username for b in await session.client.bots() if b.id == session.bot_id), "")
    named = match.group(1)
    return None if not mine or named.lower() == mine.lower() else (named, mine)


async def _one_shot(session: Session, text: str | None, label: str | None, timeout: float) -> int:
    session.cursor = await _latest_seq(session)
    if text is not None:
        sent = await session.client.send_text(
            session.bot_id, text, user=session.user, chat_id=session.chat, lang=session.lang
        )
        # Bot events before our own message in the chat answer something else.
        session.cursor = max(session.cursor, int(sent.get("seq", 0)))
        # Like Telegram's bots, ours ignore a command addressed to another bot.
        other_bot = await _other_bot(session, text)
        command = text.lstrip().startswith("/") and other_bot is None
        wait = timeout if command else min(timeout, PLAIN_TEXT_WAIT)
        events = await _answer(session, wait, int(sent["message_id"]))
        if not _answered(events):
            _show(session, events)
            if other_bot is not None:
                named, mine = other_bot
                click.echo(
                    f"no reply: the command is addressed to @{named}, not to this bot "
                    f"(@{mine}), so the bot ignores it; leave out @{named} or write @{mine}"
                )
                return 0
            if not command:
                click.echo(NO_PLAIN_REPLY)
                return 0
            click.echo(
                f"error: bot {session.bot_id} did not answer {text!r} in chat {session.chat} "
                f"within {timeout:g}s; is the gateway (and the service owning this command) "
                "running?",
                err=True,
            )
            return 1
        _show(session, events)
    if label is not None:
        pressed = await _press(session, label)
        events = await _answer(session, timeout, pressed)
        if not _answered(events):
            _show(session, events)
            click.echo(
                f"error: bot {session.bot_id} did not answer the press of {label!r} within "
                f"{timeout:g}s; is the service owning this button running?",
                err=True,
            )
            return 1
        _show(session, events)
    return 0


def _answered(events: list[dict[str, Any]]) -> bool:
    return any(e["kind"] != "chat_action" for e in events)


HELP = (
    "Type text, or :press LABEL|N, :reply N TEXT, :edit N TEXT, :photo PATH [CAPTION], "
    ":doc PATH [CAPTION], :location LAT LON, :sticker EMOJI, :user ID, :chat ID, :lang xx, "
    ":group ID TITLE, :join ID, :help, :quit"
)
FOLLOW_POLL = 20.0  # seconds of one long poll for the bot's events
FOLLOW_RETRY = 1.0  # seconds before following again after the sandbox failed us


def _read_lines(loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None]) -> None:
    """Feed typed lines into ``lines``; None marks the end of input."""
    while True:
        try:
            line: str | None = sys.stdin.readline()
        except (OSError, ValueError):
            line = ""
        loop.call_soon_threadsafe(lines.put_nowait, line or None)
        if not line:
            return


async def _follow(session: Session) -> None:
    """Print the bot's events in the current chat as they arrive."""
    reported: str | None = None  # one line per outage, not one per retry
    while True:
        chat = session.chat
        try:
            events = await session.client.messages(
                session.bot_id, chat, after=session.cursor, timeout=FOLLOW_POLL
            )
        except UserApiError as exc:
            if exc.message != reported:
                click.echo(f"error: {exc.message}", err=True)
                reported = exc.message
            await asyncio.sleep(FOLLOW_RETRY)
            continue
        reported = None
        if chat == session.chat:  # the user may have switched chats meanwhile
            _show(session, events)


async def _interactive(session: Session) -> None:
    session.cursor = await _latest_seq(session)
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    # A daemon thread, not asyncio.to_thread: a read blocked on the terminal must not keep
    # the process alive after :quit or Ctrl-C.
    loop = asyncio.get_running_loop()
    threading.Thread(target=_read_lines, args=(loop, lines), daemon=True).start()
    # Ctrl-C ends the session like end of input. Installed explicitly so it works
    # even when the client was started with SIGINT ignored (a shell's '&' job).
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, lines.put_nowait, None)
    # The prompt comes last, so a Ctrl-C typed as soon as it shows is never lost.
    click.echo(
        f"chatting with bot {session.bot_id} as user {session.user} in chat {session.chat}. " + HELP
    )
    follower = asyncio.create_task(_follow(session))
    try:
        while (line := await lines.get()) is not None:
            chat_before = session.chat
            try:
                keep_going = await _interactive_line(session, line.strip())
            except (UserApiError, click.ClickException) as exc:
                click.echo(f"error: {exc.message}", err=True)
                keep_going = True
            if not keep_going:
                return
            if session.chat != chat_before:
                # The running long poll watches the old chat; start over on the new one.
                await _stop(follower)
                follower = asyncio.create_task(_follow(session))
    finally:
        await _stop(follower)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _chat_id(command: str, arg: str) -> int:
    number = arg.split(" ", 1)[0]
    if not number.lstrip("-").isdigit():
        raise click.ClickException(
            f":{command} needs a numeric chat or user id, e.g. :{command} 42"
        )
    return int(number)


async def _interactive_line(session: Session, line: str) -> bool:
    """Handle one typed line; False ends the session."""
    if not line:
        return True
    if not line.startswith(":"):
        sent = await session.client.send_text(
            session.bot_id, line, user=session.user, chat_id=session.chat, lang=session.lang
        )
        click.echo(f"you #{sent['message_id']}")
        return True
    command, _, arg = line[1:].partition(" ")
    arg = arg.strip()
    if command in ("quit", "q", "exit"):
        return False
    if command == "help":
        click.echo(HELP)
    elif command in MEDIA_COMMANDS:
        sent = await _send_media(session, command, arg)
        click.echo(f"you #{sent['message_id']} ({command})")
    elif command == "press":
        if not arg:
            raise click.ClickException(":press needs a button label or number, e.g. :press 1")
        await _press(session, arg)
    elif command == "user":
        was_private = session.chat == session.user
        session.user = _chat_id(command, arg)
        if was_private:
            await _switch_chat(session, session.user)
        else:
            click.echo(f"now in chat {session.chat} as user {session.user}")
    elif command == "chat":
        await _switch_chat(session, _chat_id(command, arg))
    elif command == "lang":
        if not _LANGUAGE_TAG.fullmatch(arg):
            raise click.ClickException(":lang needs a language code, e.g. :lang es or :lang pt-BR")
        session.lang = arg
        click.echo(f"now writing with language {arg}")
    elif command == "group":
        group_id = _chat_id(command, arg)
        if group_id >= 0:
            raise click.ClickException("a group id is negative, e.g. :group -100123 Friends")
        title = arg.partition(" ")[2].strip() or "Group"
        await session.client.create_group(session.bot_id, group_id, title, admins=[session.user])
        await _switch_chat(session, group_id)
    elif command == "join":
        chat_id = _chat_id(command, arg)
        await session.client.join(session.bot_id, chat_id, session.user, lang=session.lang)
        await _switch_chat(session, chat_id)
    else:
        raise click.ClickException(f"unknown command :{command}. {HELP}")
    return True


MEDIA_COMMANDS = ("reply", "edit", "photo", "doc", "location", "sticker")


def _number_and_rest(command: str, arg: str, what: str) -> tuple[int, str]:
    number, _, rest = arg.partition(" ")
    if not number.isdigit() or not rest.strip():
        raise click.ClickException(f":{command} needs a message number and {what}")
    return int(number), rest.strip()


def _file(command: str, arg: str) -> tuple[Path, bytes, str | None]:
    path_text, _, caption = arg.partition(" ")
    if not path_text:
        raise click.ClickException(f":{command} needs a file path, e.g. :{command} ~/cat.png")
    path = Path(path_text).expanduser()
    try:
        return path, path.read_bytes(), caption.strip() or None
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror or exc}") from exc


async def _send_media(session: Session, command: str, arg: str) -> dict[str, Any]:
    """The user side of the media commands (``:photo``, ``:edit``, ...)."""
    client, bot_id = session.client, session.bot_id
    where: dict[str, Any] = {"user": session.user, "chat_id": session.chat, "lang": session.lang}
    if command == "reply":
        number, text = _number_and_rest(command, arg, "a text, e.g. :reply 3 thanks")
        return await client.send_text(bot_id, text, reply_to=number, **where)
    if command == "edit":
        number, text = _number_and_rest(command, arg, "the new text, e.g. :edit 3 fixed")
        return await client.edit_text(
            bot_id, session.chat, number, text, user=session.user, lang=session.lang
        )
    if command == "photo":
        path, data, caption = _file(command, arg)
        return await client.send_photo(bot_id, data, caption=caption, filename=path.name, **where)
    if command == "doc":
        path, data, caption = _file(command, arg)
        return await client.send_document(bot_id, data, path.name, caption=caption, **where)
    if command == "location":
        try:
            latitude, longitude = (float(x) for x in arg.replace(",", " ").split())
        except ValueError:
            raise click.ClickException(
                ":location needs latitude and longitude, e.g. :location 40.4 -3.7"
            ) from None
        return await client.send_location(bot_id, latitude, longitude, **where)
    if not arg:
        raise click.ClickException(":sticker needs an emoji, e.g. :sticker 👍")
    return await client.send_sticker(bot_id, arg, **where)


async def _switch_chat(session: Session, chat_id: int) -> None:
    # Chat, cursor and keyboard change together (no await in between), so the follower
    # never polls the new chat with the old chat's cursor.
    cursor, keyboard = await _latest(session, chat_id)
    session.chat, session.cursor, session.keyboard_message = chat_id, cursor, keyboard
    click.echo(f"now in chat {chat_id} as user {session.user}")


async def _run(
    url: str,
    bot_id: int | None,
    user: int,
    chat_id: int | None,
    lang: str,
    send: str | None,
    press: str | None,
    timeout: float,
    as_json: bool,
) -> int:
    async with SandboxClient(url) as client:
        chosen = await _pick_bot(client, bot_id)
        session = Session(client, chosen, user, chat_id or user, lang, as_json)
        if send is None and press is None:
            await _interactive(session)
            return 0
        return await _one_shot(session, send, press, timeout)


@click.command()
@click.option("--send", "send", help="Send this text once, print the answer and exit.")
@click.option("--press", "press", help="Press the button with this label (or number).")
@click.option("--user", "user", type=int, default=1001, show_default=True, help="User id.")
@click.option("--chat", "chat_id", type=int, help="Chat id (default: the user's private chat).")
@click.option(
    "--lang",
    metavar="CODE",
    default="en",
    show_default=True,
    callback=_language_code,
    help=LANGUAGE_HELP,
)
@click.option(
    "--timeout",
    type=float,
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds to wait for an answer.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the bot's events as JSON lines.")
@click.option(
    "--url",
    help="Sandbox base URL (default: TELEGRAM_API_URL without /bot, "
    "else the sandbox running on BOTBUS_DATA_DIR).",
)
@click.option("--bot-id", type=int, help="Which bot (needed when the sandbox has several).")
def chat(
    send: str | None,
    press: str | None,
    user: int,
    chat_id: int | None,
    lang: str,
    timeout: float,
    as_json: bool,
    url: str | None,
    bot_id: int | None,
) -> None:
    """Chat with a sandboxed bot as a Telegram user."""
    base_url = _sandbox_url(url)
    try:
        code = asyncio.run(
            _run(base_url, bot_id, user, chat_id, lang, send, press, timeout, as_json)
        )
    except UserApiError as exc:
        raise click.ClickException(exc.message) from exc
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)
