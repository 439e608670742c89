"""The outbound scheduler as a pure component: budgets, lanes, order, retries, lifecycle."""

from __future__ import annotations

import asyncio
import itertools
import random
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TimedOut

from botbus.gateway.calls import Verdict
from botbus.gateway.scheduler import (
    Budget,
    OutboundJob,
    Outcome,
    SchedulerClosedError,
)
from botbus.models import Priority

from .conftest import FakeTelegram, VirtualClock, max_in_window, scheduler_on

# Building RetryAfter(int) makes PTB 22 warn about its future timedelta type.
pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

# A small budget keeps the tests fast; per-chat limits are loose unless a test is about them.
FAST = Budget(global_per_second=50, per_chat_per_second=100, per_chat_burst=100)
WAIT = 10.0  # seconds: generous upper bound for any single wait on an outcome


async def outcomes(futures: list[asyncio.Future[Outcome]]) -> list[Outcome]:
    """Every outcome, failing the test if any takes longer than WAIT."""
    return list(await asyncio.wait_for(asyncio.gather(*futures), WAIT))


async def test_global_budget_is_never_exceeded(telegram: FakeTelegram, clock: VirtualClock) -> None:
    async with scheduler_on(clock, FAST) as scheduler:
        futures = [scheduler.submit(telegram.job(chat, f"m{chat}")) for chat in range(120)]
        results = await outcomes(futures)
    assert {r.status for r in results} == {"sent"}
    assert len(telegram.delivered) == 120
    assert max_in_window([c.at for c in telegram.calls], 1.0) <= 50


async def test_per_chat_rate_allows_a_short_burst_then_paces(
    telegram: FakeTelegram, clock: VirtualClock
) -> None:
    budget = Budget(global_per_second=1000, per_chat_per_second=5, per_chat_burst=2)
    async with scheduler_on(clock, budget) as scheduler:
        await outcomes([scheduler.submit(telegram.job(7, f"m{i}")) for i in range(6)])
    times = [c.at for c in telegram.calls]
    # 2 at once are fine, but never more than 2 in any 2/5 s.
    assert times[1] - times[0] < 0.15  # without the burst it would wait 0.2 s
    assert max_in_window(times, 2 / 5) <= 2
    assert telegram.keys(7) == [f"m{i}" for i in range(6)]


async def test_group_gets_its_per_minute_budget_while_others_flow(
    telegram: FakeTelegram,
    clock: VirtualClock,
) -> None:
    budget = Budget(global_per_second=1000, per_chat_per_second=100, group_per_minute=3)
    async with scheduler_on(clock, budget) as scheduler:
        group = [scheduler.submit(telegram.job(-100, f"g{i}", is_group=True)) for i in range(4)]
        await outcomes(group[:3])
        private = scheduler.submit(telegram.job(5, "private"))
        await outcomes([private])
        # The 4th group message must wait for the minute to pass; a later private one did not.
        assert not group[3].done()
        assert telegram.keys(-100) == ["g0", "g1", "g2"]
        await scheduler.stop(drain=False)
    assert group[3].cancelled()


async def test_interactive_jumps_the_bulk_queue(
    telegram: FakeTelegram, clock: VirtualClock
) -> None:
    scheduler = scheduler_on(clock, Budget(global_per_second=20))
    bulk = [scheduler.submit(telegram.job(chat, f"bulk{chat}")) for chat in range(1, 31)]
    replies = [
        scheduler.submit(telegram.job(chat, f"reply{chat}", priority="interactive"))
        for chat in range(100, 103)
    ]
    async with scheduler:
        await outcomes(replies)
        assert telegram.keys()[:3] == ["reply100", "reply101", "reply102"]
        await outcomes(bulk)


async def test_bulk_is_not_starved_by_a_flood_of_interactive(
    telegram: FakeTelegram, clock: VirtualClock
) -> None:
    scheduler = scheduler_on(clock, FAST, bulk_share=0.1)
    bulk = [scheduler.submit(telegram.job(chat, f"bulk{chat}")) for chat in range(1, 6)]
    interactive = [
        scheduler.submit(telegram.job(chat, f"i{chat}", priority="interactive"))
        for chat in range(100, 160)
    ]
    async with scheduler:
        await outcomes(bulk + interactive)
    order = telegram.keys()
    # Every 10th slot goes to bulk while interactive keeps the rest busy.
    assert [order.index(f"bulk{chat}") for chat in range(1, 6)] == [9, 19, 29, 39, 49]


async def test_interactive_does_not_overtake_earlier_bulk_to_the_same_chat(
    telegram: FakeTelegram,
    clock: VirtualClock,
) -> None:
    scheduler = scheduler_on(clock, Budget(global_per_second=20))
    others = [scheduler.submit(telegram.job(chat, f"other{chat}")) for chat in range(10, 30)]
    mine = [
        scheduler.submit(telegram.job(1, "alert1")),
        scheduler.submit(telegram.job(1, "alert2")),
        scheduler.submit(telegram.job(1, "reply", priority="interactive")),
    ]
    async with scheduler:
        await outcomes(mine)
        assert telegram.keys(1) == ["alert1", "alert2", "reply"]
        # The chat was promoted as a whole: its earlier alerts went first, ahead of other bulk.
        assert telegram.keys().index("reply") <= 3
        await outcomes(others)


async def test_per_chat_order_survives_retries(telegram: FakeTelegram, clock: VirtualClock) -> None:
    telegram.fail("first", NetworkError("connection reset"), TimedOut())
    async with scheduler_on(clock, FAST, backoff_base=0.02) as scheduler:
        futures = [scheduler.submit(telegram.job(3, key)) for key in ("first", "second", "third")]
        results = await outcomes(futures)
    assert [r.status for r in results] == ["sent"] * 3
    assert telegram.keys(3) == ["first", "second", "third"]
    assert [c.key for c in telegram.calls] == ["first"] * 3 + ["second", "third"]


@pytest.mark.parametrize("retry_after", [1, timedelta(seconds=1)], ids=["int", "timedelta"])
async def test_retry_after_pauses_only_that_chat(
    telegram: FakeTelegram, clock: VirtualClock, retry_after: int | timedelta
) -> None:
    telegram.fail("slow", RetryAfter(retry_after))
    async with scheduler_on(clock, FAST) as scheduler:
        limited = scheduler.submit(telegram.job(1, "slow"))
        behind = scheduler.submit(telegram.job(1, "slow-next"))
        await telegram.wait_for_calls(1)
        others = [scheduler.submit(telegram.job(chat, f"o{chat}")) for chat in range(2, 12)]
        await outcomes(others)
        stats = scheduler.snapshot()
        assert stats.paused_chats == 1 and stats.rate_limited_total == 1
        assert not limited.done() and not behind.done()
        await outcomes([limited, behind])
    first, retry = telegram.calls_of("slow")
    assert retry.at - first.at >= 0.95
    assert all(telegram.calls_of(f"o{chat}")[0].at < first.at + 0.9 for chat in range(2, 12))
    assert telegram.keys(1) == ["slow", "slow-next"]


async def test_429s_from_several_chats_pause_the_whole_bot(
    telegram: FakeTelegram, clock: VirtualClock
) -> None:
    for chat in (1, 2, 3):
        telegram.fail(f"c{chat}", RetryAfter(1))
    async with scheduler_on(clock, FAST, global_429_chats=3) as scheduler:
        limited = [scheduler.submit(telegram.job(chat, f"c{chat}")) for chat in (1, 2, 3)]
        await telegram.wait_for_calls(3)
        assert scheduler.snapshot().globally_paused_for > 0.5
        late = scheduler.submit(telegram.job(4, "late"))
        await outcomes([*limited, late])
    third_429 = max(c.at for c in telegram.calls[:3])
    assert telegram.calls_of("late")[0].at - third_429 >= 0.95


@pytest.mark.parametrize(
    "error",
    [
        Forbidden("Forbidden: bot was blocked by the user"),
        BadRequest("Bad Request: chat not found"),
    ],
    ids=["blocked", "chat-not-found"],
)
async def test_permanent_refusal_is_not_retried(
    telegram: FakeTelegram, clock: VirtualClock, error: Exception
) -> None:
    telegram.fail("doomed", error)
    registry = CollectorRegistry()
    async with scheduler_on(clock, FAST, registry=registry) as scheduler:
        doomed = scheduler.submit(telegram.job(9, "doomed"))
        after = scheduler.submit(telegram.job(9, "after"))
        refused, sent = await outcomes([doomed, after])
        stats = scheduler.snapshot()
    assert refused.status == "refused" and refused.error is error
    assert sent.status == "sent"
    assert len(telegram.calls_of("doomed")) == 1
    assert stats.refused_total == 1 and stats.retries_total == 0
    assert registry.get_sample_value("botbus_outbound_permanent_failures_total") == 1


async def test_transient_failures_are_retried_then_sent(
    telegram: FakeTelegram, clock: VirtualClock
) -> None:
    telegram.fail("flaky", NetworkError("Bad Gateway (502)"), TimedOut(), NetworkError("EOF"))
    async with scheduler_on(clock, FAST, backoff_base=0.02) as scheduler:
        (result,) = await outcomes([scheduler.submit(telegram.job(4, "flaky"))])
        stats = scheduler.snapshot()
    assert result == Outcome("sent", result="sent flaky")
    assert len(telegram.calls_of("flaky")) == 4
    assert stats.retries_total == 3
    attempts = [c.at for c in telegram.calls_of("flaky")]
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[2] > gaps[0]  # backoff grows


async def test_gives_up_after_max_attempts(telegram: FakeTelegram, clock: VirtualClock) -> None:
    telegram.fail("never", *[NetworkError("Internal Server Error (500)")] * 10)
    async with scheduler_on(clock, FAST, max_attempts=3, backoff_base=0.01) as scheduler:
        (result,) = await outcomes([scheduler.submit(telegram.job(4, "never"))])
        stats = scheduler.snapshot()
    assert result.status == "gave_up"
    assert isinstance(result.error, NetworkError)
    assert len(telegram.calls_of("never")) == 3
    assert stats.gave_up_total == 1


async def test_stop_with_drain_sends_everything_queued(
    telegram: FakeTelegram, clock: VirtualClock
) -> None:
    scheduler = scheduler_on(clock, FAST)
    await scheduler.start()
    futures = [scheduler.submit(telegram.job(chat, f"m{chat}")) for chat in range(40)]
    await asyncio.wait_for(scheduler.stop(drain=True), WAIT)
    assert all(f.done() and f.result().status == "sent" for f in futures)
    assert len(telegram.delivered) == 40
    with pytest.raises(SchedulerClosedError, match="stopping"):
        scheduler.submit(telegram.job(1, "too late"))


async def test_stop_without_drain_cancels_what_was_not_sent(
    telegram: FakeTelegram, clock: VirtualClock
) -> None:
    scheduler = scheduler_on(clock, Budget(global_per_second=5))
    await scheduler.start()
    futures = [scheduler.submit(telegram.job(chat, f"m{chat}")) for chat in range(20)]
    await asyncio.wait_for(asyncio.shield(futures[0]), WAIT)
    await asyncio.wait_for(scheduler.stop(drain=False), WAIT)
    cancelled = [f for f in futures if f.cancelled()]
    assert cancelled, "queued jobs must not be reported as sent"
    assert len(telegram.delivered) + len(cancelled) == 20


async def test_withdrawn_job_is_never_sent(telegram: FakeTelegram, clock: VirtualClock) -> None:
    scheduler = scheduler_on(clock, FAST)
    withdrawn = scheduler.submit(telegram.job(1, "withdrawn"))
    kept = scheduler.submit(telegram.job(1, "kept"))
    withdrawn.cancel()
    async with scheduler:
        await outcomes([kept])
    assert telegram.keys() == ["kept"]
    assert scheduler.snapshot().queued == {"interactive": 0, "bulk": 0}


async def test_bad_job_gets_a_clear_error_and_the_scheduler_keeps_going(
    telegram: FakeTelegram,
    clock: VirtualClock,
) -> None:
    async with scheduler_on(clock, FAST) as scheduler:
        send = telegram.job(1, "x").send
        bad = OutboundJob(1, False, "urgent", send)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="priority must be one of"):
            scheduler.submit(bad)

        async def broken() -> object:
            raise KeyError("bug in the caller")

        crashed = scheduler.submit(OutboundJob(2, False, "bulk", broken, key="broken"))
        fine = scheduler.submit(telegram.job(2, "fine"))
        crash, ok = await outcomes([crashed, fine])
    assert crash.status == "refused" and isinstance(crash.error, KeyError)
    assert ok.status == "sent"


async def test_metrics_are_published_on_the_given_registry(
    telegram: FakeTelegram, clock: VirtualClock
) -> None:
    registry = CollectorRegistry()
    telegram.fail("m1", RetryAfter(1))
    scheduler = scheduler_on(clock, FAST, registry=registry)
    futures = [scheduler.submit(telegram.job(chat, f"m{chat}")) for chat in range(1, 4)]
    futures.append(scheduler.submit(telegram.job(9, "reply", priority="interactive")))
    depth = "botbus_outbound_queue_depth"
    assert registry.get_sample_value(depth, {"lane": "bulk"}) == 3
    assert registry.get_sample_value(depth, {"lane": "interactive"}) == 1
    async with scheduler:
        await outcomes(futures)
    assert registry.get_sample_value(depth, {"lane": "bulk"}) == 0
    assert registry.get_sample_value("botbus_outbound_sends_total", {"lane": "bulk"}) == 3
    assert registry.get_sample_value("botbus_outbound_sends_total", {"lane": "interactive"}) == 1
    assert registry.get_sample_value("botbus_outbound_429_total") == 1
    assert registry.get_sample_value("botbus_outbound_retries_total") == 1


async def test_idle_scheduler_sleeps_instead_of_polling(
    telegram: FakeTelegram, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    wakeups = 0
    scheduler = scheduler_on(clock, FAST)
    original = scheduler._sleep

    async def counting_sleep(timeout: float | None) -> None:
        nonlocal wakeups
        wakeups += 1
        await original(timeout)

    monkeypatch.setattr(scheduler, "_sleep", counting_sleep)
    async with scheduler:
        await outcomes([scheduler.submit(telegram.job(1, "one"))])
        before = wakeups
        await clock.sleep(30.0)
        assert wakeups - before <= 1


async def test_ten_thousand_jobs_to_ten_thousand_chats(
    telegram: FakeTelegram, clock: VirtualClock
) -> None:
    budget = Budget(paid_broadcast=True, paid_per_second=200_000)
    async with scheduler_on(clock, budget, max_in_flight=500) as scheduler:
        futures = [scheduler.submit(telegram.job(chat, f"m{chat}")) for chat in range(10_000)]
        assert scheduler.snapshot().queued["bulk"] == 10_000
        await asyncio.wait_for(asyncio.gather(*futures), 60)
        stats = scheduler.snapshot()
    assert stats.sent_total == 10_000
    assert sorted(c.chat_id for c in telegram.delivered) == list(range(10_000))


async def test_stop_without_drain_does_not_retry_calls_that_were_in_flight(
    telegram: FakeTelegram,
    clock: VirtualClock,
) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def slow_then_fails() -> object:
        started.set()
        await release.wait()
        raise NetworkError("connection reset")

    scheduler = scheduler_on(clock, FAST, backoff_base=0.01)
    await scheduler.start()
    in_flight = scheduler.submit(OutboundJob(1, False, "bulk", slow_then_fails, key="slow"))
    behind = scheduler.submit(telegram.job(1, "behind"))
    await asyncio.wait_for(started.wait(), WAIT)
    stopping = asyncio.create_task(scheduler.stop(drain=False))
    release.set()
    await asyncio.wait_for(stopping, WAIT)
    # The failed call would have been retried; after stop it is withdrawn instead.
    assert in_flight.cancelled() and behind.cancelled()
    assert telegram.delivered == []


async def test_random_mix_keeps_every_chats_order(
    telegram: FakeTelegram, clock: VirtualClock
) -> None:
    rng = random.Random(5)
    submitted: dict[int, list[str]] = {}
    scheduler = scheduler_on(
        clock,
        Budget(global_per_second=2000, per_chat_per_second=200, per_chat_burst=3),
        backoff_base=0.005,
        global_429_chats=1000,  # the random 429s here are per chat
    )
    futures = []
    async with scheduler:
        for i in range(400):
            chat = rng.randrange(25)
            key = f"c{chat}-{i}"
            roll = rng.random()
            if roll < 0.1:
                telegram.fail(key, NetworkError("flaky"))
            elif roll < 0.15:
                telegram.fail(key, RetryAfter(timedelta(milliseconds=20)))
            lane: Priority = "interactive" if rng.random() < 0.3 else "bulk"
            futures.append(scheduler.submit(telegram.job(chat, key, priority=lane)))
            submitted.setdefault(chat, []).append(key)
            if i % 50 == 0:
                await asyncio.sleep(0)  # let some go out while more arrive
        results = await outcomes(futures)
    assert {r.status for r in results} == {"sent"}
    for chat, keys in submitted.items():
        assert telegram.keys(chat) == keys


async def test_a_chats_jobs_go_in_seq_order_whatever_order_they_came_in(
    telegram: FakeTelegram, clock: VirtualClock
) -> None:
    budget = Budget(global_per_second=100, per_chat_per_second=1, per_chat_burst=1)
    async with scheduler_on(clock, budget) as scheduler:
        first = scheduler.submit(telegram.job(5, "seq 10", seq=10))
        await telegram.wait_for_calls(1)  # in flight: nothing overtakes it any more
        later = [
            scheduler.submit(telegram.job(5, "seq 30", seq=30)),
            scheduler.submit(telegram.job(5, "seq 20 reply", seq=20, priority="interactive")),
            scheduler.submit(telegram.job(5, "seq 25", seq=25)),
        ]
        await outcomes([first, *later])
    assert telegram.keys(5) == ["seq 10", "seq 20 reply", "seq 25", "seq 30"]


async def test_a_job_after_one_that_was_not_sent_is_skipped(
    telegram: FakeTelegram, clock: VirtualClock
) -> None:
    telegram.fail("part 1", Forbidden("Forbidden: bot was blocked by the user"))
    telegram.fail("text 1", *[NetworkError("Bad Gateway (502)")] * 3)
    async with scheduler_on(clock, FAST, max_attempts=3) as scheduler:
        refused = scheduler.submit(telegram.job(1, "part 1"))
        part_2 = telegram.job(1, "part 2")
        part_2.after = refused
        skipped = scheduler.submit(part_2)
        gave_up = scheduler.submit(telegram.job(2, "text 1"))
        text_2 = telegram.job(2, "text 2")
        text_2.after = gave_up
        not_sent = scheduler.submit(text_2)
        sent = scheduler.submit(telegram.job(2, "next action"))
        results = await outcomes([refused, skipped, gave_up, not_sent, sent])
    assert [r.status for r in results] == ["refused", "skipped", "gave_up", "skipped", "sent"]
    assert telegram.calls_of("part 2") == [] and telegram.calls_of("text 2") == []


class Throttled(Exception):
    """A rate-limit answer of some other API, for the injected classification."""


class Broken(Exception):
    """A refusal for good of some other API."""


def classify(exc: Exception) -> Verdict:
    """The scheduler's reading of the two errors above."""
    if isinstance(exc, Throttled):
        return Verdict("rate_limited", retry_after=30.0)
    if isinstance(exc, Broken):
        return Verdict("permanent")
    return Verdict("transient")


async def test_error_classification_is_the_one_given(
    telegram: FakeTelegram, clock: VirtualClock
) -> None:
    telegram.fail("throttled", Throttled())
    telegram.fail("broken", Broken())
    telegram.fail("flaky", KeyError("anything else"))
    async with scheduler_on(clock, FAST, classify=classify, backoff_base=0.5) as scheduler:
        started = clock.now()
        futures = [
            scheduler.submit(telegram.job(1, "throttled")),
            scheduler.submit(telegram.job(2, "broken")),
            scheduler.submit(telegram.job(3, "flaky")),
        ]
        throttled, broken, flaky = await outcomes(futures)
        stats = scheduler.snapshot()
    assert (throttled.status, broken.status, flaky.status) == ("sent", "refused", "sent")
    retry = telegram.calls_of("throttled")[1]
    assert retry.at - started >= 30.0  # a 30 s pause on virtual time
    assert stats.rate_limited_total == 1 and stats.retries_total == 2


async def test_virtual_time_makes_every_run_the_same() -> None:
    async def one_run() -> list[tuple[str, float]]:
        virtual = VirtualClock()
        driver = asyncio.create_task(virtual.run())
        fake = FakeTelegram(virtual)
        rng = random.Random(11)
        try:
            async with scheduler_on(virtual, Budget(global_per_second=20)) as scheduler:
                futures = []
                for i in range(60):
                    key = f"m{i}"
                    if rng.random() < 0.2:
                        fake.fail(key, NetworkError("flaky"))
                    lane: Priority = "interactive" if rng.random() < 0.3 else "bulk"
                    futures.append(scheduler.submit(fake.job(rng.randrange(8), key, priority=lane)))
                await outcomes(futures)
        finally:
            driver.cancel()
        return [(c.key, round(c.at - 1000.0, 9)) for c in fake.calls]

    first, second = await one_run(), await one_run()
    assert first == second
    assert first[-1][1] > 2.0  # seconds of pacing and backoff, on virtual time
