"""Batched and prefix-cached passes equal the naive one-pass-per-row reference, with few passes."""

from __future__ import annotations

import pytest
import torch

from core.engine.chat import answer_ids, prepare_image, prompt_ids
from core.engine.forward import (CPU_BUDGET, Row, _chunks, _packs, _tree_mask, _trie, budget_tokens,
                                 kv_bytes_per_token, pair_cost, run_rows)
from core.engine.prompts import JUDGE_PROMPTS, judge_prompt
from core.shapes.world import make_scene, render

FAMILIES = ["tiny_llava", "tiny_idefics3", "tiny_qwen2_vl"]
ANSWERS = ["There is a small red circle on the left. A large blue star is at the top.", "No shapes.",
           "I can see a green heart."]


def scoring_rows(loaded, seeds=(0, 1)):
    """Token rows and judge rows, with and without the image, for two images (as core.engine.judge builds them)."""
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
    budget = 200 * kv_bytes_per_token(tiny_llava.model)
    assert_same(run_rows(tiny_llava.model, images, rows, "cached", memory_budget=budget), naive)


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
    """2 images x 3 answers -> 24 rows (18 distinct): a prefix pass per bucket (images, blind), then one
    packed pass per image holding all its rows' suffixes, and one for the blind rows."""
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
    # images: prefix (2 images), a pack for each; blind (the same rows for both images): prefix, a pack
    assert [shape[0] for shape in forward_calls] == [2, 1, 1, 1, 1]


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


def test_a_prefix_row_cache_keeps_the_sliding_window_count():
    """A sliding-window layer keeps its last keys only; the copy must still know how many tokens came
    before, or the next tokens are placed at wrong positions (Gemma 3 past its window)."""
    from transformers import DynamicCache, Gemma3TextConfig

    from core.engine.forward import _Prefix

    config = Gemma3TextConfig(num_hidden_layers=2, sliding_window=4, num_attention_heads=2, num_key_value_heads=1,
                              head_dim=8, hidden_size=16, layer_types=["sliding_attention", "full_attention"])
    cache = DynamicCache(config=config)
    for layer in range(2):
        cache.update(torch.randn(2, 1, 10, 8), torch.randn(2, 1, 10, 8), layer)
    selected = _Prefix(cache, torch.zeros(2, 5), 10, None).row(1, config)
    assert [selected.get_seq_length(layer) for layer in range(2)] == [10, 10]
    assert selected.layers[0].keys.shape == (1, 1, 3, 8)  # still only the window's last keys
    assert torch.equal(selected.layers[1].keys[0], cache.layers[1].keys[1])


def passes_of(model, call) -> list[torch.Tensor]:
    """The input_ids of every forward pass `call` makes."""
    seen = []
    hook = model.register_forward_hook(lambda m, args, kwargs, out: seen.append(kwargs["input_ids"].cpu()),
                                       with_kwargs=True)
    try:
        call()
    finally:
        hook.remove()
    return seen


def occurrences(passes: list[torch.Tensor], tokens: list[int]) -> int:
    """How many times this token sequence is fed to the model across all passes' rows."""
    width = len(tokens)
    return sum(row[i:i + width].tolist() == tokens for ids in passes for row in ids
               for i in range(ids.shape[1] - width + 1))


@pytest.mark.parametrize("family", FAMILIES)
def test_sentence_last_judge_rows_compute_the_instruction_once_per_image(family, request):
    loaded = request.getfixturevalue(family)
    processor = loaded.processor
    images = [prepare_image(processor, render(make_scene(s))) for s in (0, 1)]
    template = JUDGE_PROMPTS["faithfulness_last"]
    sentences = ["A small red circle is on the left.", "A large blue star is at the top.", "I see a green heart.",
                 "No shapes."]
    rows = [Row(tuple(prompt_ids(processor, judge_prompt(s, template), None if i is None else images[i])), i, 0)
            for i in (0, 1, None) for s in sentences]
    naive = run_rows(loaded.model, images, rows, "naive")
    passes = passes_of(loaded.model, lambda: assert_same(run_rows(loaded.model, images, rows, "cached"), naive))
    instruction = processor.tokenizer(template.split("{sentence}")[0].strip(), add_special_tokens=False)["input_ids"]
    instruction = instruction[1:-1]  # its ends may tokenize differently inside the chat text
    # once per image (one pass for both, as the prefixes have equal lengths) and once blind; naive: once per row
    assert occurrences(passes, instruction) == 3
    assert occurrences(passes_of(loaded.model, lambda: run_rows(loaded.model, images, rows, "naive")),
                       instruction) == len(rows)


def test_kv_size_per_token_comes_from_the_config(tiny_llava, tiny_qwen2_vl):
    text = tiny_llava.model.config.get_text_config()
    assert kv_bytes_per_token(tiny_llava.model) == 2 * 4 * 16 * 2 * 4  # layers x kv heads x head dim x K,V x fp32
    assert (text.num_hidden_layers, text.num_key_value_heads, text.hidden_size // text.num_attention_heads) == (
        2, 4, 16)
    qwen = tiny_qwen2_vl.model.config.get_text_config()
    head_dim = getattr(qwen, "head_dim", None) or qwen.hidden_size // qwen.num_attention_heads
    assert kv_bytes_per_token(tiny_qwen2_vl.model) == qwen.num_hidden_layers * qwen.num_key_value_heads * head_dim * 8
    assert budget_tokens(tiny_llava.model, 0) == CPU_BUDGET // 1024  # CPU default: 2 GiB
    assert budget_tokens(tiny_llava.model, 10 * 1024) == 10


def test_rows_are_packed_by_the_memory_budget(tiny_llava):
    # Four blind rows sharing a 2-token prefix, then 3 tokens each starting differently: a pack of k rows
    # holds 2 + 3k tokens of KV cache (1 KiB each for the tiny model) plus 3k x (2 + 3k) attention pairs
    # at (4 heads x 4 + 4) / 1024 token positions each: k = 1..4 cost 5.29, 8.94, 12.93, 17.28.
    assert pair_cost(tiny_llava.model) == 20 / 1024
    rows = [Row((7, 8, 20 + r, 30, 31), None, 2) for r in range(4)]
    reference = run_rows(tiny_llava.model, [], rows, "naive")
    for budget, packs in ((9, [2, 2]), (13, [3, 1]), (18, [4]), (4, [1, 1, 1, 1])):
        passes = passes_of(tiny_llava.model, lambda: assert_same(
            run_rows(tiny_llava.model, [], rows, "cached", memory_budget=budget * 1024), reference))
        assert [tuple(ids.shape) for ids in passes] == [(1, 2)] + [(1, 3 * k) for k in packs]


def test_the_trie_stores_each_shared_run_once_and_masks_other_branches():
    trie = _trie([(5, 6, 7), (5, 6, 8), (9,)])
    assert (trie.tokens, trie.parents, trie.depths) == ([5, 6, 7, 8, 9], [-1, 0, 1, 1, -1], [0, 1, 2, 2, 0])
    assert trie.paths == [[0, 1, 2], [0, 1, 3], [4]]
    mask = _tree_mask(trie, 2, torch.float32, torch.device("cpu"))[0, 0]
    sees = (mask == 0).int().tolist()
    # columns: 2 prefix tokens, then nodes 5 6 7 8 9
    assert sees == [[1, 1, 1, 0, 0, 0, 0],
                    [1, 1, 1, 1, 0, 0, 0],
                    [1, 1, 1, 1, 1, 0, 0],
                    [1, 1, 1, 1, 0, 1, 0],
                    [1, 1, 0, 0, 0, 0, 1]]
    # lexicographic: rows sharing tokens together; the subtrees of 5 and 9 share nothing: apart when a
    # pass is worth no wasted attention pair, together when it is worth many
    assert _packs([(5, 6, 7), (9,), (5, 6, 8)], 2, 1000, 0.0, merge_pairs=0) == [[0, 2], [1]]
    assert _packs([(5, 6, 7), (9,), (5, 6, 8)], 2, 1000, 0.0, merge_pairs=1e9) == [[0, 2, 1]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_in_bf16_the_packed_trie_matches_naive_and_the_budget_reads_free_memory(tiny_llava):
    import copy

    from core.engine.forward import CUDA_FREE_SHARE, default_memory_budget

    model = copy.deepcopy(tiny_llava.model).to("cuda", torch.bfloat16)
    images, rows = scoring_rows(tiny_llava, seeds=(0,))
    images = [type(image)(tensors={k: v.to(torch.bfloat16) if v.is_floating_point() else v
                                   for k, v in image.tensors.items()}, placeholder=image.placeholder,
                          expansion=image.expansion, token_values=image.token_values) for image in images]
    assert_same(run_rows(model, images, rows, "cached"), run_rows(model, images, rows, "naive"), tolerance=0.1)
    free, _ = torch.cuda.mem_get_info()
    assert abs(default_memory_budget(torch.device("cuda")) - free * CUDA_FREE_SHARE) < 0.05 * free
