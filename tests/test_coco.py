"""CHAIR on hand-computed cases: synonyms, plurals, two-word phrases, special cases and the counting."""

from __future__ import annotations

import math

import pytest

from core.benchmarks.coco import CocoAnnotations, Mention, ObjectVocabulary, chair, singularize, tokenize
from tests.coco_fixture import write_coco


@pytest.fixture(scope="module")
def vocabulary():
    return ObjectVocabulary.load()


@pytest.fixture(scope="module")
def annotations(tmp_path_factory, vocabulary):
    _, instances, captions = write_coco(tmp_path_factory.mktemp("coco"))
    return CocoAnnotations.load(instances, captions, vocabulary)


def test_the_published_list_has_the_80_coco_categories(vocabulary):
    assert len(vocabulary.categories) == 80
    assert vocabulary.categories[:3] == ["person", "bicycle", "car"]
    assert vocabulary.categories[-1] == "toothbrush"
    # the published file's double spaces ("scooter,  motor bike") are stripped
    assert vocabulary.category_of["motor bike"] == "motorcycle"
    assert vocabulary.category_of["cheesecake"] == "cake"


@pytest.mark.parametrize("plural, singular", [
    ("dogs", "dog"), ("people", "person"), ("men", "man"), ("women", "woman"), ("policemen", "policeman"),
    ("children", "child"), ("buses", "bus"), ("bus", "bus"), ("glasses", "glass"), ("sandwiches", "sandwich"),
    ("puppies", "puppy"), ("knives", "knife"), ("calves", "calf"), ("stoves", "stove"), ("ties", "tie"),
    ("skis", "skis"), ("scissors", "scissors"), ("sheep", "sheep"), ("tennis", "tennis"), ("canoes", "canoe"),
])
def test_singularize(plural, singular):
    assert singularize(plural) == singular


def test_tokenize_splits_possessives_and_keeps_hyphenated_words():
    assert tokenize("The Dog's T-shirt, two cats.") == ["the", "dog", "t-shirt", "two", "cats"]


@pytest.mark.parametrize("text, expected", [
    ("Two wine glasses and hot dogs.", [("wine glass", "wine glass"), ("hot dog", "hot dog")]),
    ("A baby elephant.", [("elephant", "elephant")]),  # not "baby" -> person
    ("An adult giraffe and a baby.", [("giraffe", "giraffe"), ("baby", "person")]),
    ("A passenger jet.", [("jet", "airplane")]),  # not "passenger" -> person
    ("A bow tie.", [("tie", "tie")]),
    ("A toilet seat and a chair.", [("toilet", "toilet"), ("chair", "chair")]),
    ("The seat of the toilet.", [("toilet", "toilet")]),  # "seat" is dropped next to a toilet
    ("A seat on the bus.", [("seat", "chair"), ("bus", "bus")]),
    ("A man on a motor bike with his puppies.", [("man", "person"), ("motor bike", "motorcycle"),
                                                 ("puppy", "dog")]),
    ("A dog and another dog.", [("dog", "dog"), ("dog", "dog")]),  # repeats count
    ("A hot-dog stand.", []),  # one hyphenated token, as nltk tokenises it
    ("Train tracks by a bus.", [("bus", "bus")]),  # "train track" is not a train (OPERA's addition)
])
def test_mentions(vocabulary, text, expected):
    assert vocabulary.mentions(text) == [Mention(w, c) for w, c in expected]


def test_ground_truth_is_instances_plus_reference_captions(annotations):
    assert annotations.images[1].instance_objects == ["dog", "person", "bicycle"]
    assert annotations.ground_truth(1) == {"dog", "person", "bicycle"}
    assert annotations.ground_truth(2) == {"cat", "dining table", "cup"}  # "table" in a caption is dining table
    assert annotations.ground_truth(3) == {"toilet", "person", "car", "sink"}  # sink only from the caption


def test_chair_counts(annotations):
    captions = [
        (1, "A woman rides a bicycle with her dogs and a cat."),  # cat hallucinated; recalls 3 of 3
        (2, "A cat on a dining table next to a chair."),  # chair hallucinated; recalls cat, dining table: 2 of 3
        (3, "The seat of the toilet is next to a sink."),  # seat dropped; recalls toilet, sink: 2 of 4
    ]
    result = chair(captions, annotations)
    assert result.chair_s == pytest.approx(2 / 3)
    assert result.chair_i == pytest.approx(2 / 9)  # 2 hallucinated of 4 + 3 + 2 mentions
    assert result.recall == pytest.approx(7 / 10)
    assert [c.hallucinated for c in result.captions] == [[Mention("cat", "cat")], [Mention("chair", "chair")], []]
    assert result.captions[1].recalled == ["cat", "dining table"]
    assert result.summary() == {"chair_s": pytest.approx(2 / 3), "chair_i": pytest.approx(2 / 9),
                                "recall": pytest.approx(0.7), "captions": 3, "mentions": 9, "hallucinated": 2}


def test_chair_of_captions_without_objects(annotations):
    result = chair([(4, "Something blue.")], annotations)
    assert result.chair_s == 0 and math.isnan(result.chair_i) and result.recall == 0


def test_chair_rejects_an_unknown_image(annotations):
    with pytest.raises(KeyError, match="image 99"):
        chair([(99, "A dog.")], annotations)


def test_sample_is_seeded_and_can_require_objects(annotations):
    assert annotations.sample(3, seed=7) == annotations.sample(3, seed=7)
    assert sorted(annotations.sample(5, seed=1)) == [1, 2, 3, 4, 5]
    assert 4 not in annotations.sample(4, seed=1, min_objects=3)
    with pytest.raises(ValueError, match="only 4 qualify"):
        annotations.sample(5, seed=1, min_objects=3)


def test_load_rejects_files_that_are_not_coco(tmp_path, vocabulary):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": []}')
    with pytest.raises(ValueError, match="no 'annotations'"):
        CocoAnnotations.load(bad, bad, vocabulary)
