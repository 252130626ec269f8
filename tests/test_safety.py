"""The safety defence (FGSD): sentence scores, the refusal, decoding with it on, and calibration."""

from __future__ import annotations

import json
import math

import pytest
from PIL import Image

from core.engine.chat import prepare_image
from core.engine.decoding import DecodeOptions, decode
from core.engine.judge import JudgeItem, JudgeSettings, judge_sentences
from core.engine.safety import (DEFAULT_REFUSAL, EXAMPLE_LABELLED, SafetySettings, calibrate, check_answer, choose_threshold,
                                format_verdict, log_odds, main, probability, read_labelled)

ANSWER = "A red circle at the top. A blue square at the bottom."


def test_threshold_as_probability_or_log_odds():
    assert SafetySettings.from_probability(0.5).threshold == 0
    assert SafetySettings.from_probability(0.9).threshold == pytest.approx(math.log(9))
    assert SafetySettings(threshold=math.log(3)).probability == pytest.approx(0.75)
    assert probability(log_odds(0.2)) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        SafetySettings.from_probability(1.0)
    with pytest.raises(ValueError, match="finite log-odds"):
        SafetySettings(threshold=math.inf)


def test_sentence_scores_are_debiased_safety_log_odds(tiny_llava):
    image = Image.new("RGB", (32, 32), "red")
    verdict = check_answer(tiny_llava, image, ANSWER, SafetySettings(threshold=0.0, alpha=2.0))
    judged = judge_sentences(tiny_llava, [prepare_image(tiny_llava.processor, image)],
                             [JudgeItem(0, "A red circle at the top."), JudgeItem(0, "A blue square at the bottom.")],
                             JudgeSettings(kind="log-odds", template="safety"))
    assert [s.text for s in verdict.sentences] == ["A red circle at the top.", "A blue square at the bottom."]
    for sentence, v in zip(verdict.sentences, judged):
        assert sentence.raw == pytest.approx(v.raw["log-odds"], abs=1e-4)
        assert sentence.score == pytest.approx(3 * v.raw["log-odds"] - 2 * v.blind["log-odds"], abs=1e-4)
        assert sentence.probability == pytest.approx(probability(sentence.score))
    top = max(s.score for s in verdict.sentences)
    assert verdict.tripped.score == top
    for threshold, refused in ((top - 1e-3, True), (top + 1e-3, False)):
        again = check_answer(tiny_llava, image, ANSWER, SafetySettings(threshold=threshold, alpha=2.0))
        assert again.refused is refused
    assert ("Refused" in format_verdict(again)) is False and verdict.tripped.text in format_verdict(verdict)


def test_decoding_with_the_defence_refuses_or_passes(tiny_llava):
    image = Image.new("RGB", (32, 32), "blue")
    plain = decode(tiny_llava, image, "Describe the image.", "greedy", JudgeSettings(), max_new_tokens=12)
    refused = decode(tiny_llava, image, "Describe the image.", "greedy", JudgeSettings(), max_new_tokens=12,
                     options=DecodeOptions(safety=SafetySettings(threshold=-1e6)))
    passed = decode(tiny_llava, image, "Describe the image.", "greedy", JudgeSettings(), max_new_tokens=12,
                    options=DecodeOptions(safety=SafetySettings(threshold=1e6)))
    assert plain.text and plain.safety is None
    assert (refused.text, refused.unguarded, refused.safety.refused) == (DEFAULT_REFUSAL, plain.text, True)
    assert (passed.text, passed.unguarded, passed.safety.refused) == (plain.text, "", False)
    assert [s.text for s in passed.safety.sentences] == [n.text for n in plain.nodes]


def test_choose_threshold_hand_computed():
    scores, harmful = [-2.0, -1.0, 0.5, 1.0, 3.0], [False, False, True, False, True]
    # cuts halfway between distinct scores: -3, -1.5, -0.25, 0.75, 2, 4
    assert choose_threshold(scores, harmful, 0.0) == 2.0  # above every harmless score
    assert choose_threshold(scores, harmful, 1 / 3) == -0.25  # one harmless answer (1.0) of 3 may be refused
    assert choose_threshold(scores, harmful, 0.99) == -1.5  # 2 of 3 harmless refused; -3 would refuse all 3
    assert choose_threshold(scores, harmful, 0.0) > max(s for s, h in zip(scores, harmful) if not h)


def test_read_labelled_checks_its_input(tmp_path):
    examples = read_labelled(EXAMPLE_LABELLED)
    assert (sum(e.harmful for e in examples), len(examples)) == (6, 12)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"answer": "fine", "harmful": "no"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1 needs"):
        read_labelled(bad)
    bad.write_text('{"answer": "fine", "harmful": false}\n')
    with pytest.raises(ValueError, match="at least one harmful and one harmless"):
        read_labelled(bad)


def test_calibrate_and_its_cli(tiny_llava, tiny_llava_dir, tmp_path, monkeypatch, capsys):
    examples = read_labelled(EXAMPLE_LABELLED)
    result = calibrate(tiny_llava, examples, alpha=1.0, max_false_refusals=0.5)
    grey = None
    expected = [check_answer(tiny_llava, grey, e.answer, SafetySettings()).max_score for e in examples[:2]]
    assert result.scores[:2] == pytest.approx(expected, abs=1e-4)
    assert result.false_refusals <= 0.5
    harmful = [s for s, e in zip(result.scores, examples) if e.harmful]
    assert result.refused_harmful == sum(s >= result.threshold for s in harmful) / 6
    monkeypatch.setenv("SELFJUDGE_DEVICE", "cpu")
    out = tmp_path / "calibration.json"
    main(["--model", str(tiny_llava_dir), "--max-false-refusals", "0.5", "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["threshold"] == pytest.approx(result.threshold, abs=1e-3)
    assert "threshold: log-odds" in capsys.readouterr().out
