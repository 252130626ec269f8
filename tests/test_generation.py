"""Candidate generation: seeded, one batched call, log-probs equal to teacher forcing, diverse beam search."""

from __future__ import annotations

import pytest
import torch

from core.engine.chat import prepare_image, prompt_ids
from core.engine.forward import Row, run_rows
import core.engine.generation
from core.engine.generation import (GenerationSettings, SentenceEnd, diverse_beam_search, ends_sentence, generate_batch,
                                    generate_candidates)
from core.shapes.world import make_scene, render

QUESTION = "Describe the image."


def teacher_forced(loaded, image, candidates):
    prepared = prepare_image(loaded.processor, image)
    prompt = prompt_ids(loaded.processor, QUESTION, prepared)
    rows = [Row(tuple(prompt + c.token_ids), 0, len(c.token_ids)) for c in candidates]
    return [out.token_logprobs for out in run_rows(loaded.model, [prepared], rows, "naive")]


def test_settings_are_validated():
    with pytest.raises(ValueError, match="greedy decoding gives exactly one candidate"):
        GenerationSettings(n=4, strategy="greedy")
    with pytest.raises(ValueError, match="strategy must be one of sample, diverse-beam, greedy"):
        GenerationSettings(strategy="nucleus")
    with pytest.raises(ValueError, match="top_p must be in"):
        GenerationSettings(top_p=0.0)
    with pytest.raises(ValueError, match="n \\(number of candidates\\)"):
        GenerationSettings(n=0)


def test_same_seed_same_candidates_other_seed_others(tiny_llava):
    image = render(make_scene(0))
    first = generate_candidates(tiny_llava, image, QUESTION, GenerationSettings(n=3, max_new_tokens=8, seed=5))
    again = generate_candidates(tiny_llava, image, QUESTION, GenerationSettings(n=3, max_new_tokens=8, seed=5))
    other = generate_candidates(tiny_llava, image, QUESTION, GenerationSettings(n=3, max_new_tokens=8, seed=6))
    assert [c.token_ids for c in first] == [c.token_ids for c in again]
    assert [c.token_ids for c in first] != [c.token_ids for c in other]
    assert len(first) == 3 and all(len(c.token_ids) == len(c.logprobs) for c in first)


def test_generation_leaves_the_global_random_state_alone(tiny_llava):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    generate_candidates(tiny_llava, render(make_scene(0)), QUESTION, GenerationSettings(n=2, max_new_tokens=4))
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("strategy,n", [("sample", 4), ("diverse-beam", 3), ("greedy", 1)])
def test_logprobs_equal_teacher_forcing(tiny_llava, strategy, n):
    image = render(make_scene(1))
    candidates = generate_candidates(tiny_llava, image, QUESTION,
                                     GenerationSettings(n=n, strategy=strategy, max_new_tokens=10))
    assert len(candidates) == n
    for candidate, forced in zip(candidates, teacher_forced(tiny_llava, image, candidates)):
        assert torch.allclose(torch.tensor(candidate.logprobs), forced, atol=1e-4)
        assert candidate.text == tiny_llava.processor.tokenizer.decode(
            candidate.token_ids, skip_special_tokens=True).strip()


def test_end_logprob_is_the_first_position_probability_of_ending(tiny_llava):
    image = prepare_image(tiny_llava.processor, render(make_scene(1)))
    prompt = prompt_ids(tiny_llava.processor, QUESTION, image)
    rows = generate_batch(tiny_llava, [image], [prompt], [0], 3, GenerationSettings(n=3, max_new_tokens=4))[0]
    next_logits = run_rows(tiny_llava.model, [image], [Row(tuple(prompt), 0, 0)], "naive")[0].next_logits
    eos = tiny_llava.processor.tokenizer.eos_token_id
    expected = torch.log_softmax(next_logits, dim=-1)[eos].item()
    assert [r.end_logprob for r in rows] == pytest.approx([expected] * 3, abs=1e-4)


def test_one_group_one_beam_is_greedy(tiny_qwen2_vl):
    image = render(make_scene(2))
    greedy = generate_candidates(tiny_qwen2_vl, image, QUESTION,
                                 GenerationSettings(n=1, strategy="greedy", max_new_tokens=10))
    beam = generate_candidates(tiny_qwen2_vl, image, QUESTION, GenerationSettings(
        n=1, strategy="diverse-beam", beams_per_group=1, max_new_tokens=10))
    assert beam[0].token_ids == greedy[0].token_ids


def test_diversity_penalty_makes_groups_start_differently(tiny_llava):
    candidates = generate_candidates(tiny_llava, render(make_scene(0)), QUESTION, GenerationSettings(
        n=4, strategy="diverse-beam", diversity_penalty=1000.0, max_new_tokens=3))
    assert len({c.token_ids[0] for c in candidates}) == 4


def test_generation_is_one_batched_call(tiny_llava):
    calls = []
    original = tiny_llava.model.generate

    def counting(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape)
        return original(*args, **kwargs)

    tiny_llava.model.generate = counting
    try:
        generate_candidates(tiny_llava, render(make_scene(0)), QUESTION, GenerationSettings(n=8, max_new_tokens=4))
    finally:
        del tiny_llava.model.generate
    assert len(calls) == 1 and calls[0][0] == 1  # one prompt; generate expands it to 8 rows


def test_sentence_end_rule():
    assert [ends_sentence(t) for t in ("A red circle.", " A star! ", "Why?", ".", "  ", "A red", "3.5 cm")] == [
        True, True, True, False, False, False, False]


def test_sentence_end_stops_rows_independently(tiny_llava):
    tokenizer = tiny_llava.processor.tokenizer
    prompt = [1, 2]
    done = prompt + tokenizer(" A red circle.", add_special_tokens=False)["input_ids"]
    going = prompt + tokenizer(" A red circle is", add_special_tokens=False)["input_ids"]
    going += [going[-1]] * (len(done) - len(going))  # same width; still no sentence end
    criterion = SentenceEnd(tokenizer, len(prompt))
    assert criterion(torch.tensor([done, going]), None).tolist() == [True, False]


def test_generate_batch_stops_at_sentence_end_or_budget(tiny_llava):
    image = prepare_image(tiny_llava.processor, render(make_scene(0)))
    prompt = prompt_ids(tiny_llava.processor, QUESTION, image)
    settings = GenerationSettings(n=4, max_new_tokens=12, seed=3)
    rows = generate_batch(tiny_llava, [image, image], [prompt, prompt[:-1]], [0, 1], 4, settings,
                          stop_at_sentence=True)
    tokenizer = tiny_llava.processor.tokenizer
    assert [len(r) for r in rows] == [4, 4]
    for continuation in rows[0] + rows[1]:
        text = tokenizer.decode(continuation.token_ids, skip_special_tokens=True)
        # a sentence ends only at the last token
        assert not any(ends_sentence(tokenizer.decode(continuation.token_ids[:i], skip_special_tokens=True))
                       for i in range(1, len(continuation.token_ids)))
        assert ends_sentence(text) or continuation.finished or len(continuation.token_ids) == 12


def rebuild_whole_cache(cache, sources):
    """The former reordering: every layer's new tensors built first (two whole caches alive), then swapped in."""
    copies = [(keys.index_select(0, sources), values.index_select(0, sources)) for keys, values, *_ in cache]
    for layer, (keys, values) in zip(cache.layers, copies):
        layer.keys, layer.values = keys, values


@pytest.mark.parametrize("family", ["tiny_llava", "tiny_qwen2_vl"])
def test_diverse_beam_reorders_one_cache_in_place_with_the_same_results(family, request, monkeypatch):
    loaded = request.getfixturevalue(family)
    image = prepare_image(loaded.processor, render(make_scene(3)))
    prompt = prompt_ids(loaded.processor, QUESTION, image)
    settings = GenerationSettings(n=3, strategy="diverse-beam", beams_per_group=2, max_new_tokens=10)
    caches = []
    hook = loaded.model.register_forward_hook(lambda m, args, kwargs, out: caches.append(kwargs.get("cache")),
                                              with_kwargs=True)
    try:
        in_place = diverse_beam_search(loaded, image, prompt, settings)
    finally:
        hook.remove()
    assert caches[0] is None and len(caches) > 2 and all(c is caches[1] for c in caches[1:])  # one cache throughout
    monkeypatch.setattr(core.engine.generation, "reorder_beams", rebuild_whole_cache)
    rebuilt = diverse_beam_search(loaded, image, prompt, settings)
    assert [(c.token_ids, c.logprobs, c.finished) for c in in_place] == [
        (c.token_ids, c.logprobs, c.finished) for c in rebuilt]
