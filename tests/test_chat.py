"""Chat prompts as token ids: the spliced image expansion equals the processor's own output, per family."""

from __future__ import annotations

import pytest
import torch

from core.engine.chat import (ImageInputs, UnsupportedModelError, adds_special_tokens, answer_ids, check_supported,
                              prepare_image, prompt_ids, splice_image, token_inputs, turn_ids)
from core.engine.prompts import judge_prompt
from core.shapes.world import make_scene, render

FAMILIES = ["tiny_llava", "tiny_idefics3", "tiny_qwen2_vl"]


def transformers_prompt(processor, question: str, image=None) -> list[int]:
    """transformers' own generation-prompt ids: processor.apply_chat_template(tokenize=True)."""
    content = ([{"type": "image", "image": image}] if image is not None else []) + [{"type": "text", "text": question}]
    encoded = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                            tokenize=True, return_dict=True)
    return list(encoded["input_ids"][0])


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_ids_equal_processor_output(family, request):
    loaded = request.getfixturevalue(family)
    processor = loaded.processor
    image = render(make_scene(3))
    prepared = prepare_image(processor, image)
    for question in ("Describe the image.", judge_prompt("A small red circle is on the left.")):
        assert prompt_ids(processor, question, prepared) == transformers_prompt(processor, question, image)
        assert prompt_ids(processor, question, None) == transformers_prompt(processor, question)


def test_llava_expansion_is_the_image_token_repeated(tiny_llava):
    prepared = prepare_image(tiny_llava.processor, render(make_scene(0)))
    image_token = tiny_llava.processor.tokenizer.convert_tokens_to_ids("<image>")
    assert prepared.placeholder == (image_token,)
    assert prepared.expansion == (image_token,) * 64
    assert list(prepared.tensors) == ["pixel_values"]
    assert prepared.tensors["pixel_values"].shape == (1, 3, 96, 96)


def test_qwen2_vl_per_token_inputs_mark_image_tokens(tiny_qwen2_vl):
    processor = tiny_qwen2_vl.processor
    prepared = prepare_image(processor, render(make_scene(0)))
    image_token = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert prepared.token_values == {"mm_token_type_ids": {image_token: 1}}
    ids = torch.tensor([[5, image_token, image_token, 7]])
    assert token_inputs(prepared, ids)["mm_token_type_ids"].tolist() == [[0, 1, 1, 0]]
    assert token_inputs(None, ids) == {}


def test_answer_ids_match_the_training_format(tiny_llava):
    tokenizer = tiny_llava.processor.tokenizer
    answer = "There is a small red circle on the left."
    # The embedded model was trained on " " + answer after "ASSISTANT:" (core.shapes.embedded.collate).
    assert answer_ids(tiny_llava.processor, "Describe the image.", answer) == tokenizer(
        " " + answer, add_special_tokens=False)["input_ids"]


def test_answer_ids_qwen_template_has_no_space(tiny_qwen2_vl):
    tokenizer = tiny_qwen2_vl.processor.tokenizer
    answer = "A blue star."
    assert answer_ids(tiny_qwen2_vl.processor, "Describe the image.", answer) == tokenizer(
        answer, add_special_tokens=False)["input_ids"]


def test_splice_needs_exactly_one_placeholder():
    image = ImageInputs(tensors={}, placeholder=(9,), expansion=(9, 9, 9), token_values={})
    assert splice_image([1, 9, 2], image) == [1, 9, 9, 9, 2]
    with pytest.raises(UnsupportedModelError, match="found 2"):
        splice_image([1, 9, 2, 9], image)
    with pytest.raises(UnsupportedModelError, match="found 0"):
        splice_image([1, 2], image)


def test_missing_chat_template_is_named(tiny_llava, monkeypatch):
    monkeypatch.setattr(tiny_llava.processor, "chat_template", None)
    with pytest.raises(UnsupportedModelError, match="chat template"):
        check_supported(tiny_llava.model, tiny_llava.processor)


def test_model_without_cache_argument_is_named(tiny_llava):
    class OldStyle(torch.nn.Module):
        def forward(self, input_ids, past_key_values=None):
            return input_ids

    with pytest.raises(UnsupportedModelError, match="`cache` argument.*`logits_to_keep` argument.*generate"):
        check_supported(OldStyle(), tiny_llava.processor)


def test_template_without_image_is_refused(tiny_llava, monkeypatch):
    text_only = "{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}" \
                "{% endif %}{% endfor %}{% endfor %}"
    monkeypatch.setattr(tiny_llava.processor, "chat_template", text_only)
    with pytest.raises(UnsupportedModelError, match="must write an image placeholder"):
        prepare_image(tiny_llava.processor, render(make_scene(0)))


def test_special_tokens_are_added_unless_the_text_starts_with_bos():
    class Tokenizer:
        bos_token = "<s>"

    class NoBos:
        bos_token = None

    assert adds_special_tokens(Tokenizer(), "USER: hi ASSISTANT:")  # llava-hf: the tokenizer adds <s>
    assert not adds_special_tokens(Tokenizer(), "<s>USER: hi ASSISTANT:")  # the template wrote it
    assert adds_special_tokens(NoBos(), "<|im_start|>user\nhi")


LLAVA_HF_TEMPLATE = (  # llava-hf/llava-1.5-7b-hf: the answer and a space, no end-of-turn token
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}"
    "{% if message['role'] != 'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', "
    "'text') %}{{ content['text'] + ' '}}{% endfor %}{% else %}{% for content in message['content'] | "
    "selectattr('type', 'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}{% endgeneration %}"
    "{% endfor %}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}")


def test_turn_without_an_end_token_ends_with_eos(tiny_llava, monkeypatch):
    processor = tiny_llava.processor
    tokenizer = processor.tokenizer
    monkeypatch.setattr(processor, "chat_template", LLAVA_HF_TEMPLATE)
    turn = turn_ids(processor, "Describe the image.", "A red circle.")
    assert turn.answer == tokenizer(" A red circle.", add_special_tokens=False)["input_ids"]
    assert turn.end == [tokenizer.eos_token_id]  # not the template's trailing " "
    assert turn.completion == turn.answer + [tokenizer.eos_token_id]


@pytest.mark.parametrize("family, end", [("tiny_llava", "</s>"), ("tiny_qwen2_vl", "<|im_end|>"),
                                         ("tiny_idefics3", "<end_of_utterance>")])
def test_turn_ends_with_the_templates_end_token(family, end, request):
    processor = request.getfixturevalue(family).processor
    turn = turn_ids(processor, "Describe the image.", "A blue star.")
    assert turn.end == [processor.tokenizer.convert_tokens_to_ids(end)]  # the "\n" after it is left out
    assert answer_ids(processor, "Describe the image.", "A blue star.") == turn.answer
