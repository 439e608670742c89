"""Pure logic of the alerts service: reminder parsing, time zones, tokens, fan-out plans."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from botbus.models import Alert
from services.alerts.channels import check_channel_name, hash_token, new_channel
from services.alerts.fanout import alert_key, format_alert, plan_actions
from services.alerts.reminders import parse_reminder, resolve_timezone
from services.alerts.store import Subscriber
from services.alerts.texts import UserInputError

NOW = datetime(2026, 3, 28, 17, 0, tzinfo=UTC)  # 18:00 in Madrid (CET, UTC+1)


def test_remind_in_accepts_compound_delays() -> None:
    spec = parse_reminder("in 2h30m take the cake out", timezone="UTC", now=NOW)
    assert spec.kind == "once"
    assert spec.due == NOW + timedelta(hours=2, minutes=30)
    assert spec.text == "take the cake out"
    assert spec.schedule_headers() == {"Nats-Schedule": "@at 2026-03-28T19:30:00Z"}


def test_remind_in_spanish_keywords() -> None:
    spec = parse_reminder("en 10m llamar a mamá", timezone="UTC", now=NOW)
    assert spec.due == NOW + timedelta(minutes=10)
    assert spec.text == "llamar a mamá"


def test_remind_at_later_today_in_users_zone() -> None:
    spec = parse_reminder("at 18:30 call Ana", timezone="Europe/Madrid", now=NOW)
    # 18:30 Madrid is 17:30 UTC the same day.
    assert spec.due == datetime(2026, 3, 28, 17, 30, tzinfo=UTC)


def test_remind_at_past_time_means_tomorrow_across_dst() -> None:
    # 08:00 has passed in Madrid; tomorrow (29 March) is summer time, UTC+2.
    spec = parse_reminder("a las 08:00 gimnasio", timezone="Europe/Madrid", now=NOW)
    assert spec.due == datetime(2026, 3, 29, 6, 0, tzinfo=UTC)


def test_remind_every_day_is_a_cron_in_the_users_zone() -> None:
    spec = parse_reminder("every day 08:05 stand-up", timezone="America/New_York", now=NOW)
    assert spec.kind == "daily"
    assert spec.schedule_headers() == {
        "Nats-Schedule": "0 5 8 * * *",
        "Nats-Schedule-Time-Zone": "America/New_York",
    }
    assert parse_reminder("cada día 8:05 x", timezone="UTC", now=NOW).kind == "daily"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ("", "Usage"),
        ("tomorrow buy milk", "Usage"),
        ("in 10 minutes tea", "not a delay"),
        ("in 0m tea", "more than 0"),
        ("in 400d tea", "at most 366 days"),
        ("at 25:00 tea", "not a time"),
        ("at 18:30", "Add the text"),
        ("every day noon tea", "not a time"),
        ("in 5m " + "x" * 1001, "too long"),
    ],
)
def test_bad_reminders_get_a_clear_usage_error(args: str, fragment: str) -> None:
    with pytest.raises(UserInputError) as caught:
        parse_reminder(args, timezone="UTC", now=NOW)
    assert fragment in caught.value.text.pick("en")
    assert caught.value.text.pick("es") != caught.value.text.pick("en")  # a Spanish version too


def test_timezone_is_validated_and_canonicalised() -> None:
    assert resolve_timezone("europe/madrid") == "Europe/Madrid"
    for bad in ("Mars/Olympus", "../etc/passwd", ""):
        with pytest.raises(UserInputError, match="Unknown time zone"):
            resolve_timezone(bad)


def test_channel_names_and_tokens() -> None:
    assert check_channel_name("Weather_Madrid") == "weather_madrid"
    with pytest.raises(UserInputError, match="not a valid channel name"):
        check_channel_name("bad-name!")
    record, token = new_channel("news", "  Breaking   news ", created_by=7)
    assert record.description == "Breaking news"
    assert token not in record.model_dump_json()  # only the digest is stored
    assert record.token_sha256 == hash_token(token)
    assert record.token_matches(token)
    assert not record.token_matches(token + "x")
    with pytest.raises(UserInputError, match="Add a description"):
        new_channel("news", "   ", created_by=7)


def test_fanout_plan_is_one_bulk_action_per_chat_and_resumes_after_cursor() -> None:
    alert = Alert(title="Storm <warning>", text="Stay in", severity="critical")
    subs = [Subscriber(-100, "en"), Subscriber(5, "es"), Subscriber(9, "en")]
    actions = list(plan_actions("42", "weather", alert, subs))
    assert [a.chat_id for a in actions] == [-100, 5, 9]
    assert {a.priority for a in actions} == {"bulk"}
    assert actions[1].idempotency_key == alert_key("42", 5) == "alert:42:5"
    assert "Storm &lt;warning&gt;" in actions[0].text  # HTML-escaped title
    assert "/unsubscribe weather" in actions[0].text
    assert "dejar de recibirlo" in actions[1].text
    resumed = list(plan_actions("42", "weather", alert, subs, after=5))
    assert [a.chat_id for a in resumed] == [9]


def test_alert_text_shows_url_and_severity() -> None:
    text = format_alert("ops", Alert(title="Disk", url="https://x.test/a?b=1&c=2"), "en")
    assert "ℹ️" in text
    assert "https://x.test/a?b=1&amp;c=2" in text


def test_alerts_are_framed_in_the_subscribers_language_or_english() -> None:
    alert = Alert(title="Disk")
    assert "para dejar de recibirlo: /unsubscribe ops" in format_alert("ops", alert, "es")
    # A language alerts has no file for (the gateway may have one): English, not an error.
    assert "stop with /unsubscribe ops" in format_alert("ops", alert, "fr")
