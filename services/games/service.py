"""The games service: commands and button presses wired to the pure game engines.

Every handler reads the chat's record, lets :mod:`.engine` decide, and writes
back with compare-and-set (:mod:`.store`). Button presses are always answered
(so Telegram's spinner stops) and the board message is edited in place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal

from botbus.models import (
    DeliveryEvent,
    ForgetUser,
    InboundBase,
    InboundCallback,
    InboundCommand,
    InlineButton,
)
from botbus.service import Context, Refuse, Service
from services.games import engine
from services.games.base import Player, Rows, whole_number
from services.games.engine import ChatRecord, Outcome
from services.games.guess import Guess
from services.games.hangman import Hangman
from services.games.protocol import new_game_id
from services.games.store import GameStore
from services.games.texts import MALFORMED, Localized, Refused
from services.games.tictactoe import TicTacToe
from services.games.trivia import DEFAULT_ROUND, MAX_ROUND, Trivia

GameState = TicTacToe | Trivia | Hangman | Guess
# What may follow /tictactoe to play the bot in a group (case-insensitive).
VS_BOT_WORDS = ("bot", "ai", "ia")


def _language(cmd: InboundCommand) -> Literal["en", "es"]:
    """The games speak English and Spanish; any other language gets English."""
    return "es" if cmd.language == "es" else "en"


service = Service(
    name="games",
    version="1.0.0",
    locales=__package__,
)


async def store_of(ctx: Context) -> GameStore:
    """The chat records of this service (bucket ``svc_games``)."""
    return GameStore(await ctx.kv())


def player_of(inbound: InboundBase) -> Player:
    """The user who wrote or pressed, as a game player."""
    return Player(id=inbound.user.id, name=inbound.user.display_name[:32])


def keyboard(ctx: Context, rows: Rows) -> list[list[InlineButton]] | None:
    """The view's rows as inline buttons (None: no keyboard, e.g. a finished game)."""
    return [[ctx.button(label, data) for label, data in row] for row in rows] or None


async def _apply(ctx: Context, chat_id: int, step: Callable[[ChatRecord], Outcome]) -> Outcome:
    """Run ``step`` under compare-and-set; a refusal becomes the user's reply."""
    store = await store_of(ctx)

    def change(record: ChatRecord) -> tuple[ChatRecord, Outcome]:
        outcome = step(record)
        return outcome.record, outcome

    try:
        return await store.change(chat_id, change)
    except Refused as exc:
        raise Refuse(exc.reason.pick(ctx.language)) from exc


STOPPED = Localized("stopped")
REPLACED = Localized("replaced")
GONE = Localized("gone")


async def _close_board(ctx: Context, game: GameState, note: Localized) -> None:
    """Show ``game``'s board as ended, without buttons (its id must be known)."""
    assert game.message_id is not None
    ended = game.model_copy(update={"finished": True})
    await ctx.edit(game.message_id, f"{ended.view().text}\n\n{note.pick(game.language)}")


async def _start(
    ctx: Context, cmd: InboundCommand, game: TicTacToe | Trivia | Hangman | Guess
) -> None:
    game = game.model_copy(update={"started_by": cmd.correlation_id})
    replaced: list[GameState] = []

    def step(record: ChatRecord) -> Outcome:
        replaced.clear()  # compare-and-set may run this more than once
        if record.game is not None and not record.game.finished:
            replaced.append(record.game)
        return engine.start(record, game)

    outcome = await _apply(ctx, cmd.chat.id, step)
    for old in replaced:
        if old.message_id is not None:
            await _close_board(ctx, old, REPLACED)
    # The receipt tells on_delivery the board's message id, so /stop can close it.
    await ctx.reply(outcome.view.text, keyboard=keyboard(ctx, outcome.view.rows), receipt=True)


def _refuse_arguments(ctx: Context, cmd: InboundCommand) -> None:
    """Refuse words after a command that takes none, rather than ignore them."""
    if cmd.args.strip():
        raise Refuse(ctx.t("takes_no_arguments", command=cmd.command))


@service.command("trivia")
async def trivia(ctx: Context, cmd: InboundCommand) -> None:
    """Start a round of multiple-choice questions in the user's language."""
    count = whole_number(cmd.args) if cmd.args.strip() else DEFAULT_ROUND
    if count is None or not 1 <= count <= MAX_ROUND:
        raise Refuse(ctx.t("usage_trivia_max_round", max_round=MAX_ROUND))
    game = Trivia.start(new_game_id(), _language(cmd), group=cmd.chat.is_group, count=count)
    await _start(ctx, cmd, game)


@service.command("tictactoe")
async def tictactoe(ctx: Context, cmd: InboundCommand) -> None:
    """Open a board: vs the bot in private chats, vs the first member who joins in groups."""
    opponent = cmd.args.strip().lower()
    if opponent not in ("", *VS_BOT_WORDS):
        raise Refuse(ctx.t("usage_tictactoe"))
    vs_bot = not cmd.chat.is_group or bool(opponent)
    game = TicTacToe.start(new_game_id(), _language(cmd), player_of(cmd), vs_bot=vs_bot)
    await _start(ctx, cmd, game)


@service.command("hangman")
async def hangman(ctx: Context, cmd: InboundCommand) -> None:
    """Start hangman with a word in the user's language."""
    _refuse_arguments(ctx, cmd)
    await _start(ctx, cmd, Hangman.start(new_game_id(), _language(cmd)))


@service.command("guess")
async def guess(ctx: Context, cmd: InboundCommand) -> None:
    """Without a number: start a game. With one: guess, and hear "higher" or "lower"."""
    if not cmd.args.strip():
        await _start(ctx, cmd, Guess.start(new_game_id(), _language(cmd)))
        return
    user = player_of(cmd)
    outcome = await _apply(ctx, cmd.chat.id, lambda record: engine.guess(record, user, cmd.args))
    assert outcome.notice is not None  # every guess is answered
    await ctx.reply(outcome.notice.pick(cmd.language))


@service.command("stop")
async def stop(ctx: Context, cmd: InboundCommand) -> None:
    """End the chat's game; its buttons stop working and its board loses them."""
    _refuse_arguments(ctx, cmd)

    def step(record: ChatRecord) -> Outcome:
        stopped = engine.stop(record)
        assert stopped.game is not None
        return Outcome(stopped, stopped.game.view(), None)

    outcome = await _apply(ctx, cmd.chat.id, step)
    game = outcome.record.game
    if game is not None and game.message_id is not None:
        await _close_board(ctx, game, STOPPED)
    # Otherwise the board's receipt is still on its way: on_delivery closes it.
    await ctx.reply(STOPPED.pick(cmd.language))


@service.command("leaderboard")
async def leaderboard(ctx: Context, cmd: InboundCommand) -> None:
    """Show the chat's top scores."""
    _refuse_arguments(ctx, cmd)
    record, _revision = await (await store_of(ctx)).load(cmd.chat.id)
    await ctx.reply(engine.leaderboard(record, cmd.language))


@service.on_callback
async def pressed(ctx: Context, cb: InboundCallback) -> None:
    """A button press: validate, apply atomically, answer, edit the board in place."""
    if cb.message_id is None:
        # Buttons on inline-mode messages have no chat message to edit; we never make them.
        await ctx.answer_callback(MALFORMED.pick(cb.language))
        return
    user = player_of(cb)
    message_id = cb.message_id
    store = await store_of(ctx)

    def change(record: ChatRecord) -> tuple[ChatRecord | None, Outcome]:
        outcome = engine.press(record, user, cb.data, message_id, cb.correlation_id)
        if outcome.record is record:
            return None, outcome  # a redelivered press: already applied
        return outcome.record, outcome

    try:
        outcome = await store.change(cb.chat.id, change)
    except Refused as exc:
        ctx.log.info("refused press %r by user %s: %s", cb.data, user.id, exc)
        await ctx.answer_callback(exc.reason.pick(cb.language))
        return
    notice = outcome.notice.pick(cb.language) if outcome.notice else None
    if not outcome.redraw:
        await ctx.answer_callback(notice)
        return
    buttons = keyboard(ctx, outcome.view.rows)
    # Both stored at once: one JetStream round trip instead of two on the hot path.
    # gather starts them in this order and each takes its idempotency key before
    # its first await, so a redelivered press still yields the same two keys.
    await asyncio.gather(
        ctx.answer_callback(notice), ctx.edit(message_id, outcome.view.text, keyboard=buttons)
    )


@service.on_delivery
async def board_sent(ctx: Context, ev: DeliveryEvent) -> None:
    """A board's receipt: remember its message id, or close it if its game is already over."""
    if ev.status != "sent" or ev.message_id is None:
        ctx.log.info("telegram refused %s: %s", ev.idempotency_key, ev.description)
        return
    message_id = ev.message_id
    store = await store_of(ctx)

    def change(record: ChatRecord) -> tuple[ChatRecord | None, GameState | None]:
        game = record.game
        if game is None or game.started_by != ev.correlation_id:
            return None, None  # replaced (or gone) before Telegram showed its board
        if game.message_id is not None:
            return None, game  # a press told us first
        game = game.model_copy(update={"message_id": message_id})
        return record.model_copy(update={"game": game}), game

    game = await store.change(ev.chat_id, change)
    if game is None:
        await ctx.edit(message_id, GONE.pick(ctx.language), chat_id=ev.chat_id)
    elif game.finished:
        await _close_board(ctx, game, STOPPED)  # stopped while the receipt was on its way


@service.on_forget
async def forget(ctx: Context, event: ForgetUser) -> None:
    """Remove the user's scores from every chat's leaderboard."""
    store = await store_of(ctx)
    for chat_id in await store.chats():
        await store.change(chat_id, lambda record: (engine.forget(record, event.user_id), None))
    ctx.log.info("forgot the scores of user %s", event.user_id)
