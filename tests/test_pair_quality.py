"""Tests for bench/pair_quality.py: the rankings of the same candidates that the pairs come from."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from core.engine.judge import ScoredCandidate, SentenceScore

SPEC = importlib.util.spec_from_file_location("pair_quality", Path(__file__).parent.parent / "bench" / "pair_quality.py")
pair_quality = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(pair_quality)


def candidate(text: str, scores: list[tuple[float, float]]) -> ScoredCandidate:
    sentences = [SentenceScore(text=f"s{i}", raw=raw, blind=blind, debiased=0.0, token_start=0, token_end=1)
                 for i, (raw, blind) in enumerate(scores)]
    return ScoredCandidate(text=text, sentences=sentences, tokens=[], mean_raw=0.0, mean_blind=0.0,
                           mean_debiased=0.0, min_debiased=0.0, likelihood=0.0)


def test_keys_are_means_and_minima_of_raw_and_debiased_sentence_scores():
    keys = pair_quality.ranking_keys(candidate("a", [(4.0, 1.0), (2.0, 3.0)]), alpha=1.0)
    # debiased = 2 * raw - blind: 7.0 and 1.0
    assert keys == {"mean-raw": 3.0, "mean-debiased": 4.0, "min-raw": 2.0, "min-debiased": 1.0}


def test_the_worst_sentence_decides_under_min_rankings():
    # One prior-favoured claim (raw high, blind as high) in an otherwise well-judged answer.
    spoiled = candidate("A red circle. A blue heart.", [(8.0, 5.0), (5.0, 5.0)])
    plain = candidate("A red circle.", [(6.0, 5.0)])
    def key(name):
        return lambda c: pair_quality.ranking_keys(c, 1.0)[name]
    assert pair_quality.best_and_worst([spoiled, plain], key("mean-debiased"))[0] is spoiled  # 8.0 > 7.0
    assert pair_quality.best_and_worst([spoiled, plain], key("min-debiased"))[0] is plain  # 5.0 < 7.0
    assert pair_quality.best_and_worst([plain, candidate("A red circle.", [(1.0, 0.0)])], key("min-raw")) is None


def test_hallucinated_counts_absent_claims():
    assert pair_quality.hallucinated("A red circle and a blue heart.", {("red", "circle")}) == 1


def test_verdict_rankings_put_answers_the_judge_accepts_first():
    # log-odds per sentence: the first answer has one sentence the judge answers "no" to
    doubted = candidate("A red circle. A blue heart.", [(3.0, 1.0), (0.5, 2.0)])  # debiased: 5.0, -1.0
    accepted = candidate("A red circle.", [(0.2, 0.0)])  # debiased 0.4
    keys = {id(c): pair_quality.verdict_key(c, 1.0) for c in (doubted, accepted)}
    assert keys[id(doubted)] == {"verdict-raw": (True, 0.5), "verdict-debiased": (False, -1.0)}
    best, worst = pair_quality.best_and_worst([doubted, accepted], lambda c: keys[id(c)]["verdict-debiased"])
    assert (best, worst) == (accepted, doubted)
    best, _ = pair_quality.best_and_worst([doubted, accepted], lambda c: keys[id(c)]["verdict-raw"])
    assert best is doubted  # raw accepts both; its worst sentence (0.5) beats 0.2
