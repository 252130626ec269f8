"""POPE: the published sampling on hand-computed cases, the reply reading, the metrics, and answering with a model."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from core.benchmarks.coco import CocoAnnotations
from core.engine.chat import prepare_image
from core.engine.judge import JudgeItem, JudgeSettings, judge_sentences
from core.benchmarks.pope import (PopeQuestion, answer_questions, build_questions, pope_metrics, question_text,
                                  reads_as_yes)
from tests.coco_fixture import COLOURS, write_coco

SAMPLED = [1, 2, 3, 5]  # the fixture's images with >= 3 annotated objects


@pytest.fixture(scope="module")
def annotations(tmp_path_factory):
    _, instances, captions = write_coco(tmp_path_factory.mktemp("coco"))
    return CocoAnnotations.load(instances, captions)


def _pairs(questions, image_id):
    return [(q.object, q.label) for q in questions if q.image_id == image_id]


def test_question_text_uses_a_or_an():
    assert question_text("dog") == "Is there a dog in the image?"
    assert question_text("apple") == "Is there an apple in the image?"


def test_popular_negatives_are_the_most_frequent_absent_objects(annotations):
    # frequency over the sampled images: person 3, cup 2, dining table 2, the rest 1 (ties by name)
    questions = build_questions(annotations, SAMPLED, "popular", seed=0)
    assert len(questions) == 6 * len(SAMPLED)
    assert _pairs(questions, 1) == [("dog", True), ("cup", False), ("person", True), ("dining table", False),
                                    ("bicycle", True), ("car", False)]
    assert questions[0] == PopeQuestion(1, "dog", True, "Is there a dog in the image?")


def test_adversarial_negatives_co_occur_with_the_positive(annotations):
    questions = build_questions(annotations, SAMPLED, "adversarial", seed=0)
    pairs = _pairs(questions, 2)  # cat, dining table, cup
    # cat co-occurs only with objects present: a random absent object; dining table co-occurs most with
    # cup (2, present), then cat (present), hot dog; cup: dining table, cat, hot dog (asked), person
    assert [p for i, p in enumerate(pairs) if i != 1] == [("cat", True), ("dining table", True), ("hot dog", False),
                                                          ("cup", True), ("person", False)]
    assert pairs[1][1] is False and pairs[1][0] in {"person", "bicycle", "car", "dog", "hot dog", "toilet"}


def test_random_negatives_are_absent_distinct_and_seeded(annotations):
    questions = build_questions(annotations, SAMPLED, "random", seed=3)
    assert questions == build_questions(annotations, SAMPLED, "random", seed=3)
    for image_id in SAMPLED:
        pairs = _pairs(questions, image_id)
        present = set(annotations.images[image_id].instance_objects)
        negatives = [o for o, label in pairs if not label]
        assert len(negatives) == 3 == len(set(negatives))
        assert not present & set(negatives)
        assert [o for o, label in pairs if label] == annotations.images[image_id].instance_objects[:3]


def test_images_with_fewer_than_three_objects_are_refused(annotations):
    with pytest.raises(ValueError, match="at least 3 annotated objects"):
        build_questions(annotations, [1, 4], "random", seed=0)
    with pytest.raises(ValueError, match="split must be"):
        build_questions(annotations, [1], "hard", seed=0)


@pytest.mark.parametrize("reply, yes", [
    ("Yes, there is a dog in the image.", True), ("No.", False), ("There is not a dog.", False),
    ("no", False), ("Yes. No dog though.", True), ("Nope", True), ("No, there is none", False),
])
def test_reads_as_yes_like_pope(reply, yes):
    assert reads_as_yes(reply) is yes


def test_metrics_hand_computed():
    m = pope_metrics([True, True, True, False, False, False], [True, True, False, True, False, False])
    assert (m.tp, m.fn, m.fp, m.tn) == (2, 1, 1, 2)
    assert (m.accuracy, m.precision, m.recall, m.f1, m.yes_ratio) == pytest.approx((4 / 6, 2 / 3, 2 / 3, 2 / 3, 0.5))
    never = pope_metrics([True, False], [False, False])
    assert math.isnan(never.precision) and never.recall == 0 and math.isnan(never.f1) and never.yes_ratio == 0
    with pytest.raises(ValueError, match="as many predictions"):
        pope_metrics([True], [])


def test_answers_are_the_judge_log_odds(tiny_llava, annotations):
    images = {i: Image.new("RGB", (32, 32), COLOURS[i]) for i in (1, 2)}
    questions = build_questions(annotations, [1, 2], "popular", seed=0)
    prepared = [prepare_image(tiny_llava.processor, images[i]) for i in (1, 2)]
    verdicts = judge_sentences(tiny_llava, prepared, [JudgeItem(q.image_id - 1, q.text) for q in questions],
                               JudgeSettings(kind="log-odds", template="{sentence}"))
    raw = answer_questions(tiny_llava, images, questions, "raw")
    debiased = answer_questions(tiny_llava, images, questions, "debiased", alpha=2.0, images_per_batch=1)
    for a, b, v in zip(raw, debiased, verdicts):
        assert a.score == pytest.approx(v.raw["log-odds"], abs=1e-4)
        assert b.score == pytest.approx(3 * v.raw["log-odds"] - 2 * v.blind["log-odds"], abs=1e-4)
        assert (a.yes, b.yes) == (a.score > 0, b.score > 0)
    assert [a.question for a in raw] == questions


def test_answers_read_from_replies(tiny_llava, annotations):
    images = {i: Image.new("RGB", (32, 32), COLOURS[i]) for i in (1, 2)}
    questions = build_questions(annotations, [1, 2], "random", seed=0)
    answers = answer_questions(tiny_llava, images, questions, "answer")
    assert [a.yes for a in answers] == [reads_as_yes(a.reply) for a in answers]
    assert all(math.isnan(a.score) for a in answers)
    with pytest.raises(ValueError, match="mode must be"):
        answer_questions(tiny_llava, images, questions, "vote")
