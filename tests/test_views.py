"""Tests for selfjudge_ui/views.py and selfjudge_ui/plots.py on a hand-made judge result."""

from __future__ import annotations

import pytest

from core.shapes.world import make_scene
from selfjudge_ui import plots, views


def _token(token, image, blind, alpha=1.0):
    return {"token": token, "token_id": 0, "logprob_image": image, "logprob_blind": blind,
            "debiased": (1 + alpha) * image - alpha * blind, "visual_gain": image - blind}


def _sentence(text, raw, blind, start, end, alpha=1.0):
    return {"text": text, "raw": raw, "blind": blind, "debiased": (1 + alpha) * raw - alpha * blind,
            "token_start": start, "token_end": end}


RESULT = {
    "question": "Describe the image.", "model_id": "tiny", "adapter": "",
    "settings": {"alpha": 1.0, "kind": "logit", "context": "sentence", "template": "faithfulness"},
    "candidates": [
        {"text": "A red square. A green triangle.", "rank": 2,
         "sentences": [_sentence("A red square.", 2.0, 1.0, 0, 2), _sentence("A green triangle.", 0.5, 1.5, 2, 4)],
         "tokens": [_token("A", -1.0, -1.0), _token(" red", -0.5, -2.5), _token(" green", -2.0, -1.0),
                    _token(" triangle", -3.0, -3.0)],
         "mean_raw": 1.25, "mean_blind": 1.25, "mean_debiased": 1.25, "min_debiased": -0.5, "likelihood": -1.625},
        {"text": "A blue heart.", "rank": 1,
         "sentences": [_sentence("A blue heart.", 3.0, 0.0, 0, 1)],
         "tokens": [_token("A", -0.25, -0.5)],
         "mean_raw": 3.0, "mean_blind": 0.0, "mean_debiased": 6.0, "min_debiased": 6.0, "likelihood": -0.25},
    ],
}
TRUTH = [["green", "triangle"], ["red", "square"]]


def test_scene_truth_and_description():
    scene = make_scene(21)
    assert views.scene_truth(scene) == TRUTH
    assert views.scene_truth(None) is None
    assert views.describe_truth(scene) == ("**Ground truth, scene 21:** small red square (bottom), "
                                           "small green triangle (top).")


def test_verdicts_against_truth_and_without():
    assert views.verdicts(RESULT, TRUTH) == [["correct", "correct"], ["hallucinated"]]
    assert views.verdicts(RESULT, None) == [["no ground truth"] * 2, ["no ground truth"]]
    no_claim = {"candidates": [{"sentences": [{"text": "It is nice."}]}]}
    assert views.verdicts(no_claim, TRUTH) == [["no object claimed"]]


def test_candidate_and_sentence_rows():
    assert views.candidate_rows(RESULT, TRUTH) == [
        [1, 2, "A red square. A green triangle.", 1.25, 1.25, 1.25, -0.5, -1.625, "0/2"],
        [2, 1, "A blue heart.", 3.0, 0.0, 6.0, 6.0, -0.25, "1/1"]]
    assert views.candidate_rows(RESULT, None)[0][-1] == "-"
    assert views.sentence_rows(RESULT, TRUTH) == [
        [1, "A red square.", 2.0, 1.0, 3.0, "correct"], [1, "A green triangle.", 0.5, 1.5, -0.5, "correct"],
        [2, "A blue heart.", 3.0, 0.0, 6.0, "hallucinated"]]


def test_choices_best_and_worst():
    assert views.best_and_worst(RESULT) == (2, 1)
    safety = {"candidates": [{"rank": 2}, {"rank": 3}, {"rank": 1}]}  # ranks already account for the prompt
    assert views.best_and_worst(safety) == (3, 2)
    assert views.candidate_choices(RESULT) == [
        ("#1 (rank 2, debiased 1.25): A red square. A green triangle.", 1),
        ("#2 (rank 1, debiased 6.00): A blue heart.", 2)]


def test_token_highlights_map_into_minus_one_to_one_with_the_scale():
    candidate = RESULT["candidates"][0]
    raw, scale = views.token_highlights(candidate, "raw")
    # log p in [-3, -0.5] stretched onto [-1, 1]: v -> (v + 3) / 1.25 - 1
    assert raw == [("A", 0.6), (" red", 1.0), (" green", -0.2), (" triangle", -1.0)]
    assert scale == ("raw = log p(token | image, prompt). Shade: full purple = -3.000 (least likely), "
                     "clear = -1.750, full red = -0.500 (most likely).")
    gain, scale = views.token_highlights(candidate, "visual gain")
    # visual gain [0, 2, -1, 0] divided by its largest magnitude 2
    assert gain == [("A", 0.0), (" red", 1.0), (" green", -0.5), (" triangle", 0.0)]
    assert scale == ("visual gain = log p(image) - log p(blind). Shade = value / 2.000: full purple = -2.000, "
                     "clear = 0, full red = 2.000.")
    flat, _ = views.token_highlights({"tokens": [_token("x", -1.0, -1.0)] * 2}, "blind")
    assert flat == [("x", 0.0), ("x", 0.0)]
    assert views.token_highlights({"tokens": []}, "raw") == ([], "No token scores.")
    missing = {"tokens": [_token("a", -1.0, -1.0), {**_token("b", 0, 0), "logprob_image": None},
                          _token("c", -3.0, -1.0)]}
    assert views.token_highlights(missing, "raw")[0] == [("a", 1.0), ("b", 0.0), ("c", -1.0)]


def test_pair_scores():
    assert views.pair_scores(RESULT["candidates"][1], RESULT["settings"]) == {
        "raw": 3.0, "blind": 0.0, "debiased": 6.0, "min_debiased": 6.0, "likelihood": -0.25, "rank": 1,
        "alpha": 1.0, "kind": "logit"}


DECODED = {"text": "A. B.", "strategy": "debiased-judged", "nodes": [
    {"step": 0, "text": "A.", "score": 1.0, "chosen": True, "parent": None, "raw": 2.0, "blind": 1.0},
    {"step": 0, "text": "C.", "score": -1.0, "chosen": False, "parent": None, "raw": 0.5, "blind": 1.0,
     "accepted": False},
    {"step": 1, "text": "B.", "score": 0.5, "chosen": True, "parent": 0, "raw": 1.0, "blind": 0.5},
    {"step": 1, "text": "", "score": None, "chosen": False, "parent": 0, "raw": None, "blind": None}]}


def test_decode_rows_are_depth_first_and_indented():
    assert views.decode_rows(DECODED) == [
        [0, "A.", 1.0, 2.0, 1.0, "yes", "yes"], [1, "    └ B.", 0.5, 1.0, 0.5, "yes", "yes"],
        [1, "    └ (end of answer)", None, None, None, "yes", ""], [0, "C.", -1.0, 0.5, 1.0, "no", ""]]


def test_finite_turns_nan_and_infinity_into_null():
    assert views.finite({"a": [1.0, float("nan")], "b": {"c": float("-inf"), "d": "x", "e": 2}}) == {
        "a": [1.0, None], "b": {"c": None, "d": "x", "e": 2}}


def test_compare_rows_and_summary():
    assert views.compare_rows("base", RESULT, TRUTH)[1] == ["base", 2, 1, "A blue heart.", 6.0, 6.0, "1/1"]
    assert views.compare_summary("base", RESULT, TRUTH) == (
        "**base**: mean debiased 3.625 over 2 candidates; 1/3 sentences that name an object are "
        "hallucinated (33%)")
    assert views.compare_summary("tuned", RESULT, None) == "**tuned**: mean debiased 3.625 over 2 candidates"


@pytest.mark.parametrize("view", list(plots.TOKEN_VIEWS))
def test_token_heatmap_pads_rows_and_keeps_exact_values(view):
    figure = plots.token_heatmap(RESULT, view)
    heat = figure.data[0]
    key = plots.TOKEN_VIEWS[view][0]
    assert list(heat.z[1]) == [RESULT["candidates"][1]["tokens"][0][key], None, None, None]
    assert list(heat.y) == ["#1 (rank 2)", "#2 (rank 1)"]
    assert heat.hovertext[0][1] == f"' red'<br>{view} = {RESULT['candidates'][0]['tokens'][1][key]:.4f}"


def test_sentence_scatter_groups_by_verdict_and_draws_the_diagonal():
    figure = plots.sentence_scatter(RESULT, views.verdicts(RESULT, TRUTH))
    by_name = {trace.name: trace for trace in figure.data}
    assert (list(by_name["correct"].x), list(by_name["correct"].y)) == ([1.0, 1.5], [2.0, 0.5])
    assert (list(by_name["hallucinated"].x), list(by_name["hallucinated"].y)) == ([0.0], [3.0])
    assert list(by_name["raw = blind"].x) == list(by_name["raw = blind"].y) == pytest.approx([-0.15, 3.15])


def test_decode_tree_places_steps_in_columns_and_marks_the_chosen_path():
    figure = plots.decode_tree(DECODED)
    edges = [t for t in figure.data if t.mode == "lines"]
    assert [(list(e.x), list(e.y)) for e in edges] == [([0, 1], [0, 0]), ([0, 1], [0, -1])]
    assert [e.line.color for e in edges] == ["#2a9d8f", "#ccc"]
    by_name = {t.name: t for t in figure.data if t.mode == "markers+text"}
    assert (list(by_name["chosen"].x), list(by_name["chosen"].y)) == ([0, 1], [0, 0])
    assert (list(by_name["rejected by the judge"].x), list(by_name["rejected by the judge"].y)) == ([0], [-1])
    assert list(by_name["proposed"].text) == ["n/a"]  # the end proposal has no score
    assert by_name["proposed"].hovertext[0] == "step 1: (end of answer)<br>score n/a"
