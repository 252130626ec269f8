"""Tests for core/shapes/examples.py: the example writer's format and the flip finder on a tiny model."""

from __future__ import annotations

import json

from core.shapes.examples import Flip, find_flips, write_examples
from core.engine.judge import JudgeSettings
from core.shapes.world import make_scene


def test_written_examples_are_core_world_samples_with_their_flip(tmp_path):
    (tmp_path / "scene_0009999.png").write_bytes(b"old")
    flips = [Flip(seed=3, description="A red square.", sentence="A green triangle is on the left.",
                  raw=0.8, blind=2.5, debiased=-0.9)]
    path = write_examples(flips, tmp_path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["seed"] for r in rows] == [3] and (tmp_path / rows[0]["file"]).exists()
    assert not (tmp_path / "scene_0009999.png").exists()  # only the chosen scenes remain
    assert len(rows[0]["objects"]) == len(make_scene(3).objects)
    assert rows[0]["flip"]["sentence"] == "A green triangle is on the left." and rows[0]["flip"]["debiased"] == -0.9


def test_flips_are_hallucinated_sentences_raw_accepts_and_debiased_rejects(tiny_llava):
    flips = find_flips(tiny_llava, [0, 1, 2], JudgeSettings(alpha=1.0), batch_size=3)
    for flip in flips:  # a random tiny model may give none; every one given must be a real flip
        assert flip.raw > 0 > flip.debiased
        assert abs(flip.debiased - (2 * flip.raw - flip.blind)) < 1e-4
        assert flip.sentence in flip.description
