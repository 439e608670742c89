"""English and Spanish words too common to search for.

A natural question ("how do I delete my data", "¿cómo borro mis datos?")
is mostly such words; requiring all of them to occur would find nothing.
Written normalised (lower case, no accents), as query words are compared.
A query made only of them keeps them: "to be or not to be" still searches.
"""

from __future__ import annotations


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


ENGLISH = _words(
    """
    a about after all also am an and any are as at be been being but by can could did do
    does doing done for from get gets got had has have having he her here hers him his how
    i if in into is it its itself just let me might more most much must my myself no nor
    not of off on once only or other our ours out over own please same she should so some
    such than that the their theirs them then there these they this those through to too
    under until up us very was way we were what when where which while who whom why will
    with would you your yours yourself
    """
)

SPANISH = _words(
    """
    a al algo algun alguna algunas alguno algunos ante antes como con contra cual cuales
    cuando de del desde donde durante e el ella ellas ellos en entre era eran es esa esas
    ese eso esos esta estan estas este esto estos estoy fue fueron ha haber habia han has
    hasta hay he la las le les lo los mas me mi mis mucho muy nada ni no nos nosotros o os
    otra otro para pero poco por porque puede pueden puedo que quien se sea ser si sin sobre
    son su sus tambien te tengo tiene tienen todo todos tu tus un una uno unos usted y ya yo
    hago hacer hace quiero saber decir dime cosa cosas
    """
)

STOP_WORDS = ENGLISH | SPANISH


def is_stop_word(word: str) -> bool:
    """True if ``word`` (normalised) is an English or Spanish stop word."""
    return word in STOP_WORDS
