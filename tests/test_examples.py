"""Tests for core/shapes/examples.py: the example writer's format and the flip finder on a tiny model."""

from __future__ import annotations

import json

from PIL import Image

from core.config import ModelSettings
from core.engine.generation import GenerationSettings
from core.engine.judge import JudgeSettings, judge
from core.engine.loading import load_model
from core.engine.prompts import DESCRIBE_QUESTION
from core.engine.sentences import split_sentences
from core.shapes.examples import Flip, find_flips, write_examples
from core.shapes.metrics import sentence_is_hallucinated
from core.shapes.world import make_scene


def test_written_examples_are_core_world_samples_with_their_flip(tmp_path):
    (tmp_path / "scene_0009999.png").write_bytes(b"old")
    flips = [Flip(seed=3, raw_pick="A red square. A green triangle is on the left.", debiased_pick="A red square.",
                  sentence="A green triangle is on the left.", raw=(8.2, 8.1), blind=(7.9, 7.0),
                  debiased=(8.5, 9.2))]
    path = write_examples(flips, tmp_path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["seed"] for r in rows] == [3] and (tmp_path / rows[0]["file"]).exists()
    assert not (tmp_path / "scene_0009999.png").exists()  # only the chosen scenes remain
    assert len(rows[0]["objects"]) == len(make_scene(3).objects)
    assert rows[0]["flip"]["sentence"] == "A green triangle is on the left." and rows[0]["flip"]["debiased"] == [8.5, 9.2]


def test_flips_are_raw_favourites_that_hallucinate_beside_faithful_debiased_favourites(tiny_llava):
    flips = find_flips(tiny_llava, [0, 1, 2, 3], JudgeSettings(alpha=1.0), GenerationSettings(max_new_tokens=24))
    for flip in flips:  # a random tiny model may give none; every one given must be a real flip
        truth = make_scene(flip.seed).names()
        assert flip.raw[0] >= flip.raw[1] and flip.debiased[1] >= flip.debiased[0]
        assert flip.raw_pick != flip.debiased_pick and flip.sentence in flip.raw_pick
        assert sentence_is_hallucinated(flip.sentence, truth)
        assert not any(sentence_is_hallucinated(s, truth) for s in split_sentences(flip.debiased_pick))


def test_shipped_examples_show_the_flip_in_explore_with_its_default_settings():
    # Explore's "Generate and score" with its defaults on the shipped PNG gives exactly the recorded candidates:
    # the raw judge's favourite names an absent object, the debiased rank-1 candidate names none.
    from selfjudge_ui.explore import EXAMPLES_DIR, example_scenes

    loaded = load_model(ModelSettings(adapter=""))
    rows = {json.loads(line)["seed"]: json.loads(line) for line in (EXAMPLES_DIR / "scenes.jsonl").read_text().splitlines()}
    for path, seed in example_scenes():
        result = judge(loaded, Image.open(path).convert("RGB"), DESCRIBE_QUESTION, GenerationSettings(), JudgeSettings())
        raw_pick = max(result.candidates, key=lambda c: c.mean_raw)
        assert (raw_pick.text, result.best().text) == (rows[seed]["flip"]["raw_pick"], rows[seed]["flip"]["debiased_pick"])
        truth = make_scene(seed).names()
        assert any(sentence_is_hallucinated(s.text, truth) for s in raw_pick.sentences)
        assert not any(sentence_is_hallucinated(s.text, truth) for s in result.best().sentences)
