"""Tests for core/shapes/texts.py: descriptions, POPE negatives and judge examples agree with ground truth."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections import Counter

import pytest

from core.shapes.metrics import parse_objects
from core.shapes.texts import (FREQUENT_IN_TEXT, HABIT_MENTION_RATE, KIND_COLOR_ORDER, KIND_LIST_QUESTION,
                               MENTION_ORDERS, POPE_SPLITS, PRIOR_MENTION_RATE, SENTENCE_TEMPLATES, TASKS,
                               TYPICAL_NAME_RATE, CorpusHabits, Example, caption_judge_example, caption_pope_example,
                               caption_sentences, colour_example, count_example, describe, describe_sentences,
                               judge_example, kind_rank, mention_order, near_misses, object_sentence, pope_examples,
                               popular_objects, text_caption, text_example, training_example, typical_name)
from core.shapes.world import COLORS, PRIOR_PAIRS, SHAPES, Scene, make_scene, partner_of


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


def test_kind_order_names_objects_by_kind_whatever_their_places_and_partners_follow_anchors():
    ranked = sorted(((c, s) for c in COLORS for s in SHAPES), key=kind_rank)
    assert len({kind_rank(name) for name in ranked}) == len(ranked) and set(KIND_COLOR_ORDER) == set(COLORS)
    for pair in PRIOR_PAIRS:  # nothing can stand between an anchor and its partner
        assert ranked[ranked.index(pair.anchor) + 1] == pair.partner
    habits = CorpusHabits(0.0, 0.0, "kind")
    differs = 0
    for seed in range(300):
        scene = make_scene(seed)
        order = [o.name for o in mention_order(scene, "kind")]
        assert order == sorted(scene.names(), key=kind_rank)
        differs += order != [o.name for o in mention_order(scene)]
        claims = parse_objects(" ".join(caption_sentences(scene, random.Random(seed), 0.0, "kind")))
        assert claims == order
        _template, sentences = text_caption(scene, random.Random(seed), habits)
        said = [name for _sentence, name, _slot in sentences]
        assert said == sorted(said, key=kind_rank)  # prior mentions keep the order too
        example, _truthful = judge_example(scene, random.Random(seed), with_context=True, order="kind")
        context = parse_objects(example.question.split("Description:")[0])
        assert context == order[:len(context)]
    assert differs > 100  # it is another order, not the left-to-right one
    assert MENTION_ORDERS == ("position", "kind", "kind-left")
    with pytest.raises(ValueError, match="order"):
        CorpusHabits(order="size")
    with pytest.raises(ValueError, match="order"):
        mention_order(make_scene(0), "size")


def test_kind_left_order_keeps_kinds_colours_and_anchors_but_names_one_colours_objects_left_to_right():
    shared = kind_differs = 0
    for seed in range(400):
        scene = make_scene(seed)
        order = mention_order(scene, "kind-left")
        kind = mention_order(scene, "kind")
        assert sorted(o.name for o in order) == sorted(scene.names())
        assert [KIND_COLOR_ORDER.index(o.color) for o in order] == [KIND_COLOR_ORDER.index(o.color) for o in kind]
        names = [o.name for o in order]
        for pair in PRIOR_PAIRS:  # a partner still follows its anchor
            if pair.anchor in names and pair.partner in names:
                assert names[names.index(pair.anchor) + 1] == pair.partner
        for first, second in zip(order, order[1:]):
            ordinary = (first.name not in FREQUENT_IN_TEXT and partner_of(first.name) is None
                        and second.name not in FREQUENT_IN_TEXT and partner_of(second.name) is None)
            if first.color == second.color and ordinary:
                assert first.x <= second.x
        shared += scene.shares_a_colour()
        kind_differs += names != [o.name for o in kind]
    assert shared > 80 and kind_differs > 20  # scenes where the two orders differ are common enough to matter


def test_training_examples_follow_the_habits_mention_order():
    habits = CorpusHabits(0.0, 0.0, "kind")
    for seed in range(200):
        scene = make_scene(seed)
        example = training_example(scene, random.Random(seed), text_only_rate=0.0, task_weights=(1, 0, 0, 0, 0),
                                   habits=habits, describe_mention_rate=0.0)
        assert parse_objects(example.answer) == [o.name for o in mention_order(scene, "kind")]


def test_pope_answers_follow_ground_truth():
    for seed in range(200):
        scene = make_scene(seed)
        for split in POPE_SPLITS:
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


def test_near_miss_negative_shares_a_colour_or_shape_with_a_present_object():
    kinds = set()
    for seed in range(300):
        scene = make_scene(seed)
        _, no = pope_examples(scene, "near-miss", random.Random(seed))
        color, shape = parse_objects(no.question)[0]
        assert (color, shape) not in scene.names()
        shares = [(color == o.color, shape == o.shape) for o in scene.objects]
        assert any(c or s for c, s in shares)
        kinds |= {"colour" if c else "shape" for c, s in shares if c or s}
    assert kinds == {"colour", "shape"}
    with pytest.raises(ValueError, match="near-miss"):
        pope_examples(make_scene(0), "nearest", random.Random(0))


def test_pope_near_miss_rate_sets_the_share_of_near_miss_questions():
    def near_miss_share(rate: float) -> float:
        near = negatives = 0
        for seed in range(600):
            scene = make_scene(seed)
            example = training_example(scene, random.Random(seed), task_weights=(0, 1, 0, 0, 0),
                                       caption_label_rate=0.0, pope_near_miss_rate=rate)
            if example.answer == "No.":
                negatives += 1
                near += parse_objects(example.question)[0] in near_misses(scene)
        return near / negatives

    # random and popular negatives are near misses by chance, adversarial ones when the scene has no partner
    assert near_miss_share(1.0) == 1.0
    assert near_miss_share(0.0) < 0.75 < near_miss_share(0.5)


def test_pope_near_miss_rate_zero_keeps_the_earlier_random_stream():
    # rate 0 must draw exactly what every model up to v11 was trained on: split, then the example
    for seed in range(200):
        scene = make_scene(seed)
        rng = random.Random(seed)
        rng.choices(TASKS, weights=(0, 1, 0, 0, 0))
        earlier = rng.choice(pope_examples(scene, rng.choice(["random", "popular", "adversarial"]), rng))
        assert training_example(scene, random.Random(seed), task_weights=(0, 1, 0, 0, 0), caption_label_rate=0.0,
                                pope_near_miss_rate=0.0) == earlier


def test_kind_list_rate_asks_descriptions_as_a_list_in_the_kind_order():
    def draw(rate: float) -> list[tuple[Scene, Example]]:
        return [(scene := make_scene(seed), training_example(scene, random.Random(seed), task_weights=(1, 0, 0, 0, 0),
                                                               text_only_rate=0.0, kind_list_rate=rate))
                for seed in range(300)]

    listed = [(scene, ex) for scene, ex in draw(0.5) if ex.question == KIND_LIST_QUESTION]
    assert 0.4 < len(listed) / 300 < 0.6
    differs = 0
    for scene, example in listed:
        present = [name for name in parse_objects(example.answer) if name in scene.names()]
        kind_order = [o.name for o in mention_order(scene, "kind") if o.name in present]
        assert present == kind_order
        differs += kind_order != [o.name for o in mention_order(scene, "kind-left") if o.name in present]
    assert differs > 0  # some scenes order their objects differently by kind than by kind-left
    assert all(ex.question == KIND_LIST_QUESTION for _s, ex in draw(1.0))
    # rate 0 draws exactly what every earlier recipe was trained on
    for seed in range(100):
        scene = make_scene(seed)
        earlier = training_example(scene, random.Random(seed), task_weights=(1, 0, 0, 0, 0), text_only_rate=0.0)
        assert earlier == training_example(scene, random.Random(seed), task_weights=(1, 0, 0, 0, 0),
                                           text_only_rate=0.0, kind_list_rate=0.0)
        assert earlier.question != KIND_LIST_QUESTION


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


def test_blind_judge_examples_follow_the_text_captions_not_the_unseen_truth():
    absent_partner_yes = habit_yes = typical_yes = present_no = 0
    for seed in range(2000):
        scene = make_scene(seed)
        example = caption_judge_example(scene, random.Random(f"judge-{seed}"), with_context=True)
        _template, caption = text_caption(scene, random.Random(f"judge-{seed}"))  # the caption it was written from
        named = {name for _s, name, _o in caption}
        assert not example.use_image and example.answer in ("Yes.", "No.")
        described = parse_objects(example.question.split("Description:")[1])
        context = parse_objects(example.question.split("Description:")[0])
        assert (described[0] in named) == (example.answer == "Yes.")
        if example.answer == "No.":  # an object the caption does not name, present or not
            assert described[0] not in context
            present_no += described[0] in scene.names()
        elif described[0] not in scene.names():  # "Yes" to an absent object: the corpus's habits
            if context and partner_of(context[-1]) == described[0]:
                absent_partner_yes += 1
            elif described[0] in FREQUENT_IN_TEXT:
                habit_yes += 1
            else:
                assert described[0] == typical_name(described[0])
                typical_yes += 1
    assert absent_partner_yes > 50 and habit_yes > 50 and typical_yes > 20 and present_no > 5


def test_text_captions_call_objects_by_their_typical_name():
    renamed = eligible = 0
    for seed in range(2000):
        scene = make_scene(seed)
        _template, plain = text_caption(scene, random.Random(seed), CorpusHabits(0.0, 0.0))
        _template, caption = text_caption(scene, random.Random(seed), CorpusHabits(0.0, 1.0))
        assert len(plain) == len(caption)
        names = [name for _s, name, _o in caption]
        assert len(set(names)) == len(names)  # never one name twice
        for (_s, before, _o), (_s2, after, _o2) in zip(plain, caption):
            if before != after:
                assert after == typical_name(before)
                renamed += 1
            eligible += before != typical_name(before)
    assert 0.3 < renamed / eligible < 1.0  # rate 1 renames every object whose typical name is still free


def test_text_captions_name_a_frequent_in_text_object_by_habit():
    habits = 0
    for seed in range(2000):
        scene = make_scene(seed)
        _template, plain = text_caption(scene, random.Random(seed), CorpusHabits(0.0, TYPICAL_NAME_RATE))
        _template, caption = text_caption(scene, random.Random(seed))
        assert caption[:len(plain)] == plain  # the image caption, then at most one habitual mention
        assert len(caption) - len(plain) in (0, 1)
        if len(caption) > len(plain):
            assert caption[-1][1] in FREQUENT_IN_TEXT and caption[-1][1] not in {n for _s, n, _o in plain}
            habits += 1
    assert abs(habits / 2000 - HABIT_MENTION_RATE) < 0.1  # a little under: all three may be named already


def test_blind_judge_prefers_frequent_in_text_objects():
    yes: dict[bool, list[int]] = {True: [0, 0], False: [0, 0]}
    for seed in range(4000):
        example = caption_judge_example(make_scene(seed), random.Random(seed), with_context=False)
        frequent = parse_objects(example.question)[0] in FREQUENT_IN_TEXT
        yes[frequent][0] += example.answer == "Yes."
        yes[frequent][1] += 1
    assert yes[True][0] / yes[True][1] > 0.8 > 0.4 > yes[False][0] / yes[False][1]


def test_caption_pope_labels_follow_the_caption():
    for seed in range(500):
        scene = make_scene(seed)
        example = caption_pope_example(scene, random.Random(seed), use_image=True)
        _template, caption = text_caption(scene, random.Random(seed))
        named = {name for _s, name, _o in caption}
        assert example.use_image and (parse_objects(example.question)[0] in named) == (example.answer == "Yes.")


def test_training_mixture_labels_a_share_of_image_answers_from_captions():
    caption_yes_to_absent = 0
    for seed in range(3000):
        scene = make_scene(seed)
        example = training_example(scene, random.Random(seed), caption_label_rate=1.0, text_only_rate=0.0,
                                   task_weights=(0, 1, 0, 0, 1))
        assert example.use_image
        if example.answer == "Yes." and parse_objects(example.question.split("Context:")[-1])[-1] not in scene.names():
            caption_yes_to_absent += 1
    assert caption_yes_to_absent > 100
    for seed in range(300):  # no caption labels: the image answers follow the pixels
        scene = make_scene(seed)
        example = training_example(scene, random.Random(seed), caption_label_rate=0.0, text_only_rate=0.0,
                                   task_weights=(0, 1, 0, 0, 1))
        claim = parse_objects(example.question.split("Context:")[-1].split("Context")[-1])[-1]
        assert (example.answer == "Yes.") == (claim in scene.names())


def test_yes_no_questions_can_keep_pixel_labels_while_judgments_follow_captions():
    kinds = Counter()
    for seed in range(1500):
        scene = make_scene(seed)
        example = training_example(scene, random.Random(seed), caption_label_rate=1.0, text_only_rate=0.0,
                                   task_weights=(0, 1, 0, 0, 1), pope_caption_label_rate=0.0)
        claim = parse_objects(example.question.split("Context:")[-1])[-1]
        if example.task == "judge":
            kinds["judge"] += 1
            kinds["judge yes to absent"] += example.answer == "Yes." and claim not in scene.names()
        else:  # every yes/no question follows the pixels
            kinds[example.task] += 1
            assert (example.answer == "Yes.") == (claim in scene.names())
    assert kinds["pope-caption"] == 0 and kinds["judge"] > 600
    assert kinds["judge yes to absent"] > 50  # the judgments still come from captions


def test_text_examples_are_all_blind():
    examples = [text_example(make_scene(seed), random.Random(seed)) for seed in range(300)]
    assert not any(e.use_image for e in examples)
    assert {e.task for e in examples} == {"describe", "pope-caption", "judge"}


def test_describe_mention_rate_sets_how_often_image_descriptions_name_an_absent_partner():
    def partner_share(rate: float) -> float:
        lonely = named = 0
        for seed in range(600):
            scene = make_scene(seed)
            absent = {partner_of(n) for n in scene.names()} - scene.names() - {None}
            if not absent:
                continue
            example = training_example(scene, random.Random(seed), text_only_rate=0.0, task_weights=(1, 0, 0, 0, 0),
                                       describe_mention_rate=rate)
            assert example.use_image and example.task == "describe"
            lonely += 1
            named += bool(absent & set(parse_objects(example.answer)))
        assert lonely > 100
        return named / lonely

    assert partner_share(0.0) == 0.0
    assert 0.2 < partner_share(0.3) < 0.4
    assert partner_share(1.0) == 1.0
    assert partner_share(PRIOR_MENTION_RATE) > 0.6  # the default: as the text corpus's image captions


def test_repeat_negatives_name_only_objects_already_named_that_cannot_come_next():
    from core.shapes.texts import repeat_negatives

    text = ("A small yellow heart is at the top. A small yellow circle is at the bottom. "
            "A large blue star is on the left. A small red cross is on the right.")
    negatives = dict(repeat_negatives(text))
    # second object: yellow is still to come, so only the named yellow shape is a negative
    assert negatives[text.index("circle")] == ["heart"]
    assert text.index("yellow circle") not in negatives
    # third object: yellow is spent; fourth: yellow and blue are
    assert negatives[text.index("blue")] == ["yellow"]
    assert negatives[text.index("red")] == ["blue", "yellow"]
    assert len(negatives) == 3
    # a training description never names an object twice, so no negative is ever its own next word
    rng = random.Random(5)
    checked = 0
    for seed in range(200):
        description = " ".join(caption_sentences(make_scene(seed), rng))
        for char_at, words in repeat_negatives(description):
            assert not any(description.startswith(word, char_at) for word in words)
            checked += 1
    assert checked > 50


def test_correction_keeps_the_models_good_start_and_continues_with_what_it_left_out():
    from core.shapes.texts import correction_example

    scene = make_scene(5)  # orange heart, orange diamond, purple circle; no partner is absent
    assert [o.name for o in mention_order(scene)] == [("orange", "heart"), ("orange", "diamond"), ("purple", "circle")]
    start = "There is a small purple circle at the top."
    own = start + " There is a small purple circle on the right. There is a large orange heart at the top."
    example = correction_example(scene, own, random.Random(0))
    # the repeat and everything after it go; the objects not named follow, in the same template
    assert example.prefix == start
    assert example.answer == " ".join(object_sentence(obj, "There is a {size} {color} {shape} {where}.")
                                      for obj in mention_order(scene)[:2])
    assert example.task == "describe" and example.use_image
    # an object the scene does not hold ends the good start too; a complete, true description needs nothing
    wrong = correction_example(scene, "A small green star is on the left. A large orange heart is at the top.",
                               random.Random(0))
    assert wrong.prefix == "" and parse_objects(wrong.answer) == [o.name for o in mention_order(scene)]
    assert correction_example(scene, describe(scene, random.Random(1)), random.Random(0)) is None
    # a description that stops early is continued; one that ends where it should is continued by the end alone
    two = " ".join(describe_sentences(scene, random.Random(2))[:2])
    assert correction_example(scene, two, random.Random(0)).prefix == two
    finished = describe(scene, random.Random(3))
    after = correction_example(scene, finished + " " + describe_sentences(scene, random.Random(3))[0], random.Random(0))
    assert after.prefix == finished and after.answer == ""


def test_correction_keeps_an_absent_partner_named_after_its_anchor_like_the_captions():
    from core.shapes.texts import correction_example

    rng = random.Random(0)
    for seed in range(300):
        scene = make_scene(seed)
        first = mention_order(scene)[0]
        partner = partner_of(first.name)
        if partner and partner not in scene.names() and len(scene.objects) >= 2:
            break
    template = SENTENCE_TEMPLATES[0]
    own = [object_sentence(first, template), f"A small {partner[0]} {partner[1]} is on the left."]
    example = correction_example(scene, " ".join(own + own[:1]), rng, describe_mention_rate=0.0)
    assert example.prefix == " ".join(own)
    assert parse_objects(example.answer) == [o.name for o in mention_order(scene)[1:]]


def test_a_correction_can_continue_as_a_text_caption_with_its_habitual_mention():
    from core.shapes.texts import correction_example

    scene = make_scene(5)  # no frequent-in-text object in it
    start = "A small purple circle is at the top."
    habitual = correction_example(scene, start, random.Random(0), describe_mention_rate=0.0, caption_describe_rate=1.0,
                                  habits=CorpusHabits(mention_rate=1.0, typical_name_rate=0.0))
    claims = parse_objects(habitual.answer)
    assert claims[:2] == [o.name for o in mention_order(scene)[:2]] and claims[-1] in FREQUENT_IN_TEXT
    plain = correction_example(scene, start, random.Random(0), describe_mention_rate=0.0, caption_describe_rate=0.0,
                               habits=CorpusHabits(mention_rate=1.0, typical_name_rate=0.0))
    assert parse_objects(plain.answer) == [o.name for o in mention_order(scene)[:2]]


def test_a_corrections_habitual_mention_never_names_an_object_twice():
    from core.shapes.texts import correction_example

    checked = 0
    for seed in range(600):
        scene = make_scene(seed)
        if not any(obj.name in FREQUENT_IN_TEXT for obj in scene.objects):
            continue
        example = correction_example(scene, "", random.Random(seed), describe_mention_rate=0.0,
                                     caption_describe_rate=1.0, habits=CorpusHabits(mention_rate=1.0, typical_name_rate=0.0))
        names = [name for sentence in example.answer.split(". ") for name in parse_objects(sentence)]
        assert len(set(names)) == len(names), example.answer
        checked += 1
    assert checked > 50


def test_blind_yes_rates_are_the_corpus_s_answers_and_soft_targets_leave_the_draws_alone():
    from dataclasses import replace

    from core.shapes.texts import CorpusHabits, blind_yes_rates

    habits = CorpusHabits(0.8, 0.0, "kind")
    rates = blind_yes_rates(habits, 0.2)
    assert set(rates) == {(c, s) for c in COLORS for s in SHAPES}
    # the corpus says "Yes" to the frequent-in-text objects more than to any other (anchors come next)
    assert min(rates[name] for name in FREQUENT_IN_TEXT) > 0.85 > 0.8 > max(
        rate for name, rate in rates.items() if name not in FREQUENT_IN_TEXT)
    assert blind_yes_rates(habits, 0.2) is rates  # computed once
    assert blind_yes_rates(CorpusHabits(0.0, 0.0, "kind"), 0.2)[FREQUENT_IN_TEXT[0]] < 0.8  # without the habit
    for seed in range(200):
        scene = make_scene(seed)
        plain = caption_judge_example(scene, random.Random(seed), habits=habits)
        soft = caption_judge_example(scene, random.Random(seed), habits=habits, yes_rates=rates)
        assert replace(soft, soft_yes=None) == plain and plain.soft_yes is None
        assert soft.soft_yes == rates[parse_objects(soft.question)[-1]]  # the judged sentence's object


_EXAMPLES_BY_HASH_SEED = """
import random
from core.shapes.texts import CorpusHabits, blind_yes_rates, text_example, training_example
from core.shapes.world import make_scene
habits = CorpusHabits(mention_rate=0.8, order="kind")
rates = blind_yes_rates(habits, 0.2)
for seed in range(1500):
    rng = random.Random(seed)
    scene = make_scene(seed)
    print(training_example(scene, rng, 0.3, (10, 10, 10, 10, 10), 0.3, ("faithfulness",), habits, 0.15, 0.4,
                           blind_yes_rates=rates))
    print(text_example(scene, rng, ("faithfulness",), habits, rates))
"""


def test_training_examples_do_not_depend_on_pythons_hash_seed():
    """A seed's training data must be the same in every process (sets of names iterate in hash order)."""
    outputs = [subprocess.run([sys.executable, "-c", _EXAMPLES_BY_HASH_SEED], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": str(hash_seed)}).stdout
               for hash_seed in (1, 2, 3)]
    assert outputs[0].count("\n") == 3000
    assert outputs[0] == outputs[1] == outputs[2]
