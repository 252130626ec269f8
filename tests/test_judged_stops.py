"""Tests for bench/judged_stops.py: each judged answer is sorted by how it ended."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from core.engine.decoding import DecodeNode, DecodeResult
from core.engine.judge import JudgeSettings
from core.shapes.evaluate_decoding import decode_all
from core.shapes.world import WorldOptions

SPEC = importlib.util.spec_from_file_location("judged_stops", Path(__file__).parent.parent / "bench" / "judged_stops.py")
judged_stops = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(judged_stops)

PRESENT = {("red", "circle"), ("blue", "square")}
FIRST = "A red circle is on the left."


def _node(step, text, chosen=False, accepted=True, parent=None, raw_log_odds=0.5, log_odds=0.5):
    return DecodeNode(step=step, text=text, score=0.0, chosen=chosen, parent=parent, accepted=accepted,
                      raw_log_odds=raw_log_odds, log_odds=log_odds)


def _answer(*last_step: DecodeNode, first_chosen: int = 0) -> DecodeResult:
    first = [_node(0, FIRST, chosen=first_chosen == 0), _node(0, FIRST, chosen=first_chosen == 1)]
    return DecodeResult(text=FIRST, strategy="debiased-judged", nodes=first + list(last_step))


def test_end_reasons_follow_the_last_step():
    reason = judged_stops.end_reason
    complete = DecodeResult(text=FIRST + " A blue square is above it.", strategy="debiased-judged",
                            nodes=[_node(0, FIRST, chosen=True), _node(1, "A blue square is above it.", chosen=True)])
    assert reason(complete, PRESENT) == ("complete", [])
    assert reason(_answer(_node(1, "It is plain.", chosen=True)), PRESENT)[0] == "the chosen sentence ended it"
    assert reason(_answer(_node(1, "A blue square is on the right.")), PRESENT)[0] == \
        "the model's own end (stop_probability)"
    assert reason(_answer(_node(1, ""), _node(1, "")), PRESENT)[0] == "every proposal was to end"
    dropped = _node(1, "A blue square is on the right.", accepted=False, raw_log_odds=-0.4, log_odds=-1.1)
    hallucinated = _node(1, "A green star is on the right.", accepted=False)
    assert reason(_answer(hallucinated, dropped), PRESENT) == \
        ("every proposal rejected, a faithful new one among them", [dropped])
    # A repeat of a named object, or a true sentence bundled with an absent object, is not a faithful new one.
    repeat = _node(1, "A red circle is at the top.", accepted=False)
    mixed = _node(1, "A blue square and a green star.", accepted=False)
    assert reason(_answer(repeat, mixed), PRESENT)[0] == "every proposal rejected, none faithful and new"


def test_summary_counts_answers_objects_and_the_dropped_log_odds():
    scenes = [SimpleNamespace(names=lambda: PRESENT)] * 3
    dropped = _node(1, "A blue square is on the right.", accepted=False, raw_log_odds=-0.4, log_odds=-1.1)
    flipped = _node(1, "A blue square is at the top.", accepted=False, raw_log_odds=0.3, log_odds=-0.2)
    results = [_answer(dropped), _answer(flipped, first_chosen=1), _answer(_node(1, ""))]
    greedy = [DecodeResult(text=FIRST + " A blue square.", strategy="greedy", nodes=[])] * 2 + [results[0]]
    summary = judged_stops.summarise(results, scenes, reject_below=0.0, greedy=greedy)
    assert summary["greedy"] == {"answers": 3, "complete": 2, "unnamed objects": 1}
    row = summary["rows"]["every proposal rejected, a faithful new one among them"]
    assert row == {"answers": 2, "unnamed objects": 2, "kept a later proposal": 1}
    assert summary["rows"]["every proposal was to end"]["answers"] == 1
    dropped_stats = summary["rejected_faithful"]
    assert (dropped_stats["answers"], dropped_stats["raw_judge_also_rejects"]) == (2, 1)
    assert dropped_stats["median_raw_log_odds"] == pytest.approx(-0.05)
    assert dropped_stats["median_debiased_log_odds"] == pytest.approx(-0.65)
    table = judged_stops.format_table(summary)
    assert "| every proposal was to end | 1 | 33.3% | 1 | 0 |" in table
    assert "the raw judge alone would also reject 1 of 2" in table
    assert "greedy on the same scenes: 2 of 3 answers complete, 1 objects left unnamed" in table


def test_every_decoded_answer_gets_one_reason(tiny_llava):
    scenes = [WorldOptions().scene(seed) for seed in range(4_000_000, 4_000_003)]
    options = SimpleNamespace(likelihood_weight=2.0, reject_below=0.0, batch=3, k=2, max_new_tokens=12, seed=0)
    results = decode_all(tiny_llava, scenes, "debiased-judged", JudgeSettings(alpha=1.0), options)
    summary = judged_stops.summarise(results, scenes, 0.0)
    assert sum(r["answers"] for r in summary["rows"].values()) == 3
    assert summary["rejected_faithful"]["answers"] == summary["rows"][
        "every proposal rejected, a faithful new one among them"]["answers"]


def test_cli_prints_the_summary_as_json_and_refuses_no_scenes(tiny_llava_dir, capsys):
    judged_stops.main(["--model", str(tiny_llava_dir), "--n", "2", "--k", "2", "--reject-below", "none", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert sum(r["answers"] for r in summary["rows"].values()) == 2 and summary["greedy"]["answers"] == 2
    # Nothing is rejected without a threshold, so no answer ends on an all-rejected step.
    assert summary["rows"]["every proposal rejected, a faithful new one among them"]["answers"] == 0
    assert summary["rows"]["every proposal rejected, none faithful and new"]["answers"] == 0
    with pytest.raises(SystemExit):
        judged_stops.main(["--model", str(tiny_llava_dir), "--n", "0"])
