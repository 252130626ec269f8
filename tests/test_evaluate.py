"""Tests for core/shapes/evaluate.py: the prior rates count faint objects and absent partners exactly."""

from __future__ import annotations

import math

from core.shapes.evaluate import prior_rates
from core.shapes.world import PRIOR_PAIRS, make_scene


def _scene_with(condition) -> object:
    return next(s for s in (make_scene(seed) for seed in range(5000)) if condition(s))


def test_prior_rates_count_faint_objects_and_absent_partners():
    pair = PRIOR_PAIRS[0]
    lonely = _scene_with(lambda s: pair.anchor in s.names() and pair.partner not in s.names()
                         and len(s.objects) == 1)
    faint = _scene_with(lambda s: any(o.faint for o in s.objects) and all(o.faint or o.name != pair.partner
                                                                         for o in s.objects))
    faint_obj = next(o for o in faint.objects if o.faint)
    partner_sentence = f"A small {pair.partner[0]} {pair.partner[1]} is on the left."
    assert prior_rates([lonely], [partner_sentence]) == (0.0, 1.0)
    assert prior_rates([lonely], ["Nothing."]) == (0.0, 0.0)
    named, _ = prior_rates([faint], [f"There is a {faint_obj.color} {faint_obj.shape}."])
    assert named == 1 / sum(o.faint for o in faint.objects)


def test_repeated_object_rate_counts_captions_naming_one_object_twice():
    from core.shapes.evaluate import repeated_object_rate

    captions = ["A large yellow circle is on the left. A small blue heart is on the right.",
                "A large yellow circle is on the left. A large yellow circle is on the right.",
                "Nothing here.", "A red square. A red square. A red square."]
    assert repeated_object_rate(captions) == 0.5


def test_absent_object_pairs_match_the_slot_and_differ_only_in_plausibility():
    from core.shapes.evaluate import absent_object_pairs
    from core.shapes.metrics import parse_objects
    from core.shapes.texts import FREQUENT_IN_TEXT

    pairs = absent_object_pairs(40, 0)
    assert len(pairs) == 40
    anchors = {pair.anchor for pair in PRIOR_PAIRS}
    for scene, plausible, implausible in pairs:
        (partner,), (other,) = parse_objects(plausible), parse_objects(implausible)
        assert partner in FREQUENT_IN_TEXT and partner not in scene.names()
        assert any(p.anchor in scene.names() and p.partner == partner for p in PRIOR_PAIRS)
        assert other not in scene.names() and other not in FREQUENT_IN_TEXT and other not in anchors
        # same template, size and position: only the colour and shape words differ
        assert plausible.replace(partner[0], "C").replace(partner[1], "S") == \
            implausible.replace(other[0], "C").replace(other[1], "S")


def test_p_yes_uses_every_answer_spelling_and_leaves_the_tokenizer_alone(tiny_llava):
    from core.shapes.evaluate import p_yes

    tokenizer = tiny_llava.processor.tokenizer
    before = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        probs = p_yes(tiny_llava, ["Is there a red circle?", "Is it?"], None)
        assert tokenizer.padding_side == "right"
    finally:
        tokenizer.padding_side = before
    assert len(probs) == 2 and all(0 < p < 1 for p in probs)
    # left padding: the short question's answer position is the last one, as for the long one alone
    alone = p_yes(tiny_llava, ["Is it?"], None)
    assert abs(alone[0] - probs[1]) < 1e-4


def test_prior_section_runs_and_reports_every_context(tiny_llava):
    from core.shapes.evaluate import format_prior, prior_section

    try:
        section = prior_section(tiny_llava, n=3, samples=2, batch_size=3, alphas=(1.0,))
    except ValueError as error:  # a random tiny model may write no object at all
        assert "faithful and hallucinated" in str(error)
        return
    assert set(section.auroc) == {"sentence", "response"}
    assert set(section.auroc["sentence"]) == {"raw", "blind", "debiased a=1.0"}
    assert set(section.within_scene["response"]) == {"raw", "blind", "debiased a=1.0"}
    assert section.n_pairs == 3 and 0 <= section.plausible_yes <= 1
    assert "ratio plausible / implausible" in format_prior(section)


def test_kind_means_group_sentences_by_truth_and_how_the_text_corpus_sees_their_object():
    from types import SimpleNamespace

    from core.shapes.evaluate import kind_means, object_kind

    assert object_kind(("blue", "heart")) == "frequent in text"  # a prior partner
    assert object_kind(("yellow", "star")) == "typical name"  # an anchor: yellow's typical shape
    assert object_kind(("yellow", "heart")) == "other" and object_kind(None) == "other"
    pool = [(0, "", "A small blue heart is on the left.", True), (0, "", "A small blue heart is on the right.", True),
            (1, "", "A large yellow heart is at the top.", False)]
    verdicts = [SimpleNamespace(raw={"logit": r}, blind={"logit": b}) for r, b in ((1.0, 3.0), (2.0, 5.0), (4.0, -1.0))]
    means = kind_means(pool, verdicts, "logit")
    assert means == {"faithful, other": {"n": 1, "raw": 4.0, "blind": -1.0},
                     "hallucinated, frequent in text": {"n": 2, "raw": 1.5, "blind": 4.0}}


def test_within_scene_auroc_compares_sentences_of_one_scene_only():
    from core.engine.auroc import auroc
    from core.shapes.evaluate import within_scene_auroc

    # Scene 0's sentences all score high, scene 1's low: pooled, a hallucination of scene 0 beats a
    # faithful sentence of scene 1; within each scene the faithful one always wins.
    scores = [9.0, 8.0, 2.0, 1.0, 5.0]
    labels = [True, False, True, False, True]
    scenes = [0, 0, 1, 1, 2]  # scene 2 has no hallucinated sentence: no pair
    assert within_scene_auroc(scores, labels, scenes) == 1.0
    assert auroc(scores, labels) < 1.0
    assert within_scene_auroc([3.0, 3.0], [True, False], [0, 0]) == 0.5  # a tie counts half
    assert math.isnan(within_scene_auroc([1.0, 2.0], [True, False], [0, 1]))


def test_repeats_missing_an_object_and_recall_by_objects_count_exactly():
    from core.shapes.evaluate import recall_by_objects, repeats_missing_an_object

    two = _scene_with(lambda s: len(s.objects) == 2)
    one = _scene_with(lambda s: len(s.objects) == 1)
    first, second = ([f"A large {o.color} {o.shape} is on the left." for o in two.objects])
    only = f"A small {one.objects[0].color} {one.objects[0].shape} is on the right."
    captions = [f"{first} {first}", f"{first} {second} {second}", only, only]
    scenes = [two, two, one, one]
    assert repeats_missing_an_object(captions, scenes) == 0.5  # two repeat; the first leaves `second` unnamed
    assert math.isnan(repeats_missing_an_object([only], [one]))
    assert recall_by_objects(captions, scenes) == {1: 1.0, 2: 0.75}


def test_missed_objects_are_counted_by_what_the_caption_did_instead():
    from core.shapes.evaluate import missed_objects_by_cause
    from core.shapes.world import COLORS, SHAPES

    two = _scene_with(lambda s: len(s.objects) == 2)
    first, second = ([f"A large {o.color} {o.shape} is on the left." for o in two.objects])
    absent = next((c, s) for c in COLORS for s in SHAPES if (c, s) not in two.names())
    other = f"A small {absent[0]} {absent[1]} is at the top."
    captions = [f"{first} {first}", first, f"{first} {other}", f"{first} {second}"]
    # four scenes of two objects: each of the first three captions leaves one object unnamed, for its own cause
    assert missed_objects_by_cause(captions, [two] * 4) == {"repeat": 0.125, "short": 0.125, "substituted": 0.125}
    assert missed_objects_by_cause([f"{first} {second}"], [two]) == {"repeat": 0.0, "short": 0.0, "substituted": 0.0}


def test_recall_by_visibility_groups_objects_by_how_they_are_rendered():
    from core.shapes.evaluate import recall_by_visibility

    faint = _scene_with(lambda s: len(s.objects) == 2 and s.objects[0].faint and not s.objects[1].faint
                        and not s.objects[1].low_contrast)
    dim, clear = faint.objects
    caption = f"A large {clear.color} {clear.shape} is on the left."
    assert recall_by_visibility([caption], [faint]) == {"clear": 1.0, "faint": 0.0}
    both = caption + f" A small {dim.color} {dim.shape} is on the right."
    assert recall_by_visibility([caption, both], [faint, faint]) == {"clear": 1.0, "faint": 0.5}


def test_shape_errors_are_counted_apart_for_scenes_where_two_objects_share_a_colour():
    from core.shapes.evaluate import shape_errors_by_colours
    from core.shapes.world import SHAPES

    shared = _scene_with(lambda s: len(s.objects) == 2 and s.objects[0].color == s.objects[1].color)
    distinct = _scene_with(lambda s: len(s.objects) == 2 and s.objects[0].color != s.objects[1].color)

    def wrong_shape(scene) -> str:  # a present colour with a shape no object of the scene has
        obj = scene.objects[0]
        shape = next(sh for sh in SHAPES if sh not in {o.shape for o in scene.objects})
        return f"A small {obj.color} {shape} is on the left."

    faithful = " ".join(f"A small {o.color} {o.shape} is on the left." for o in distinct.objects)
    elsewhere = next(c for c in ("red", "green", "blue", "yellow", "purple", "orange")
                     if c not in {o.color for o in distinct.objects})  # a colour error, not a shape one
    captions = [wrong_shape(shared), wrong_shape(shared) + " " + wrong_shape(shared), faithful,
                f"A small {elsewhere} {distinct.objects[0].shape} is on the left."]
    assert shape_errors_by_colours(captions, [shared, shared, distinct, distinct]) == {
        "shared colour": (2, 2), "distinct colours": (0, 2)}  # a repeated claim counts once per caption


def test_recall_and_repeats_are_reported_apart_for_scenes_where_two_objects_share_a_colour():
    from core.shapes.evaluate import describe_by_colours

    shared = _scene_with(lambda s: len(s.objects) == 2 and s.objects[0].color == s.objects[1].color)
    distinct = _scene_with(lambda s: len(s.objects) == 3 and len({o.color for o in s.objects}) == 3)
    one, _other = (f"A large {o.color} {o.shape} is on the left." for o in shared.objects)
    faithful = " ".join(f"A small {o.color} {o.shape} is on the left." for o in distinct.objects)
    captions = [f"{one} {one}", one, faithful]  # the shared colour's second object is never named
    assert describe_by_colours(captions, [shared, shared, distinct]) == {
        "shared colour": {"scenes": 2, "recall": 0.5, "repeats": 0.5},
        "distinct colours": {"scenes": 1, "recall": 1.0, "repeats": 0.0}}
    assert list(describe_by_colours([faithful], [distinct])) == ["distinct colours"]  # no empty group


def test_evaluate_reports_recall_by_scene_size_consistent_with_the_pooled_recall(tiny_llava):
    from core.shapes.evaluate import evaluate, format_report

    result = evaluate(tiny_llava, n=6, batch_size=3)
    sizes = {}
    for seed in range(6):
        count = len(make_scene(seed).objects)
        sizes[count] = sizes.get(count, 0) + count
    assert set(result.recall_by_objects) == set(sizes)
    pooled = sum(result.recall_by_objects[c] * n for c, n in sizes.items()) / sum(sizes.values())
    assert math.isclose(pooled, result.describe.recall)
    assert "scenes of 1 object" in format_report(result) or 1 not in sizes
    groups = result.describe_by_colours.values()  # the colour groups split the same scenes and objects
    assert sum(g["scenes"] for g in groups) == 6
    shared_objects = sum(len(make_scene(seed).objects) for seed in range(6) if make_scene(seed).shares_a_colour())
    by_group = {"shared colour": shared_objects, "distinct colours": sum(sizes.values()) - shared_objects}
    pooled = sum(g["recall"] * by_group[name] for name, g in result.describe_by_colours.items()) / sum(sizes.values())
    assert math.isclose(pooled, result.describe.recall)
