"""Tests for bench/pope_errors.py: each yes/no question is sorted by what answering it takes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from core.shapes.world import PRIOR_PAIRS, Scene, SceneObject

SPEC = importlib.util.spec_from_file_location("pope_errors", Path(__file__).parent.parent / "bench" / "pope_errors.py")
pope_errors = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(pope_errors)


def _object(color: str, shape: str, **flags) -> SceneObject:
    return SceneObject(shape=shape, color=color, size="small", position="left", x=10, y=10, **flags)


def test_question_kinds_follow_visibility_and_how_an_absent_object_relates_to_the_scene():
    anchor, partner = PRIOR_PAIRS[0].anchor, PRIOR_PAIRS[0].partner
    objects = (_object("red", "circle"), _object("red", "square", faint=True), _object(*anchor, low_contrast=True))
    scene = Scene(seed=0, objects=objects, background=(0, 0, 0), noise=0.0)
    kind = pope_errors.question_kind
    assert kind(scene, ("red", "circle")) == "clear, colour shared"
    assert kind(scene, ("red", "square")) == "faint, colour shared"
    assert kind(scene, anchor) == "low contrast"
    assert kind(scene, partner) == "absent partner"
    assert kind(scene, ("red", anchor[1])) == "shares colour and shape"  # red with the circle, shape with the anchor
    others = [c for c in ("blue", "green", "purple", "orange") if c != anchor[0] and c != partner[0]]
    assert kind(scene, (others[0], "circle")) == "shares shape"
    odd_shape = next(s for s in ("cross", "diamond", "heart") if s not in {anchor[1], "circle", "square"})
    assert kind(scene, ("red", odd_shape)) == "shares colour"
    assert kind(scene, (others[0], odd_shape)) == "unrelated"


def test_counts_cover_every_question_once_and_the_table_adds_up(tiny_llava):
    rows = pope_errors.pope_errors(tiny_llava, n=3, first_seed=4_000_000, batch_size=2)
    assert sum(r["n"] for r in rows.values()) == 6  # one yes and one no question per scene
    assert all(0 <= r["errors"] <= r["n"] for r in rows.values())
    assert sum(r["n"] for kind, r in rows.items() if kind.split(",")[0] in pope_errors.PRESENT_KINDS) == 3
    wrong = sum(r["errors"] for r in rows.values())
    assert f"| all | 6 | {wrong} | accuracy {1 - wrong / 6:.1%} |" in pope_errors.format_table(rows)
