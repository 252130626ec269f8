"""Tests for bench/proposal_choice.py: labels of proposals and the rules' choice on one proposal set."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

from core.engine.decoding import DecodeNode, DecodeResult

SPEC = importlib.util.spec_from_file_location("proposal_choice",
                                              Path(__file__).parent.parent / "bench" / "proposal_choice.py")
proposal_choice = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(proposal_choice)

PRESENT = {("red", "circle"), ("blue", "square")}


def test_labels_follow_the_scene_and_what_was_said():
    label = proposal_choice.proposal_label
    assert label("A red circle is on the left.", set(), PRESENT) == "new"
    assert label("A red circle is on the left.", {("red", "circle")}, PRESENT) == "repeat"
    assert label("A green star is on the left.", {("red", "circle")}, PRESENT) == "hallucinated"
    assert label("A red circle and a green star.", set(), PRESENT) == "hallucinated"
    assert label("The picture is plain.", set(), PRESENT) == "none"


def test_debiasing_turns_the_choice_from_a_prior_favoured_proposal():
    favoured = {"label": "hallucinated", "raw": 3.0, "blind": 3.0, "likelihood": -0.2}
    seen = {"label": "new", "raw": 2.5, "blind": 0.5, "likelihood": -0.3}
    assert proposal_choice.pick([favoured, seen], 0.0, 0.0) is favoured  # raw: 3.0 > 2.5
    assert proposal_choice.pick([favoured, seen], 1.0, 0.0) is seen  # debiased: 3.0 < 4.5
    # A large likelihood weight lets the model's own preference decide; ties keep the first.
    assert proposal_choice.pick([favoured, seen], 1.0, 20.0) is favoured
    assert proposal_choice.pick([seen, dict(seen)], 1.0, 2.0) is seen


def test_step_sets_label_each_step_against_the_chosen_path():
    def node(step, text, parent, chosen, raw=1.0):
        return DecodeNode(step=step, text=text, score=0.0, chosen=chosen, parent=parent, raw=raw, blind=0.0,
                          likelihood=-0.1, raw_log_odds=0.5, log_odds=0.25)  # debiased at alpha 1: blind 0.75
    nodes = [node(0, "A red circle is on the left.", None, True),
             node(0, "A green star is on the left.", None, False),
             node(1, "A red circle is on the right.", 0, False),
             node(1, "A blue square is on the right.", 0, True),
             node(1, "", 0, False)]
    result = DecodeResult(text="", strategy="debiased-judged", nodes=nodes)
    sets = proposal_choice.step_sets(result, PRESENT)
    assert [[p["label"] for p in s] for s in sets] == [["new", "hallucinated"], ["repeat", "new"]]
    assert not math.isnan(sets[0][0]["raw"])
    assert (sets[1][1]["raw_log_odds"], sets[1][1]["blind_log_odds"]) == (0.5, 0.75)
