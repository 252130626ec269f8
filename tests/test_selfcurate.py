"""Tests for core/training/selfcurate.py: ranking on hand-made candidates, pair picking, sources, and a
curation run with the tiny model into the real store."""

from __future__ import annotations

import math

import pytest

from core.engine.generation import GenerationSettings
from core.engine.judge import JudgeResult, JudgeSettings, ScoredCandidate
from core.training.selfcurate import (CurationProgress, CurationSettings, curate, make_pair, oracle_key, pick_pair,
                                      sources)
from core.data.store import Store
from core.shapes.world import WorldOptions, make_scene, render


def candidate(text: str, raw: float, debiased: float) -> ScoredCandidate:
    return ScoredCandidate(text=text, sentences=[], tokens=[], mean_raw=raw, mean_blind=raw - debiased,
                           mean_debiased=debiased, min_debiased=debiased, likelihood=-1.0)


def result(*candidates: ScoredCandidate, template: str = "faithfulness") -> JudgeResult:
    return JudgeResult(question="Describe the image.", candidates=list(candidates),
                       settings=JudgeSettings(template=template), model_id="tiny", adapter="")


TRUTH = {("red", "circle"), ("blue", "square")}
# A: names both objects; B: one right, one hallucinated; C: one right; D: two hallucinated.
A = candidate("A red circle. A blue square.", raw=1.0, debiased=0.5)
B = candidate("A red circle. A green star.", raw=3.0, debiased=-1.0)
C = candidate("A blue square.", raw=2.0, debiased=2.0)
D = candidate("A green star. A yellow cross.", raw=-2.0, debiased=0.0)


def test_oracle_key_counts_hallucinations_then_recall():
    assert [oracle_key(c, TRUTH) for c in (A, B, C, D)] == [(0, 1.0), (-1, 0.5), (0, 0.5), (-2, 0.0)]
    with pytest.raises(ValueError, match="needs ground truth"):
        oracle_key(A, None)


def test_pick_pair_ranks_by_debiased_raw_or_ground_truth():
    judged = result(A, B, C, D)
    assert pick_pair(judged, "debiased") == (C, B)
    assert pick_pair(judged, "raw") == (B, D)
    assert pick_pair(judged, "oracle", TRUTH) == (A, D)


def test_pick_pair_inverts_for_templates_where_yes_is_bad():
    assert pick_pair(result(A, B, C, D, template="safety"), "debiased") == (B, C)


def test_no_pair_for_identical_texts_ties_or_unscored_candidates():
    same = candidate("A red circle. A blue square.", raw=-5.0, debiased=-5.0)
    assert pick_pair(result(A, same), "debiased") is None
    assert pick_pair(result(A, candidate("A blue square. A red circle.", 0.0, 0.0)), "oracle", TRUTH) is None
    empty = candidate("", raw=math.nan, debiased=math.nan)
    assert pick_pair(result(A, empty), "debiased") is None
    assert pick_pair(result(A, empty, D), "debiased") == (A, D)


def test_make_pair_stores_scores_source_and_where_it_came_from():
    source = next(sources(CurationSettings(n=1)))
    present = sorted(source.truth)[0]
    absent = sorted({(c, s) for c in ("red", "purple") for s in ("cross", "diamond")} - source.truth)[:2]
    good = candidate(f"A {present[0]} {present[1]}.", raw=0.0, debiased=1.0)
    bad = candidate(" ".join(f"A {c} {s}." for c, s in absent), raw=1.0, debiased=-1.0)

    class Loaded:
        model_id, adapter = "tiny", "ad"

    pair = make_pair(source, result(bad, good), "debiased", Loaded)
    assert (pair.chosen, pair.rejected, pair.source, pair.model_id, pair.adapter) == (
        good.text, bad.text, "self", "tiny", "ad")
    assert pair.note == "self-curated (debiased) from scene seed 2000000"
    assert pair.chosen_scores == {"raw": 0.0, "blind": -1.0, "debiased": 1.0, "min_debiased": 1.0,
                                  "likelihood": -1.0, "hallucinated": 0, "recall": 1 / len(source.truth)}
    assert (pair.rejected_scores["hallucinated"], pair.rejected_scores["recall"]) == (2, 0.0)


def test_sources_are_fresh_scenes_or_a_folder(tmp_path):
    scenes = list(sources(CurationSettings(n=2, seed_offset=2_000_010)))
    assert [s.label for s in scenes] == ["scene seed 2000010", "scene seed 2000011"]
    assert scenes[0].truth == make_scene(2_000_010).names()
    assert scenes[0].image.tobytes() == render(make_scene(2_000_010)).tobytes()
    render(make_scene(5)).save(tmp_path / "b.png")
    render(make_scene(6)).save(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("not an image")
    found = list(sources(CurationSettings(n=5, folder=str(tmp_path))))
    assert [(s.label, s.truth) for s in found] == [("a.png", None), ("b.png", None)]


def test_sources_come_from_the_chosen_world():
    world = WorldOptions(partner_rate=0.0, dim_rate=1.0)
    scenes = list(sources(CurationSettings(n=20, seed_offset=2_000_000, world=world)))
    assert [s.truth for s in scenes] == [world.scene(2_000_000 + i).names() for i in range(20)]
    assert any(s.truth != make_scene(2_000_000 + i).names() for i, s in enumerate(scenes))
    assert scenes[0].label == "scene seed 2000000 (WorldOptions(partner_rate=0.0, dim_rate=1.0))"


def test_settings_refuse_test_split_seeds_and_oracle_on_folders():
    with pytest.raises(ValueError, match="overlaps the test split"):
        CurationSettings(seed_offset=500)
    with pytest.raises(ValueError, match="oracle ranking needs ground truth"):
        CurationSettings(folder="x", rank="oracle")
    with pytest.raises(ValueError, match="rank must be one of debiased, raw, oracle"):
        CurationSettings(rank="best")


def test_curation_with_the_tiny_model_stores_self_pairs(tiny_llava):
    store = Store(":memory:")
    progress: list[CurationProgress] = []
    final = curate(tiny_llava, store, CurationSettings(n=3), GenerationSettings(n=3, max_new_tokens=12, seed=1),
                   JudgeSettings(), on_progress=progress.append)
    pairs = store.list_pairs(limit=None)
    assert [p.done for p in progress] == [1, 2, 3]
    assert (final.done, final.pairs + final.skipped) == (3, 3)
    assert len(pairs) == final.pairs >= 1
    assert {p.source for p in pairs} == {"self"}
    assert all(p.chosen != p.rejected and p.chosen_scores["debiased"] > p.rejected_scores["debiased"]
               for p in pairs)
    again = curate(tiny_llava, store, CurationSettings(n=3), GenerationSettings(n=3, max_new_tokens=12, seed=1),
                   JudgeSettings())
    assert (again.pairs, len(store.list_pairs(limit=None))) == (0, len(pairs))  # duplicates skipped
    store.close()
