"""The mood chart (a PNG drawn with matplotlib's Agg backend) and its summary line.

Figures are built with the object API (``Figure`` + ``FigureCanvasAgg``), not
pyplot: no global state, so concurrent handlers cannot draw on each other's
figure, and no display is needed.
"""

from __future__ import annotations

import io
from typing import Any, Protocol

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import DateFormatter, date2num
from matplotlib.figure import Figure

from services.sentiment.aggregate import Bucket, Period, Point

CHART_SIZE = (8.0, 3.6)  # inches
CHART_DPI = 100
_COLOR_POS = "#2e7d32"
_COLOR_NEG = "#c62828"
_COLOR_COUNT = "#b0bec5"
_DATE_FORMAT: dict[Period, str] = {"day": "%H:%M", "week": "%a %Hh", "month": "%d %b"}


class Translate(Protocol):
    """A text of the sentiment catalogue in the reader's language (``ctx.t`` of the SDK)."""

    def __call__(self, msg_id: str, /, **values: Any) -> str:
        """Message ``msg_id`` of ``locales/<language>.toml``, filled with ``values``."""


def period_name(period: Period, t: Translate) -> str:
    """'the last 24 hours' and friends, in the reader's language."""
    if period == "day":
        return t("period_day")
    if period == "week":
        return t("period_week")
    return t("period_month")


def total_of(points: list[Point]) -> Bucket:
    """All the points' counts added up."""
    total = Bucket()
    for point in points:
        total.merge(point.bucket)
    return total


def mood_word(mean: float, t: Translate) -> str:
    """A word for a mean compound value."""
    if mean >= 0.35:
        return t("mood_very_positive")
    if mean >= 0.05:
        return t("mood_positive")
    if mean > -0.05:
        return t("mood_neutral")
    if mean > -0.35:
        return t("mood_negative")
    return t("mood_very_negative")


def summary_line(points: list[Point], period: Period, subject: str, t: Translate) -> str:
    """One line: how many messages, the overall mood and its mix, over ``period``."""
    total = total_of(points)
    when = period_name(period, t)
    if total.mean is None:
        return t("summary_empty", subject=subject, when=when)
    mean = total.mean
    pos, neu, neg = (round(100 * x / total.n) for x in (total.pos, total.neu, total.neg))
    word = mood_word(mean, t)
    return t(
        "summary",
        subject=subject,
        when=when,
        word=word,
        mean=mean,
        n=total.n,
        pos=pos,
        neu=neu,
        neg=neg,
    )


def render_chart(points: list[Point], period: Period, title: str, t: Translate) -> bytes:
    """A PNG of the mean mood per point (line) over the message count (bars)."""
    figure = Figure(figsize=CHART_SIZE, dpi=CHART_DPI)
    FigureCanvasAgg(figure)
    mood_axis = figure.add_subplot(1, 1, 1)
    count_axis = mood_axis.twinx()

    # Matplotlib's date unit: days since its epoch, as floats (date2num has no
    # annotations in matplotlib's stubs).
    starts = [float(date2num(p.start)) for p in points]  # type: ignore[no-untyped-call]
    means = [p.bucket.mean for p in points]
    counts = [p.bucket.n for p in points]
    step = starts[1] - starts[0] if len(starts) > 1 else None

    # Bars behind the line: the count gives the mood its weight.
    if step is not None:
        count_axis.bar(
            starts, counts, width=step * 0.8, color=_COLOR_COUNT, alpha=0.5, align="edge"
        )
    count_axis.set_ylabel(t("chart_messages_axis"))
    count_axis.set_ylim(0, max([*counts, 1]) * 1.3)
    mood_axis.set_zorder(count_axis.get_zorder() + 1)
    mood_axis.patch.set_visible(False)

    xs = [s for s, m in zip(starts, means, strict=True) if m is not None]
    ys = [m for m in means if m is not None]
    if xs:
        mood_axis.plot(xs, ys, color="#263238", marker="o", markersize=3, linewidth=1.5)
        mood_axis.fill_between(
            xs, ys, 0, where=[y >= 0 for y in ys], color=_COLOR_POS, alpha=0.3, interpolate=True
        )
        mood_axis.fill_between(
            xs, ys, 0, where=[y < 0 for y in ys], color=_COLOR_NEG, alpha=0.3, interpolate=True
        )
    else:
        mood_axis.text(
            0.5,
            0.5,
            t("chart_no_messages_yet"),
            transform=mood_axis.transAxes,
            ha="center",
            va="center",
            color="#78909c",
        )
    mood_axis.axhline(0, color="#90a4ae", linewidth=0.8)
    mood_axis.set_ylim(-1.05, 1.05)
    mood_axis.set_ylabel(t("chart_mood_axis"))
    if step is not None:
        mood_axis.set_xlim(starts[0], starts[-1] + step)
    # DateFormatter has no annotations in matplotlib's stubs.
    formatter = DateFormatter(_DATE_FORMAT[period])  # type: ignore[no-untyped-call]
    mood_axis.xaxis.set_major_formatter(formatter)
    mood_axis.set_title(f"{title} — {period_name(period, t)} (UTC)", fontsize=11)
    mood_axis.grid(axis="y", alpha=0.3)
    figure.autofmt_xdate()
    figure.tight_layout()

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
