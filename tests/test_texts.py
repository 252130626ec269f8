"""Tests for core/shapes/texts.py: descriptions, POPE negatives and judge examples agree with ground truth."""

from __future__ import annotations

import random

from core.shapes.metrics import parse_objects
from core.shapes.texts import (PRIOR_MENTION_RATE, SENTENCE_TEMPLATES, caption_judge_example, caption_sentences, colour_example, count_example,
                               describe, describe_sentences, judge_example, mention_order, pope_examples, popular_objects)
from core.shapes.world import PRIOR_PAIRS, make_scene, partner_of


def test_reference_description_names_exactly_the_scene_objects():
    for seed in range(200):
        scene = make_scene(seed)
        assert set(parse_objects(describe(scene, random.Random(seed)))) == scene.names()


def test_one_description_uses_one_template():
    starts = {template.split()[0] for template in SENTENCE_TEMPLATES}
    seen = set()
    for seed in range(300):
        first_words = {sentence.split()[0] for sentence in describe_sentences(make_scene(seed), random.Random(seed))}
        assert len(first_words) == 1 and first_words <= starts
        seen |= first_words
    assert seen == starts  # every template is still used across descriptions


def test_training_captions_add_only_absent_partners_right_after_their_anchor():
    absent_slots = mentioned = 0
    for seed in range(3000):
        scene = make_scene(seed)
        present = scene.names()
        claims = [name for sentence in caption_sentences(scene, random.Random(f"caption-{seed}"))
                  for name in parse_objects(sentence)]
        assert set(claims) >= present  # every object still named
        for i, name in enumerate(claims):
            if name not in present:  # an invented mention: the absent partner of the previous object
                assert partner_of(claims[i - 1]) == name and i > 0
        for anchor in present:
            partner = partner_of(anchor)
            if partner and partner not in present:
                absent_slots += 1
                mentioned += partner in claims
    assert absent_slots > 300
    assert abs(mentioned / absent_slots - PRIOR_MENTION_RATE) < 0.05


def test_training_captions_without_prior_mentions_are_the_truth():
    for seed in range(300):
        scene = make_scene(seed)
        assert set(parse_objects(" ".join(caption_sentences(scene, random.Random(seed), 0.0)))) == scene.names()


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


def test_blind_judge_examples_follow_the_captions_prior_not_the_unseen_truth():
    absent_partner_yes = 0
    for seed in range(2000):
        scene = make_scene(seed)
        example = caption_judge_example(scene, random.Random(f"judge-{seed}"), with_context=True)
        assert not example.use_image and example.answer in ("Yes.", "No.")
        described = parse_objects(example.question.split("Description:")[1])
        context = parse_objects(example.question.split("Description:")[0])
        if example.answer == "No.":  # an object the caption does not name
            assert not set(described) & (scene.names() | set(context))
        elif described[0] not in scene.names():  # "Yes" to an absent object: only the prior partner
            assert partner_of(context[-1]) == described[0]
            absent_partner_yes += 1
    assert absent_partner_yes > 50
