"""Tests for core/texts.py: descriptions, POPE negatives and judge examples agree with ground truth."""

from __future__ import annotations

import random

from core.metrics import parse_objects
from core.texts import (colour_example, count_example, describe, judge_example, mention_order, pope_examples,
                        popular_objects)
from core.world import PRIOR_PAIRS, make_scene, partner_of


def test_reference_description_names_exactly_the_scene_objects():
    for seed in range(200):
        scene = make_scene(seed)
        assert set(parse_objects(describe(scene, random.Random(seed)))) == scene.names()


def test_partner_is_mentioned_right_after_its_anchor():
    for seed in range(500):
        order = [o.name for o in mention_order(make_scene(seed))]
        for i, name in enumerate(order):
            partner = partner_of(name)
            if partner in order:
                assert order[i + 1] == partner


def test_pope_answers_follow_ground_truth():
    for seed in range(200):
        scene = make_scene(seed)
        for split in ("random", "popular", "adversarial"):
            yes, no = pope_examples(scene, split, random.Random(seed))
            assert yes.answer == "Yes." and no.answer == "No."
            assert parse_objects(yes.question)[0] in scene.names()
            assert parse_objects(no.question)[0] not in scene.names()


def test_adversarial_negative_is_the_absent_partner():
    pair = PRIOR_PAIRS[0]
    for seed in range(3000):
        scene = make_scene(seed)
        if pair.anchor in scene.names() and pair.partner not in scene.names() and len(scene.objects) == 1:
            _, no = pope_examples(scene, "adversarial", random.Random(0))
            assert parse_objects(no.question) == [pair.partner]
            return
    raise AssertionError("no scene with a lone anchor in 3000 seeds")


def test_popular_objects_start_with_prior_objects():
    top = popular_objects()[:6]
    assert set(top) == {p.anchor for p in PRIOR_PAIRS} | {p.partner for p in PRIOR_PAIRS}


def test_count_colour_and_judge_examples():
    scene = make_scene(11, n_objects=3)
    assert count_example(scene).answer == "There are three objects."
    ex = colour_example(scene, random.Random(0))
    shape = ex.question.split()[-1].rstrip("?")
    assert ex.answer == f"The {shape} is {next(o.color for o in scene.objects if o.shape == shape)}."
    for seed in range(200):
        scene = make_scene(seed)
        example, truthful = judge_example(scene, random.Random(seed), with_context=False)
        sentence = example.question.split("Description: ")[1].split(" Is the description")[0]
        claims = parse_objects(sentence)
        assert (claims[0] in scene.names()) == truthful
        assert example.answer == ("Yes." if truthful else "No.")
