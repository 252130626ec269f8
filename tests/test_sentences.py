"""Tests for core/engine/sentences.py: the documented sentence rule."""

from __future__ import annotations

from core.engine.sentences import split_sentences


def test_split_sentences():
    assert split_sentences("A red circle. A blue star!  Is it? yes") == ["A red circle.", "A blue star!", "Is it?",
                                                                         "yes"]
