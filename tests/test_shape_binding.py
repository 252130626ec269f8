"""Tests for bench/shape_binding.py: teacher-forced shape naming, split by whether an object's colour is shared."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from core.engine.prompts import DESCRIBE_QUESTION
from core.shapes.evaluate import chat_prompt
from core.shapes.world import SHAPES, Scene, SceneObject, WorldOptions, render

SPEC = importlib.util.spec_from_file_location("shape_binding",
                                              Path(__file__).parent.parent / "bench" / "shape_binding.py")
shape_binding = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(shape_binding)


def _object(color: str, shape: str, x: int) -> SceneObject:
    return SceneObject(shape=shape, color=color, size="small", position="left", x=x, y=10)


def test_forced_cases_say_the_true_description_so_far_and_group_objects_by_colour():
    scene = Scene(seed=0, objects=(_object("red", "star", 90), _object("blue", "circle", 50),
                                   _object("red", "circle", 10)), background=(0, 0, 0), noise=0.0)
    cases = shape_binding.forced_cases(scene, "kind-left")
    assert [(shape, group) for _prefix, shape, group in cases] == [
        ("circle", "first of a colour"), ("star", "later of a colour"), ("circle", "own colour")]
    assert cases[0][0] == "There is a small red"
    assert cases[1][0] == "There is a small red circle on the left. There is a small red"
    assert cases[2][0].startswith(cases[1][0] + " star on the left. ")
    assert cases[2][0].endswith("There is a small blue")


def test_counts_cover_every_object_and_the_named_shape_is_the_highest_ranked_shape_word(tiny_llava):
    world = WorldOptions()
    result = shape_binding.shape_binding(tiny_llava, 3, 4_000_000, "kind", world)
    assert sum(r["objects"] for r in result.values()) == sum(len(world.scene(4_000_000 + i).objects)
                                                            for i in range(3))
    assert all(0.0 <= r["shape_right"] <= 1.0 for r in result.values())
    # one prefix scored alone: the shape word with the largest logit, compared by hand
    scene = world.scene(4_000_000)
    prefix = shape_binding.forced_cases(scene, "kind")[0][0]
    prompt = chat_prompt(tiny_llava.processor, DESCRIBE_QUESTION, with_image=True)
    inputs = tiny_llava.processor(text=[prompt + " " + prefix], images=[render(scene)], return_tensors="pt",
                                  add_special_tokens=False)
    with torch.no_grad():
        logits = tiny_llava.model(**inputs).logits[0, -1]
    ids = [tiny_llava.processor.tokenizer(" " + s, add_special_tokens=False)["input_ids"][0] for s in SHAPES]
    expected = SHAPES[int(torch.stack([logits[i] for i in ids]).argmax())]
    assert shape_binding.next_shape(tiny_llava, render(scene), prompt, [prefix, prefix]) == [expected, expected]
