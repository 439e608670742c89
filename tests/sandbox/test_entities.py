"""The entity parsers, byte offsets and UTF-16 units, checked directly."""

from __future__ import annotations

import pytest

from botbus.sandbox import ApiError
from botbus.sandbox._entities import finish_entities, parse_formatted


def parse(text: str, mode: str) -> tuple[str, list[dict[str, object]]]:
    plain, entities = parse_formatted(text, mode)
    return plain, finish_entities(plain, entities, detect=False)


def refusal(text: str, mode: str) -> str:
    with pytest.raises(ApiError) as refused:
        parse_formatted(text, mode)
    return refused.value.description.removeprefix("Bad Request: can't parse entities: ")


def test_html_tags_entities_and_nesting() -> None:
    plain, entities = parse(
        '<b>bold <i>both</i></b> &lt;tag&gt; <a href="https://x.org?a=1&amp;b=2">link</a> '
        '<pre><code class="language-python">x = 1</code></pre>',
        "HTML",
    )
    assert plain == "bold both <tag> link x = 1"
    assert entities == [
        {"type": "bold", "offset": 0, "length": 9},
        {"type": "italic", "offset": 5, "length": 4},
        {"type": "text_link", "offset": 16, "length": 4, "url": "https://x.org?a=1&b=2"},
        {"type": "pre", "offset": 21, "length": 5, "language": "python"},
    ]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("<b>x", "Can't find end tag corresponding to start tag b"),
        ("x</b>", "Unexpected end tag at byte offset 1"),
        ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("é<blink>", 'Unsupported start tag "blink" at byte offset 2'),
        ("<b", "Unclosed start tag at byte offset 0"),
        ('<span class="x">y</span>', 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
    ],
)
def test_html_refusals(text: str, reason: str) -> None:
    assert refusal(text, "HTML") == reason


def test_markdown_v2_entities() -> None:
    plain, entities = parse(
        "*b _i_* __u__ ~s~ ||sp|| `c\\`` ```py\nprint()``` [t](http://a.b/\\)) \\*lit\\*",
        "MarkdownV2",
    )
    assert plain == "b i u s sp c` print() t *lit*"
    kinds = [(e["type"], e["offset"], e["length"]) for e in entities]
    assert kinds == [
        ("bold", 0, 3),
        ("italic", 2, 1),
        ("underline", 4, 1),
        ("strikethrough", 6, 1),
        ("spoiler", 8, 2),
        ("code", 11, 2),
        ("pre", 14, 7),
        ("text_link", 22, 1),
    ]
    assert entities[-1]["url"] == "http://a.b/)"
    assert entities[-2]["language"] == "py"


def test_markdown_v2_blockquote() -> None:
    plain, entities = parse(">quoted\n>lines\nafter", "MarkdownV2")
    assert plain == "quoted\nlines\nafter"
    assert entities == [{"type": "blockquote", "offset": 0, "length": 12}]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1.5", "Character '.' is reserved and must be escaped with the preceding '\\'"),
        ("a-b", "Character '-' is reserved and must be escaped with the preceding '\\'"),
        ("*open", "Can't find end of Bold entity at byte offset 0"),
        ("ñ _it", "Can't find end of Italic entity at byte offset 3"),
        ("*b _i* x_", "Can't find end of Italic entity at byte offset 3"),
        ("`code", "Can't find end of Code entity at byte offset 0"),
        ("[t](http://x", "Can't find end of a URL at byte offset 3"),
    ],
)
def test_markdown_v2_refusals(text: str, reason: str) -> None:
    assert refusal(text, "MarkdownV2") == reason


def test_legacy_markdown() -> None:
    plain, entities = parse("*b* _i_ `c` [t](http://u)", "Markdown")
    assert plain == "b i c t"
    assert [e["type"] for e in entities] == ["bold", "italic", "code", "text_link"]
    assert refusal("*b", "Markdown") == "Can't find end of the entity starting at byte offset 0"


def test_auto_detected_entities_skip_code() -> None:
    text = "/help@bot_name see https://x.org #tag @someone <code>/notacommand</code>"
    plain, raw = parse_formatted(text, "HTML")
    found = finish_entities(plain, raw)
    assert [e["type"] for e in found] == ["bot_command", "url", "hashtag", "mention", "code"]


def test_unknown_parse_mode_is_refused() -> None:
    with pytest.raises(ApiError, match="unsupported parse_mode"):
        parse_formatted("x", "BBCode")
