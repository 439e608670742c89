"""Calls that send no message (answerCallbackQuery, sendChatAction) skip the budgets.

They still keep their chat's order: an unlimited job never overtakes an
earlier job to the same chat.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from botbus.gateway.scheduler import Budget, OutboundJob, Outcome

from .conftest import FakeTelegram, VirtualClock, max_in_window, scheduler_on

WAIT = 10.0  # seconds: generous bound on any batch of outcomes


def unlimited(job: OutboundJob) -> OutboundJob:
    """The same job, marked as sending no message."""
    return replace(job, unlimited=True)


async def outcomes(futures: list[asyncio.Future[Outcome]]) -> list[Outcome]:
    """Every outcome, failing the test if they take longer than WAIT."""
    return list(await asyncio.wait_for(asyncio.gather(*futures), WAIT))


async def test_unlimited_jobs_skip_the_per_chat_limit_but_keep_order(
    telegram: FakeTelegram,
    clock: VirtualClock,
) -> None:
    budget = Budget(global_per_second=100, per_chat_per_second=1, per_chat_burst=1)
    async with scheduler_on(clock, budget) as scheduler:
        jobs = [
            telegram.job(7, "text 1"),
            unlimited(telegram.job(7, "typing 1")),
            unlimited(telegram.job(7, "callback answer")),
            telegram.job(7, "text 2"),
            unlimited(telegram.job(7, "typing 2")),
        ]
        results = await outcomes([scheduler.submit(job) for job in jobs])
    assert {r.status for r in results} == {"sent"}
    assert telegram.keys(7) == [job.key for job in jobs]
    at = {c.key: c.at for c in telegram.calls}
    # The chat's one message per second holds for texts only.
    assert at["callback answer"] - at["text 1"] < 0.5
    assert at["text 2"] - at["text 1"] >= 0.9
    # Behind "text 2", "typing 2" waited for it: order wins over being unlimited.
    assert at["typing 2"] >= at["text 2"]


async def test_unlimited_jobs_go_while_the_global_budget_is_spent(
    telegram: FakeTelegram,
    clock: VirtualClock,
) -> None:
    budget = Budget(global_per_second=4, per_chat_per_second=100, per_chat_burst=100)
    async with scheduler_on(clock, budget) as scheduler:
        started = clock.now()
        texts = [scheduler.submit(telegram.job(chat, f"text {chat}")) for chat in range(12)]
        answers = [
            scheduler.submit(unlimited(telegram.job(100 + n, f"answer {n}"))) for n in range(20)
        ]
        await outcomes(answers)
        answers_took = clock.now() - started
        await outcomes(texts)
    assert answers_took < 1.0  # 20 calls, while the texts go out at 4/s
    text_times = [c.at for c in telegram.calls if c.key.startswith("text")]
    assert max_in_window(text_times, 1.0) <= 4  # unlimited calls did not eat the budget
    assert len(telegram.delivered) == 32
