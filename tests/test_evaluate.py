"""Tests for core/shapes/evaluate.py: the prior rates count faint objects and absent partners exactly."""

from __future__ import annotations

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
