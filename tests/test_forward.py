"""Batched and prefix-cached passes equal the naive one-pass-per-row reference, with few passes."""

from __future__ import annotations

import pytest
import torch

from core.chat import answer_ids, prepare_image, prompt_ids
from core.forward import Row, _chunks, run_rows
from core.prompts import judge_prompt
from core.world import make_scene, render

FAMILIES = ["tiny_llava", "tiny_idefics3", "tiny_qwen2_vl"]
ANSWERS = ["There is a small red circle on the left. A large blue star is at the top.", "No shapes.",
           "I can see a green heart."]


def scoring_rows(loaded, seeds=(0, 1)):
    """Token rows and judge rows, with and without the image, for two images (as core.judge builds them)."""
    processor = loaded.processor
    images = [prepare_image(processor, render(make_scene(s))) for s in seeds]
    question = "Describe the image."
    rows = []
    for index, image in enumerate(images):
        for answer in ANSWERS:
            ids = answer_ids(processor, question, answer)
            rows += [Row(tuple(prompt_ids(processor, question, image) + ids), index, len(ids)),
                     Row(tuple(prompt_ids(processor, question, None) + ids), None, len(ids)),
                     Row(tuple(prompt_ids(processor, judge_prompt(answer), image)), index, 0),
                     Row(tuple(prompt_ids(processor, judge_prompt(answer), None)), None, 0)]
    return images, rows


def assert_same(outputs, reference, tolerance=1e-4):
    assert len(outputs) == len(reference)
    for out, ref in zip(outputs, reference):
        assert out.token_logprobs.shape == ref.token_logprobs.shape
        assert torch.allclose(out.token_logprobs, ref.token_logprobs, atol=tolerance, rtol=0)
        assert torch.allclose(out.next_logits, ref.next_logits, atol=tolerance, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_and_cached_equal_naive(family, request):
    loaded = request.getfixturevalue(family)
    images, rows = scoring_rows(loaded)
    naive = run_rows(loaded.model, images, rows, "naive")
    assert_same(run_rows(loaded.model, images, rows, "batched"), naive)
    assert_same(run_rows(loaded.model, images, rows, "cached"), naive)


def test_cached_in_small_chunks_equals_naive(tiny_llava):
    images, rows = scoring_rows(tiny_llava, seeds=(0,))
    naive = run_rows(tiny_llava.model, images, rows, "naive")
    assert_same(run_rows(tiny_llava.model, images, rows, "cached", max_tokens=200), naive)


def test_naive_matches_a_plain_forward(tiny_llava):
    images, rows = scoring_rows(tiny_llava, seeds=(0,))
    row = rows[0]
    logits = tiny_llava.model(input_ids=torch.tensor([row.ids]), **images[0].tensors).logits[0]
    logprobs = torch.log_softmax(logits, dim=-1)
    expected = torch.stack([logprobs[t - 1, row.ids[t]] for t in range(len(row.ids) - row.n_scored, len(row.ids))])
    out = run_rows(tiny_llava.model, images, [row], "naive")[0]
    assert torch.allclose(out.token_logprobs, expected, atol=1e-5)
    assert torch.allclose(out.next_logits, logits[-1], atol=1e-5)


def test_cached_encodes_each_image_once_in_few_passes(tiny_llava):
    """2 images x 3 answers -> 24 rows (18 distinct): a prefix pass per bucket (images, blind), then suffix
    passes; the blind rows' lengths differ too much for one pass under the padding limit."""
    images, rows = scoring_rows(tiny_llava)
    vision_batches, forward_calls = [], []
    vision = tiny_llava.model.model.vision_tower
    hooks = [vision.register_forward_hook(lambda m, args, kwargs, out: vision_batches.append(
                 (kwargs.get("pixel_values", args[0] if args else None)).shape[0]), with_kwargs=True),
             tiny_llava.model.register_forward_hook(lambda m, args, kwargs, out: forward_calls.append(
                 kwargs["input_ids"].shape), with_kwargs=True)]
    try:
        run_rows(tiny_llava.model, images, rows, "cached")
    finally:
        for hook in hooks:
            hook.remove()
    assert vision_batches == [2]  # both images, once, in one batch
    # images: prefix (2 images), 12 suffixes; blind (the same rows for both images): prefix, 6 suffixes
    assert [shape[0] for shape in forward_calls] == [2, 12, 1, 2, 3, 1]


def test_identical_rows_are_computed_once_except_in_naive_mode(tiny_llava):
    images, rows = scoring_rows(tiny_llava, seeds=(0,))
    calls = []
    hook = tiny_llava.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        outputs = run_rows(tiny_llava.model, images, [rows[0], rows[0], rows[0]], "batched")
        run_rows(tiny_llava.model, images, [rows[0], rows[0], rows[0]], "naive")
    finally:
        hook.remove()
    assert len(calls) == 1 + 3
    assert torch.equal(outputs[0].token_logprobs, outputs[2].token_logprobs)


def test_bad_rows_and_modes_are_refused(tiny_llava):
    with pytest.raises(ValueError, match="mode must be one of naive, batched, cached"):
        run_rows(tiny_llava.model, [], [Row((1, 2), None, 1)], "fast")
    with pytest.raises(ValueError, match="n_scored < len"):
        run_rows(tiny_llava.model, [], [Row((1, 2), None, 2)])
    with pytest.raises(ValueError, match="out of range"):
        run_rows(tiny_llava.model, [], [Row((1, 2), 0, 1)])
    assert run_rows(tiny_llava.model, [], []) == []


def test_chunks_respect_the_token_budget():
    # rows x (prefix 2 + longest) <= 20, shortest rows first
    assert _chunks([5, 3, 8, 1], extra=2, max_tokens=20) == [[3, 1], [0, 2]]
    assert _chunks([4, 4], extra=0, max_tokens=1) == [[0], [1]]  # a row alone always fits
    assert _chunks([1, 10], extra=0, max_tokens=1000) == [[0], [1]]  # 20 padded for 11 real: over 25 %
    assert _chunks([9, 10], extra=0, max_tokens=1000) == [[0, 1]]


def test_a_selected_cache_keeps_the_sliding_window_count():
    """A sliding-window layer keeps its last keys only; the copy must still know how many tokens came
    before, or the next tokens are placed at wrong positions (Gemma 3 past its window)."""
    from transformers import DynamicCache, Gemma3TextConfig

    from core.forward import select_cache

    config = Gemma3TextConfig(num_hidden_layers=2, sliding_window=4, num_attention_heads=2, num_key_value_heads=1,
                              head_dim=8, hidden_size=16, layer_types=["sliding_attention", "full_attention"])
    cache = DynamicCache(config=config)
    for layer in range(2):
        cache.update(torch.randn(2, 1, 10, 8), torch.randn(2, 1, 10, 8), layer)
    selected = select_cache(cache, torch.tensor([1, 1, 0]), config)
    assert [selected.get_seq_length(layer) for layer in range(2)] == [10, 10]
    assert selected.layers[0].keys.shape == (3, 1, 3, 8)  # still only the window's last keys
    assert torch.equal(selected.layers[1].keys[2], cache.layers[1].keys[0])
