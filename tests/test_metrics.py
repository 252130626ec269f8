"""Tests for core/shapes/metrics.py: the parser on hand-written cases and CHAIR by hand."""

from __future__ import annotations

import pytest

from core.shapes.metrics import chair, hallucination_kind, parse_objects, sentence_is_hallucinated


@pytest.mark.parametrize("text,expected", [
    ("A large yellow star is on the left. A small blue heart is at the top.",
     [("yellow", "star"), ("blue", "heart")]),
    ("Two red circles and a green box.", [("red", "circle"), ("green", "square")]),  # plural, synonym
    ("I see a violet disk.", [("purple", "circle")]),
    ("The red and blue circles are small.", [("red", "circle"), ("blue", "circle")]),
    ("There is no red circle.", []),
    ("There are no red circles or blue stars.", []),
    ("There is no red circle, but there is a blue star.", [("blue", "star")]),
    ("It isn't a yellow star, it is an orange cross.", [("orange", "cross")]),
    ("There is a red, small circle.", [("red", "circle")]),
    ("A red circle. Another red circle!", [("red", "circle")]),
    ("Nothing here.", []),
])
def test_parse_objects(text, expected):
    assert parse_objects(text) == expected


def test_chair_by_hand():
    truths = [{("red", "circle"), ("blue", "star")}, {("yellow", "star")}]
    captions = ["A red circle and a green circle.", "A yellow star. A blue heart."]
    result = chair(captions, truths)
    # mentions: 2 + 2 = 4; hallucinated: green circle, blue heart = 2; both captions bad
    assert result.chair_i == pytest.approx(0.5)
    assert result.chair_s == pytest.approx(1.0)
    assert result.recall == pytest.approx(2 / 3)
    assert result.kinds == {"partner": 1, "colour": 1, "shape": 0, "other": 0}
    assert result.mean_sentences == pytest.approx(1.5)


def test_hallucination_kinds():
    present = {("yellow", "star"), ("red", "square")}
    assert hallucination_kind(("blue", "heart"), present) == "partner"
    assert hallucination_kind(("green", "star"), present) == "colour"
    assert hallucination_kind(("red", "circle"), present) == "shape"
    assert hallucination_kind(("purple", "heart"), present) == "other"


def test_sentence_is_hallucinated():
    truth = {("red", "circle")}
    assert sentence_is_hallucinated("A red circle is here.", truth) is False
    assert sentence_is_hallucinated("A blue circle is here.", truth) is True
    assert sentence_is_hallucinated("It is on the left.", truth) is None
