"""The comparison point of bench/broadcast.py: one python-telegram-bot process doing it all.

How a bot is commonly written without botbus: a PTB ``Application`` polling for
updates, its ``AIORateLimiter`` keeping the sends within Telegram's limits, an
``/echo`` handler answering users, and ``/broadcast`` sending an alert to every
subscriber at once (all sends handed to the rate limiter, which paces them).

Run by ``bench/broadcast.py --through ptb``, never by hand. Settings come from
the environment: ``TELEGRAM_BOT_TOKEN``, ``TELEGRAM_API_URL``,
``BENCH_SUBSCRIBERS`` (``first:count``), ``BENCH_RATE`` (msg/s overall) and
``BENCH_RETRIES`` (the limiter's retries after a 429).
"""

from __future__ import annotations

import asyncio
import logging
import os
import warnings

from telegram import Update
from telegram.error import TelegramError
from telegram.ext import AIORateLimiter, Application, CommandHandler, ContextTypes
from telegram.warnings import PTBDeprecationWarning

log = logging.getLogger("ptb_monolith")

GROUP_PER_MINUTE = 20  # Telegram's group limit, as the limiter's default


async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Answer ``/echo text`` with ``text``."""
    if update.message is not None:
        await update.message.reply_text(" ".join(context.args or []) or "(empty)")


async def broadcast(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Send an alert to every subscriber; the rate limiter paces the sends."""
    first, count = (int(x) for x in os.environ["BENCH_SUBSCRIBERS"].split(":"))

    async def one(chat_id: int) -> None:
        try:
            await context.bot.send_message(chat_id, f"alert {chat_id}")
        except TelegramError as exc:  # counted by the sandbox; the bench reports it
            log.warning("alert to %s not sent: %s", chat_id, exc)

    async def everyone() -> None:
        await asyncio.gather(*(one(chat) for chat in range(first, first + count)))

    # Not awaited here: the handler returns and updates keep being processed.
    context.application.create_task(everyone())


def main() -> None:
    """Build the application and poll until SIGTERM."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", category=PTBDeprecationWarning)
    limiter: AIORateLimiter = AIORateLimiter(
        overall_max_rate=float(os.environ["BENCH_RATE"]),
        overall_time_period=1,
        group_max_rate=GROUP_PER_MINUTE,
        group_time_period=60,
        max_retries=int(os.environ.get("BENCH_RETRIES", "3")),
    )
    application = (
        Application.builder()
        .token(os.environ["TELEGRAM_BOT_TOKEN"])
        .base_url(os.environ["TELEGRAM_API_URL"])
        .rate_limiter(limiter)
        .concurrent_updates(True)
        .connection_pool_size(128)
        .pool_timeout(30.0)
        .build()
    )
    application.add_handler(CommandHandler("echo", echo))
    application.add_handler(CommandHandler("broadcast", broadcast))
    application.run_polling(poll_interval=0.0, timeout=10, drop_pending_updates=True)


if __name__ == "__main__":
    if "TELEGRAM_BOT_TOKEN" in os.environ and "BENCH_RATE" in os.environ:
        main()
    else:  # `make bench` runs every script: this one is a part of broadcast.py
        print("bench/_ptb_monolith.py is run by bench/broadcast.py --through ptb|compare")
