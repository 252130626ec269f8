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
         "mean_raw": 1.25, "mean_blind": 1.25, "mean_debiased": 1.25, "min_debiased": -0.5, "likelihood": -1.625,
         "raw_rank": 2},
        {"text": "A blue heart.", "rank": 1,
         "sentences": [_sentence("A blue heart.", 3.0, 0.0, 0, 1)],
         "tokens": [_token("A", -0.25, -0.5)],
         "mean_raw": 3.0, "mean_blind": 0.0, "mean_debiased": 6.0, "min_debiased": 6.0, "likelihood": -0.25,
         "raw_rank": 1},
    ],
}
TRUTH = [["green", "triangle"], ["red", "square"]]


def test_scene_truth_and_description():
    scene = make_scene(8)
    assert views.scene_truth(scene) == TRUTH
    assert views.scene_truth(None) is None
    assert views.describe_truth(scene) == ("**Ground truth, scene 8:** large red square (top), "
                                           "small green triangle (bottom).")


def test_verdicts_against_truth_and_without():
    assert views.verdicts(RESULT, TRUTH) == [["correct", "correct"], ["hallucinated"]]
    assert views.verdicts(RESULT, None) == [["no ground truth"] * 2, ["no ground truth"]]
    no_claim = {"candidates": [{"sentences": [{"text": "It is nice."}]}]}
    assert views.verdicts(no_claim, TRUTH) == [["no object claimed"]]


def test_candidate_and_sentence_rows_come_best_rank_first():
    assert views.candidate_rows(RESULT, TRUTH) == [
        [1, 2, "A blue heart.", 3.0, 0.0, 6.0, 6.0, -0.25, 1, "1/1"],
        [2, 1, "A red square. A green triangle.", 1.25, 1.25, 1.25, -0.5, -1.625, 2, "0/2"]]
    assert views.candidate_rows(RESULT, None)[0][-1] == "-"
    assert views.rank_order(RESULT) == [1, 0]
    assert views.sentence_rows(RESULT, TRUTH) == [
        [1, 2, "A blue heart.", 3.0, 0.0, 6.0, "hallucinated"],
        [2, 1, "A red square.", 2.0, 1.0, 3.0, "correct"], [2, 1, "A green triangle.", 0.5, 1.5, -0.5, "correct"]]


def test_tables_highlight_the_best_row_and_colour_verdicts():
    styles = views.styled_candidates(views.candidate_rows(RESULT, TRUTH))
    styles._compute()
    by_cell = {cell: dict(css) for cell, css in styles.ctx.items()}
    assert by_cell[(0, 1)] == {"background-color": "#e3f4e8", "font-weight": "600"}  # the rank-1 row
    assert by_cell[(0, 9)] == {"color": plots.PRIOR, "font-weight": "600"}  # 1/1 hallucinated
    assert (1, 1) not in by_cell and (1, 9) not in by_cell  # rank 2, 0/2: plain
    sentences = views.styled_sentences(views.sentence_rows(RESULT, TRUTH))
    sentences._compute()
    colours = {cell: dict(css)["color"] for cell, css in sentences.ctx.items()}
    assert colours == {(0, 6): plots.PRIOR, (1, 6): plots.GROUNDED, (2, 6): plots.GROUNDED}


def test_a_chosen_answer_that_hallucinates_is_flagged_with_advice():
    assert views.hallucinated_sentences(RESULT, TRUTH, 2) == ["A blue heart."]
    assert views.chosen_warning(RESULT, TRUTH, 2) == (
        '**Chosen candidate #2 names an object that is not in the scene** (ground truth): &quot;A blue heart.&quot;. '
        "Candidate #1 has no hallucinated sentence: pick it as chosen, or edit the text.")
    assert views.chosen_warning(RESULT, TRUTH, 1) == ""
    assert views.chosen_warning(RESULT, None, 2) == ""  # no ground truth, nothing to check
    only_bad = {**RESULT, "candidates": [RESULT["candidates"][1]]}
    assert views.chosen_warning(only_bad, TRUTH, 1).endswith(
        "No candidate is free of them: edit the chosen text to remove them.")


def test_choices_best_and_worst():
    assert views.best_and_worst(RESULT) == (2, 1)
    safety = {"candidates": [{"rank": 2}, {"rank": 3}, {"rank": 1}]}  # ranks already account for the prompt
    assert views.best_and_worst(safety) == (3, 2)
    assert views.candidate_choices(RESULT) == [
        ("#1 (rank 2, debiased 1.25): A red square. A green triangle.", 1),
        ("#2 (rank 1, debiased 6.00): A blue heart.", 2)]


def test_token_shades_keep_the_sign_of_visual_gain_and_stretch_the_levels():
    candidate = RESULT["candidates"][0]
    gain, legend = views.token_shades(candidate, "visual gain")
    # visual gain [0, 2, -1, 0] divided by its largest magnitude 2
    assert gain == [("A", 0.0), (" red", 1.0), (" green", -0.5), (" triangle", 0.0)]
    assert legend == ("**visual gain** = log p(token | image) - log p(token | no image). Green: the image makes the "
                      "token more likely (grounded); red: it is likelier without the image (prior-driven). "
                      "Full colour = ±2.000, white = 0.")
    raw, legend = views.token_shades(candidate, "raw")
    # log p in [-3, -0.5] stretched onto [0, 1]: v -> (v + 3) / 2.5
    assert raw == [("A", 0.8), (" red", 1.0), (" green", 0.4), (" triangle", 0.0)]
    assert legend.startswith("**raw** = log p(token | image, prompt). Darker blue = higher: white = -3.000, "
                             "full blue = -0.500.")
    flat, _ = views.token_shades({"tokens": [_token("x", -1.0, -1.0)] * 2}, "blind")
    assert flat == [("x", 0.0), ("x", 0.0)]
    assert views.token_shades({"tokens": []}, "raw") == ([], "No token scores.")
    missing = {"tokens": [_token("a", -1.0, -1.0), {**_token("b", 0, 0), "logprob_image": None},
                          _token("c", -3.0, -1.0)]}
    assert views.token_shades(missing, "raw")[0] == [("a", 1.0), ("b", 0.5), ("c", 0.0)]


def test_token_html_colours_grounded_green_and_prior_red_and_escapes_tokens():
    candidate = {"tokens": [_token("<b>", -1.0, -3.0), _token(" sky", -3.0, -1.0), _token(" ", -1.0, -1.0)]}
    html = views.token_html(candidate, "visual gain")
    chips = html.split("<div class='sj-tokens'>")[1]
    # 85% of the palette colour over white at full shade: green #1a9850 -> (60, 167, 106), red #d73027 -> (221, 79, 71)
    assert chips == (
        "<span class='sj-token' style='background:rgb(60, 167, 106)' title='visual gain = 2.000'>&lt;b&gt;</span>"
        "<span class='sj-token' style='background:rgb(221, 79, 71)' title='visual gain = -2.000'>sky</span>"
        "<span class='sj-token' style='background:rgb(255, 255, 255)' title='visual gain = 0.000'>␣</span></div>")
    assert html.startswith("<div class='sj-legend'><b>visual gain</b> = ")


def test_pair_scores():
    assert views.pair_scores(RESULT["candidates"][1], RESULT["settings"]) == {
        "raw": 3.0, "blind": 0.0, "debiased": 6.0, "min_debiased": 6.0, "likelihood": -0.25, "rank": 1,
        "alpha": 1.0, "kind": "logit"}


DECODED = {"text": "A. B.", "strategy": "debiased-judged", "nodes": [
    {"step": 0, "text": "A.", "score": 1.0, "chosen": True, "parent": None, "raw": 2.0, "blind": 1.0, "log_odds": 0.5},
    {"step": 0, "text": "C.", "score": -1.0, "chosen": False, "parent": None, "raw": 0.5, "blind": 1.0,
     "accepted": False, "log_odds": -1.4, "raw_log_odds": 0.3},
    {"step": 1, "text": "B.", "score": 0.5, "chosen": True, "parent": 0, "raw": 1.0, "blind": 0.5, "log_odds": 0.25,
     "raw_log_odds": -1.1},
    {"step": 1, "text": "", "score": None, "chosen": False, "parent": 0, "raw": None, "blind": None,
     "accepted": False}]}


def test_decode_rows_are_depth_first_and_indented():
    assert views.decode_rows(DECODED) == [
        [0, "A.", 1.0, 2.0, 1.0, 0.5, "accepted: log-odds 0.50 ≥ -1", "yes"],
        [1, "    └ B.", 0.5, 1.0, 0.5, 0.25, "accepted: log-odds 0.25 ≥ -1; raw -1.10 would reject it: debiasing kept it",
         "yes"],
        [1, "    └ (end of answer)", None, None, None, None, "the model proposed to end here", ""],
        [0, "C.", -1.0, 0.5, 1.0, -1.4,
         "rejected: debiased log-odds -1.40 < -1; raw 0.30 would keep it: debiasing removed it", ""]]


@pytest.mark.parametrize("last_step, budget, reason", [
    ([{"text": "B.", "chosen": True, "ended": True, "n_tokens": 3}], 64, "the chosen sentence ended the answer"),
    ([{"text": "B.", "chosen": True, "n_tokens": 6}], 8, "the token budget (8 new tokens) was used up"),
    ([{"text": "", "chosen": False}], 64, "at step 1 the model only proposed to end the answer"),
    ([{"text": "B.", "chosen": False, "accepted": False}, {"text": "D.", "chosen": False, "accepted": False}], 64,
     "at step 1 every proposal was rejected: debiased log-odds < -1 (the debiased judge says no)"),
    ([{"text": "B.", "chosen": False, "accepted": True}], 64,
     "at step 1 the model itself would rather end (p(end) ≥ 0.5)"),
    ([{"text": "", "chosen": False, "accepted": False}, {"text": "", "chosen": False, "accepted": False},
      {"text": "D.", "chosen": False, "accepted": False}], 64,
     "at step 1, 2 of 3 proposals were to end the answer and the other was rejected: debiased log-odds < -1 "
     "(the debiased judge says no)"),
])
def test_stop_reason_reads_the_search_tree(last_step, budget, reason):
    first = {"step": 0, "text": "A.", "chosen": True, "parent": None, "n_tokens": 2, "score": 1.0}
    decoded = {"strategy": "debiased-judged", "text": "A.",
               "nodes": [first, *({"step": 1, "parent": 0, "score": 0.0, **node} for node in last_step)]}
    assert views.stop_reason(decoded, budget) == reason


def test_decode_run_rows_compare_strategies_against_the_truth():
    decoded = {"strategy": "greedy", "text": "A red square. A blue heart.", "nodes": [
        {"step": 0, "text": "A red square.", "chosen": True, "parent": None, "n_tokens": 3, "ended": False},
        {"step": 1, "text": "A blue heart.", "chosen": True, "parent": 0, "n_tokens": 3, "ended": True}]}
    assert views.decode_run_row(2, decoded, 4, 64, TRUTH) == [
        2, "greedy", "-", "A red square. A blue heart.", "the chosen sentence ended the answer", "1/2"]
    assert views.decode_run_row(1, {**decoded, "strategy": "debiased-judged"}, 4, 64, None)[2:] == [
        4, "A red square. A blue heart.", "the chosen sentence ended the answer", "-"]


def test_json_safe_turns_nan_and_infinity_into_null():
    from core.engine.judge import json_safe

    assert json_safe({"a": [1.0, float("nan")], "b": {"c": float("-inf"), "d": "x", "e": 2}}) == {
        "a": [1.0, None], "b": {"c": None, "d": "x", "e": 2}}


def test_compare_rows_summary_and_identical_outputs():
    assert views.compare_rows(RESULT, TRUTH) == [[1, 2, "A blue heart.", 6.0, 6.0, "1/1"],
                                                 [2, 1, "A red square. A green triangle.", 1.25, -0.5, "0/2"]]
    assert views.same_answers(RESULT, RESULT)
    assert not views.same_answers(RESULT, {"candidates": RESULT["candidates"][::-1]})
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
    assert [list(row) for row in heat.text] == [["A", "red", "green", "triangle"[:6] + "…"], ["A", "", "", ""]]
    assert heat.xgap == heat.ygap == 3  # cells, and their labels, stand apart
    signed = view == "visual gain"
    assert (heat.zmid, heat.colorscale[0][1], heat.colorscale[-1][1]) == (
        (0, plots.PRIOR, plots.GROUNDED) if signed else (None, "#ffffff", plots.HIGHER))


def test_a_long_answer_keeps_its_heatmap_labels_for_hover_only():
    long = {"candidates": [{**RESULT["candidates"][0], "tokens": RESULT["candidates"][0]["tokens"] * 7}]}
    assert plots.token_heatmap(long, "visual gain").data[0].texttemplate == ""


def test_sentence_scatter_groups_by_verdict_and_draws_the_diagonal():
    figure = plots.sentence_scatter(RESULT, views.verdicts(RESULT, TRUTH))
    by_name = {trace.name: trace for trace in figure.data}
    assert (list(by_name["correct"].x), list(by_name["correct"].y)) == ([1.0, 1.5], [2.0, 0.5])
    assert (list(by_name["hallucinated"].x), list(by_name["hallucinated"].y)) == ([0.0], [3.0])
    assert (by_name["correct"].marker.color, by_name["hallucinated"].marker.color) == (plots.GROUNDED, plots.PRIOR)
    assert list(by_name["raw = blind"].x) == list(by_name["raw = blind"].y) == pytest.approx([-0.15, 3.15])


def test_decode_tree_places_steps_in_columns_and_marks_the_chosen_path():
    figure = plots.decode_tree(DECODED)
    edges = [t for t in figure.data if t.mode == "lines"]
    assert [(list(e.x), list(e.y)) for e in edges] == [([0, 1], [0, 0]), ([0, 1], [0, -1])]
    assert [e.line.color for e in edges] == [plots.GROUNDED, "#ccc"]
    by_name = {t.name: t for t in figure.data if t.mode == "markers+text"}
    assert (list(by_name["chosen"].x), list(by_name["chosen"].y)) == ([0, 1], [0, 0])
    # C. is rejected, and the raw judge alone would have kept it: its own marker, so the point of
    # debiasing shows in the tree.
    assert plots.REJECTED not in by_name
    rejected = by_name[plots.FLIPPED]
    assert (list(rejected.x), list(rejected.y), rejected.marker.color) == ([0], [-1], plots.PRIOR)
    assert by_name["chosen"].marker.color == plots.GROUNDED
    assert list(by_name["proposed, not chosen"].text) == ["n/a"]  # the end proposal has no score
    assert by_name["proposed, not chosen"].hovertext[0] == "step 1: (end of answer)<br>score n/a"
    assert rejected.hovertext[0] == ("step 0: C.<br>score -1.0000<br>debiased log-odds -1.4000 (rejected: < -1)"
                                     "<br>raw log-odds 0.3000")
    plain = {**DECODED, "nodes": [{k: v for k, v in n.items() if k != "raw_log_odds"} for n in DECODED["nodes"]]}
    names = {t.name for t in plots.decode_tree(plain).data if t.mode == "markers+text"}
    assert plots.REJECTED in names and plots.FLIPPED not in names
