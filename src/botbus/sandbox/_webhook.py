"""Webhook delivery: POST each pending update, in order, until the receiver says 2xx."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp

from botbus.sandbox._state import BotState, now

logger = logging.getLogger(__name__)

MAX_RETRY_DELAY = 60.0  # seconds between two attempts at most
DELIVERY_TIMEOUT = 10.0  # seconds a receiver may take to answer


async def deliver_forever(
    state: BotState, session: Callable[[], aiohttp.ClientSession], retry_delay: float
) -> None:
    """Deliver ``state``'s updates to its webhook until cancelled.

    One update at a time keeps them in order; a failed delivery is retried
    with exponential backoff and recorded for getWebhookInfo.
    """
    delay = retry_delay
    while True:
        webhook = state.webhook
        if webhook is None:
            return
        await state.signal.wait_for(lambda: bool(state.updates), 3600.0)
        if not state.updates:
            continue
        update = state.updates[0]
        headers = {"Content-Type": "application/json"}
        if webhook.secret_token:
            headers["X-Telegram-Bot-Api-Secret-Token"] = webhook.secret_token
        error: str | None = None
        try:
            async with session().post(
                webhook.url,
                json=update,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=DELIVERY_TIMEOUT),
            ) as resp:
                await resp.read()
                if not 200 <= resp.status < 300:
                    error = f"Wrong response from the webhook: {resp.status} {resp.reason or ''}"
        except TimeoutError:
            error = "Timeout expired"
        except aiohttp.ClientError as exc:
            error = f"Connection failed: {exc}"
        if error is None:
            # drop_pending_updates may have cleared the queue meanwhile
            if state.updates and state.updates[0] is update:
                state.updates.popleft()
            delay = retry_delay
            continue
        state.last_error_date = now()
        state.last_error_message = error.strip()
        logger.info("webhook of bot %s failed (%s); retrying in %.2fs", state.bot.id, error, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_RETRY_DELAY)
