"""Splitting a text into sentences: the unit the judge scores and the metrics count."""

from __future__ import annotations

import re


def split_sentences(text: str) -> list[str]:
    """Sentences of a text: split after . ! ? followed by space or end (the documented rule)."""
    parts = re.split(r"(?<=[.!?])\s+", text.strip())
    return [p.strip() for p in parts if p.strip()]
