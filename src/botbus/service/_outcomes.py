"""What a handler's work came to: :class:`Ack`, :class:`Retry`, :class:`Reject`, :class:`Refuse`.

A handler returns one of these (or a ``str``, sent as the reply and acked,
or ``None``, which is :class:`Ack`). Code deep inside a handler may also
``raise`` one, e.g. ``raise Refuse(...)`` from an argument parser: the SDK
treats a raised outcome exactly as a returned one. What each outcome does to
the message is the SDK's policy (``botbus.service._policy``):

==============  ==============================================================
``Ack()``       done: the message is acked
``Retry(d)``    try again in ``d`` seconds (the service's retry delays when
                ``None``); after ``max_deliveries`` it is dead-lettered
``Reject(r)``   no retry can fix it: dead-lettered now with reason ``r``;
                a user waiting for an answer gets "something went wrong"
``Refuse(t)``   a user mistake: ``t`` is the answer, the message is acked,
                and the service's stats do not count it as an error
==============  ==============================================================

Any other exception a handler raises counts as ``Retry()``.
"""

from __future__ import annotations

__all__ = ["Ack", "HandlerResult", "Outcome", "Refuse", "Reject", "Retry"]


class Outcome(Exception):
    """Base of the four outcomes; returned by a handler, or raised from deep inside one."""

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(vars(self).items()))))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class Ack(Outcome):
    """The work is done: ack the message."""

    def __init__(self) -> None:
        super().__init__("ack")


class Retry(Outcome):
    """Hand the message back, to be delivered again after ``delay`` seconds.

    ``delay=None`` uses the service's ``retry_delays``. A message retried
    ``max_deliveries`` times is dead-lettered like a :class:`Reject`.
    """

    def __init__(self, delay: float | None = None, reason: str = "retry requested") -> None:
        if delay is not None and delay < 0:
            raise ValueError(f"Retry delay must be >= 0 seconds, not {delay}")
        super().__init__(reason)
        self.delay = delay
        self.reason = reason


class Reject(Outcome):
    """Give up on the message: record it on the dead letters with ``reason``.

    A user waiting for an answer (a command or a button press) is told that
    something went wrong; ``reason`` is for operators, never shown to users.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Refuse(Outcome):
    """A user mistake (bad arguments, not allowed...): answer ``text`` and ack.

    Not retried, and not counted as an error in the service's statistics.
    On a button press the text is shown as the press's answer.
    """

    def __init__(self, text: str) -> None:
        if not text:
            raise ValueError("Refuse needs a text telling the user what to do")
        super().__init__(text)
        self.text = text


HandlerResult = Outcome | str | None
"""What a handler may return: an outcome, a reply text (then acked), or None (acked)."""
