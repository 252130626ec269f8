"""Judged decoding: the search tree, the selection rule, seeds, budgets and the greedy/beam baselines."""

from __future__ import annotations

import math

import pytest
import torch

from core.engine.chat import prepare_image
from core.engine.decoding import DecodeNode, DecodeOptions, _choose, _State, decode, decode_many
from core.engine.generation import Continuation, GenerationSettings, generate_candidates
from core.engine.judge import JudgeItem, JudgeSettings, judge_sentences, score_candidates
from core.shapes.world import make_scene, render

QUESTION = "Describe the image."
# Sampled proposals only, none rejected: with random weights the greedy sentence is a run of "."
ALL_ACCEPTED = DecodeOptions(reject_below=None, greedy_proposal=False, likelihood_weight=0.0)


@pytest.fixture
def sentence_ending_llava(tiny_llava):
    """The tiny LLaVA nudged towards "." so that its random text comes in short sentences."""
    period = tiny_llava.processor.tokenizer.convert_tokens_to_ids(".")

    def nudge(module, args, output):
        output[..., period] += 6.0
        return output

    hook = tiny_llava.model.lm_head.register_forward_hook(nudge)
    yield tiny_llava
    hook.remove()


def squeeze(text: str) -> str:
    return "".join(text.split())


def test_arguments_are_validated(tiny_llava):
    image = render(make_scene(0))
    with pytest.raises(ValueError, match="strategy must be one of greedy, beam, raw-judged, debiased-judged"):
        decode(tiny_llava, image, QUESTION, "sampled", JudgeSettings())
    with pytest.raises(ValueError, match="k \\(proposals per step, or beams\\)"):
        decode(tiny_llava, image, QUESTION, "beam", JudgeSettings(), k=0)
    with pytest.raises(ValueError, match="likelihood_weight must be >= 0"):
        DecodeOptions(likelihood_weight=-1)


def test_greedy_is_generate_with_judged_sentences(tiny_llava):
    image = render(make_scene(1))
    result = decode(tiny_llava, image, QUESTION, "greedy", JudgeSettings(), max_new_tokens=16)
    greedy = generate_candidates(tiny_llava, image, QUESTION, GenerationSettings(n=1, strategy="greedy",
                                                                                 max_new_tokens=16))[0]
    assert result.text == greedy.text and result.strategy == "greedy"
    scored = score_candidates(tiny_llava, image, QUESTION, [greedy.text], JudgeSettings()).candidates[0]
    assert [n.text for n in result.nodes] == [s.text for s in scored.sentences]
    assert [n.score for n in result.nodes] == pytest.approx([s.debiased for s in scored.sentences], abs=1e-4)
    assert [(n.step, n.parent, n.chosen) for n in result.nodes] == [
        (j, j - 1 if j else None, True) for j in range(len(result.nodes))]


def test_beam_is_generate_with_beams(tiny_llava):
    image = render(make_scene(2))
    result = decode(tiny_llava, image, QUESTION, "beam", JudgeSettings(), k=3, max_new_tokens=10)
    inputs = tiny_llava.processor(text=tiny_llava.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}],
        add_generation_prompt=True), images=[image], return_tensors="pt", add_special_tokens=False)
    out = tiny_llava.model.generate(**inputs, num_beams=3, do_sample=False, max_new_tokens=10)
    expected = tiny_llava.processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:],
                                                     skip_special_tokens=True).strip()
    assert result.text == expected


def check_tree(result, k: int) -> None:
    """One chosen node per step (chained by parent) with the best accepted score; text = the chosen sentences."""
    steps = sorted({n.step for n in result.nodes})
    assert steps == list(range(len(steps)))
    chosen = [i for i, n in enumerate(result.nodes) if n.chosen]
    for position, index in enumerate(chosen):
        node = result.nodes[index]
        assert node.step == position and node.parent == (chosen[position - 1] if position else None)
        rivals = [n for n in result.nodes if n.step == node.step and n.accepted and n.text]
        assert node.score == max(n.score for n in rivals)
    for step in steps:
        assert sum(1 for n in result.nodes if n.step == step) == k
    assert squeeze(result.text) == squeeze("".join(result.nodes[i].text for i in chosen))


@pytest.mark.parametrize("strategy", ["raw-judged", "debiased-judged"])
def test_judged_tree(sentence_ending_llava, strategy):
    result = decode(sentence_ending_llava, render(make_scene(3)), QUESTION, strategy, JudgeSettings(alpha=1.0), k=3,
                    max_new_tokens=24, seed=1, options=ALL_ACCEPTED)
    assert result.strategy == strategy and result.text
    assert max(n.step for n in result.nodes) >= 1
    check_tree(result, k=3)
    for node in result.nodes:
        if node.text:
            alpha = 0.0 if strategy == "raw-judged" else 1.0
            assert node.score == pytest.approx((1 + alpha) * node.raw - alpha * node.blind, abs=1e-5)


def test_judged_scores_are_the_judges(sentence_ending_llava):
    loaded = sentence_ending_llava
    image = render(make_scene(4))
    settings = JudgeSettings(kind="log-odds", context="response")
    result = decode(loaded, image, QUESTION, "debiased-judged", settings, k=2, max_new_tokens=24, seed=2,
                    options=DecodeOptions(reject_below=None, likelihood_weight=0.5, greedy_proposal=False))
    chosen = [n for n in result.nodes if n.chosen]
    second_step = [n for n in result.nodes if n.step == 1 and n.text]
    assert len(chosen) >= 2 and second_step
    verdict = judge_sentences(loaded, [prepare_image(loaded.processor, image)],
                              [JudgeItem(0, second_step[0].text, chosen[0].text)], settings)[0]
    assert second_step[0].raw == pytest.approx(verdict.raw["log-odds"], abs=1e-4)
    assert second_step[0].raw_log_odds == pytest.approx(verdict.raw["log-odds"], abs=1e-4)
    assert second_step[0].log_odds == pytest.approx(verdict.debiased("log-odds", 1.0), abs=1e-4)
    assert second_step[0].score == pytest.approx(verdict.debiased("log-odds", 1.0)
                                                 + 0.5 * second_step[0].likelihood, abs=1e-4)


def test_the_greedy_sentence_is_the_first_proposal(tiny_llava):
    image = render(make_scene(5))
    judged = decode(tiny_llava, image, QUESTION, "debiased-judged", JudgeSettings(), k=3, max_new_tokens=6,
                    options=DecodeOptions(reject_below=None))
    greedy = decode(tiny_llava, image, QUESTION, "greedy", JudgeSettings(), max_new_tokens=6)
    assert judged.nodes[0].text == greedy.text
    assert judged.nodes[1].text != greedy.text


def test_same_seed_same_tree_and_budget(sentence_ending_llava):
    image = render(make_scene(5))
    runs = [decode(sentence_ending_llava, image, QUESTION, "debiased-judged", JudgeSettings(), k=3,
                   max_new_tokens=16, seed=seed, options=ALL_ACCEPTED) for seed in (4, 4, 5)]
    assert runs[0] == runs[1] and runs[0] != runs[2]
    chosen = [n for n in runs[0].nodes if n.chosen]
    assert len(chosen) >= 2 and sum(n.n_tokens for n in chosen) <= 16


def test_everything_rejected_gives_an_empty_answer(tiny_llava):
    result = decode(tiny_llava, render(make_scene(6)), QUESTION, "debiased-judged", JudgeSettings(), k=3,
                    max_new_tokens=12, options=DecodeOptions(reject_below=1e9))
    assert result.text == ""
    assert len(result.nodes) == 3 and not any(n.chosen or n.accepted for n in result.nodes)


def test_choose_keeps_the_best_accepted_or_stops():
    def node(score, accepted=True, text="A red circle."):
        return DecodeNode(step=0, text=text, score=score, chosen=False, parent=None, accepted=accepted)

    state = _State(prompt=[1], answer=[], sentences=[], nodes=[node(5.0, accepted=False), node(1.0), node(2.0),
                                                               node(2.0), node(math.nan, accepted=False, text="")])
    continuations = [Continuation([10 + i], [-0.1], finished=False) for i in range(5)]
    _choose(state, 0, continuations, budget=10)
    assert [n.chosen for n in state.nodes] == [False, False, True, False, False]  # ties: the first proposed
    assert (state.answer, state.parent, state.done) == ([12], 2, False)
    stop = _State(prompt=[1], answer=[], sentences=[], nodes=[node(3.0, accepted=False)])
    _choose(stop, 0, continuations[:1], budget=10)
    assert stop.done and stop.answer == []
    ending = _State(prompt=[1], answer=[], sentences=[], nodes=[node(1.0)])
    _choose(ending, 0, [Continuation([7], [-0.5], finished=True)], budget=10)
    assert ending.done and ending.answer == [7]
    likely_end = [Continuation([7], [-0.5], finished=False, end_logprob=math.log(0.6))]
    wants_to_end = _State(prompt=[1], answer=[], sentences=[], nodes=[node(1.0)])
    _choose(wants_to_end, 0, likely_end, budget=10, stop_probability=0.5)
    assert wants_to_end.done and wants_to_end.answer == [] and not wants_to_end.nodes[0].chosen
    goes_on = _State(prompt=[1], answer=[], sentences=[], nodes=[node(1.0)])
    _choose(goes_on, 0, likely_end, budget=10, stop_probability=0.7)
    assert not goes_on.done and goes_on.answer == [7]


def test_decode_many_greedy_matches_one_by_one(tiny_llava):
    images = [render(make_scene(s)) for s in (7, 8)]
    together = decode_many(tiny_llava, images, QUESTION, "greedy", JudgeSettings(), max_new_tokens=10)
    alone = [decode(tiny_llava, image, QUESTION, "greedy", JudgeSettings(), max_new_tokens=10) for image in images]
    assert [r.text for r in together] == [r.text for r in alone]
    for a, b in zip(together, alone):
        assert [n.score for n in a.nodes] == pytest.approx([n.score for n in b.nodes], abs=1e-4)


def test_judged_decoding_batches_images(tiny_llava):
    calls = []
    original = tiny_llava.model.generate

    def counting(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    tiny_llava.model.generate = counting
    try:
        results = decode_many(tiny_llava, [render(make_scene(s)) for s in (9, 10, 11)], QUESTION,
                              "debiased-judged", JudgeSettings(), k=2, max_new_tokens=6, options=ALL_ACCEPTED)
    finally:
        del tiny_llava.model.generate
    steps = max(max(n.step for n in r.nodes) for r in results) + 1
    assert len(calls) == steps and calls[0] == 3  # one generate call per step for all images
    assert torch.tensor(calls).le(3).all()


def test_flipped_by_debiasing_is_where_raw_and_debiased_answers_differ():
    from core.engine.decoding import flipped_by_debiasing

    assert flipped_by_debiasing(-0.4, 0.3, 0.0)  # raw says yes, debiased no: debiasing rejected it
    assert flipped_by_debiasing(0.2, -0.1, 0.0)  # and the other way round
    assert not flipped_by_debiasing(-0.4, -0.1, 0.0) and not flipped_by_debiasing(0.5, 0.3, 0.0)
    assert not flipped_by_debiasing(-0.4, 0.3, None)  # nothing is rejected without a threshold
    assert not flipped_by_debiasing(-0.4, math.nan, 0.0) and not flipped_by_debiasing(None, 0.3, 0.0)
    assert flipped_by_debiasing(0.5, 1.5, 1.0)  # the threshold is reject_below, not 0
