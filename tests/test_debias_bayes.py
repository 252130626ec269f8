"""Tests for bench/debias_bayes.py: the simulation behind docs/language-prior.md's Bayes argument."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SPEC = importlib.util.spec_from_file_location("debias_bayes", Path(__file__).parent.parent / "bench" / "debias_bayes.py")
debias_bayes = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(debias_bayes)

TEXT = {"prior-favoured": 0.9, "other": 0.5}
WRONG = {"prior-favoured": 0.3, "other": 0.5}


def test_debiasing_cannot_beat_a_calibrated_judge():
    for scenes in (WRONG, {"prior-favoured": 0.85, "other": 0.5}):
        for alpha in (0.5, 1.0, 4.0):
            raw, _blind, debiased = debias_bayes.simulate(scenes, TEXT, 0.0, alpha, 20_000, 1.5, seed=1)
            assert debiased <= raw + 0.002


def test_debiasing_helps_a_judge_whose_labels_carry_a_wrong_text_prior():
    raw, blind, debiased = debias_bayes.simulate(WRONG, TEXT, 0.9, 1.0, 20_000, 1.5, seed=1)
    assert blind < 0.5 and debiased > raw + 0.03
