"""Text repairs applied to every product: HTML stripped, unicode and whitespace normalised."""

from __future__ import annotations

import html
import re
import unicodedata

# An HTML tag, closed or (as in the real 2018 dumps' '<span class="a-size-medium ...') cut off.
_TAG = re.compile(r"<[^<>]*(?:>|$)")
_CONTROL = dict.fromkeys(c for c in range(32) if chr(c) not in "\t\n\r")
_FIRST_SENTENCE = re.compile(r"(.+?[.!?])(\s|$)")


def normalise_text(text: str) -> str:
    """NFKC unicode, no control characters, single spaces."""
    # NFKC leaves ASCII unchanged, and printable ASCII has no control characters: most
    # strings of a dump skip both. ``str.split()`` splits on exactly the characters that
    # ``\s`` matches (both use ``str.isspace``), so the join collapses whitespace like a regex.
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    if not text.isprintable():
        text = text.translate(_CONTROL)
    return " ".join(text.split())


def strip_html(text: str) -> tuple[str, bool]:
    """Remove tags and unescape entities; return the text and whether anything was stripped."""
    if "<" not in text and "&" not in text:
        return text, False
    stripped = _TAG.sub(" ", text)
    stripped = html.unescape(stripped)
    # Entities may have encoded tags ('&lt;b&gt;'): strip once more after unescaping.
    stripped = _TAG.sub(" ", stripped)
    return stripped, stripped != text


def clean_text(text: str) -> tuple[str, bool]:
    """Strip HTML and normalise; return the clean text and whether HTML was removed."""
    if not text:
        return "", False
    stripped, had_html = strip_html(text)
    return normalise_text(stripped), had_html


def first_sentence(text: str, max_chars: int = 120) -> str:
    """A short title-like prefix of a description."""
    match = _FIRST_SENTENCE.match(text)
    sentence = match.group(1) if match else text
    if len(sentence) > max_chars:
        sentence = sentence[:max_chars].rsplit(" ", 1)[0]
    return sentence.strip()
