"""Chat prompts as token ids for any transformers image-text-to-text model, with the image and without it.

Every prompt goes through the processor's chat template. The blind prompt is the same
conversation with the image item removed. Template text becomes ids in one place
(`text_ids`), by transformers' own rule for `processor.apply_chat_template(tokenize=True)`:
the tokenizer adds its special tokens (Llama's BOS) unless the text already starts with BOS.
Prompt ids, answer ids and DPO completion ids (`turn_ids`) all come from here. The image is
run through the processor once (`prepare_image`): comparing the processor's expanded ids with
the plain tokenizer's ids of the same text tells which placeholder tokens the processor
expands and into what, so every further prompt (question, judge prompts, one per sentence) is
tokenized by the tokenizer alone and the expansion spliced in, without re-processing the image.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from PIL import Image

# Inputs the processor returns per token (same shape as input_ids) rather than per image.
TEXT_KEYS = ("input_ids", "attention_mask")
PROBE_QUESTION = "Describe the image."


def conversation(question: str, with_image: bool) -> list[dict]:
    """The chat messages for one user turn, with or without the image."""
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": question}]
    return [{"role": "user", "content": content}]


def assistant_turn(answer: str) -> dict:
    """The chat message of one assistant answer."""
    return {"role": "assistant", "content": [{"type": "text", "text": answer}]}


class UnsupportedModelError(ValueError):
    """The model or processor lacks something the judge needs; the message says what."""


@dataclass(frozen=True)
class ImageInputs:
    """One image as the model takes it, and how its placeholder expands in the prompt."""

    tensors: dict[str, torch.Tensor]  # pixel_values etc.; concatenate along dim 0 to batch images
    placeholder: tuple[int, ...]  # placeholder ids as the tokenizer writes the chat text
    expansion: tuple[int, ...]  # what the processor turns them into (e.g. 576 image tokens)
    token_values: dict[str, dict[int, int]]  # per-token inputs (mm_token_type_ids): token id -> value


def check_supported(model: torch.nn.Module, processor: object) -> None:
    """Raise UnsupportedModelError naming what is missing for judging and decoding."""
    missing = []
    if getattr(processor, "tokenizer", None) is None:
        missing.append("a tokenizer in the processor (AutoProcessor must bundle one)")
    if getattr(processor, "image_processor", None) is None:
        missing.append("an image processor in the processor (this is not an image-text-to-text model)")
    if getattr(processor, "chat_template", None) is None:
        missing.append("a chat template in the processor config (the judge builds every prompt with it)")
    # A peft model forwards **kwargs to the model it wraps: that model's signature is what counts.
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    parameters = inspect.signature(base.forward).parameters
    for name, why in (("cache", "reusing the image prefix's KV cache"),
                      ("logits_to_keep", "computing logits only at the scored positions")):
        if name not in parameters:
            missing.append(f"a `{name}` argument in {type(model).__name__}.forward ({why}; transformers >= 5.24)")
    if not hasattr(model, "generate"):
        missing.append("generate() (a generative model class, e.g. AutoModelForImageTextToText)")
    if missing:
        raise UnsupportedModelError(f"{type(model).__name__} cannot be judged; it lacks: " + "; ".join(missing))


def render(processor: object, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """The chat template's text for these messages."""
    return processor.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)


def adds_special_tokens(tokenizer, text: str) -> bool:
    """Whether transformers' processor adds the tokenizer's special tokens to this chat text.

    ProcessorMixin.apply_chat_template(tokenize=True) adds them (Llama's BOS, Gemma's <bos>)
    unless the rendered text already starts with the BOS token.
    """
    return not (tokenizer.bos_token is not None and text.startswith(tokenizer.bos_token))


def text_ids(processor: object, text: str) -> list[int]:
    """Token ids of chat-template text exactly as transformers' processor tokenizes it, special tokens included."""
    tokenizer = processor.tokenizer
    return tokenizer(text, add_special_tokens=adds_special_tokens(tokenizer, text))["input_ids"]


def plain_ids(processor: object, text: str) -> list[int]:
    """Token ids of text continuing a prompt: the tokenizer's own special tokens left out."""
    return processor.tokenizer(text, add_special_tokens=False)["input_ids"]


def _differing_span(expanded: list[int], plain: list[int]) -> tuple[int, int, int]:
    """(start, end in plain, end in expanded) of the part where the two id lists differ."""
    start = 0
    while start < min(len(plain), len(expanded)) and plain[start] == expanded[start]:
        start += 1
    tail = 0
    while (tail < min(len(plain), len(expanded)) - start
           and plain[len(plain) - 1 - tail] == expanded[len(expanded) - 1 - tail]):
        tail += 1
    # An expansion into repeats of the placeholder itself (LLaVA: 1 -> 576 image tokens) matches on
    # both sides; step back until the placeholder is not empty.
    while start == len(plain) - tail and start > 0:
        start -= 1
    return start, len(plain) - tail, len(expanded) - tail


def prepare_image(processor: object, image: Image.Image) -> ImageInputs:
    """Run the image through the processor once and learn how its placeholder expands."""
    probe = render(processor, conversation(PROBE_QUESTION, with_image=True))
    try:
        encoded = processor(text=probe, images=[image.convert("RGB")], return_tensors="pt",
                            add_special_tokens=adds_special_tokens(processor.tokenizer, probe))
    except ValueError as exc:
        raise UnsupportedModelError(f"the processor refused the chat template's image prompt {probe!r}: {exc}. "
                                    "The chat template must write an image placeholder for {'type': 'image'} "
                                    "items") from exc
    expanded = encoded["input_ids"][0].tolist()
    plain = text_ids(processor, probe)
    start, plain_end, expanded_end = _differing_span(expanded, plain)
    if start == plain_end:
        raise UnsupportedModelError("the processor did not expand an image placeholder in the chat text; "
                                    "its chat template must write one for {'type': 'image'} items")
    per_token = {k: v for k, v in encoded.items()
                 if k not in TEXT_KEYS and torch.is_tensor(v) and v.shape == encoded["input_ids"].shape}
    token_values = {key: {tok: val for tok, val in zip(expanded, values[0].tolist()) if val}
                    for key, values in per_token.items()}
    tensors = {k: v for k, v in encoded.items() if k not in TEXT_KEYS and k not in per_token and torch.is_tensor(v)}
    return ImageInputs(tensors=tensors, placeholder=tuple(plain[start:plain_end]),
                       expansion=tuple(expanded[start:expanded_end]), token_values=token_values)


def splice_image(ids: list[int], image: ImageInputs) -> list[int]:
    """Replace the one image placeholder in tokenizer ids with the processor's expansion."""
    width = len(image.placeholder)
    hits = [i for i in range(len(ids) - width + 1) if tuple(ids[i:i + width]) == image.placeholder]
    if len(hits) != 1:
        raise UnsupportedModelError(f"expected one image placeholder {image.placeholder} in the prompt, "
                                    f"found {len(hits)}; the chat template must place the image once")
    at = hits[0]
    return ids[:at] + list(image.expansion) + ids[at + width:]


def prompt_ids(processor: object, question: str, image: ImageInputs | None) -> list[int]:
    """Generation-prompt ids for one user turn: with the image (expanded) or blind (no image item)."""
    ids = text_ids(processor, render(processor, conversation(question, with_image=image is not None)))
    return splice_image(ids, image) if image is not None else ids


def stop_tokens(tokenizer) -> set[int]:
    """Ids that end a turn when the template writes them: EOS and the tokenizer's other special tokens."""
    special = {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    special = (special | set(tokenizer.all_special_ids)) - {tokenizer.pad_token_id, tokenizer.unk_token_id}
    return special | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())


@dataclass(frozen=True)
class TurnIds:
    """An assistant answer as ids after the generation prompt, and the ids that end the turn."""

    answer: list[int]  # the answer alone (what the judge scores token by token)
    end: list[int]  # the end of turn the model generates: the template's end-of-turn token, else EOS

    @property
    def completion(self) -> list[int]:
        """Answer and end of turn: what DPO compares (the end teaches the model where to stop)."""
        return self.answer + self.end


def turn_ids(processor: object, question: str, answer: str) -> TurnIds:
    """Ids of an assistant answer exactly as the chat template writes it after the generation prompt.

    The end of turn is what the template writes after the answer, up to and including its last
    end-of-turn token (Qwen2's <|im_end|>, Gemma's <end_of_turn>, Mistral's </s>); separators
    the template writes between turns after it ("\n") are never generated and are left out.
    Where the template writes no end-of-turn token (llava-hf writes the answer and " "), the
    end is the tokenizer's EOS, as TRL appends it, and the trailing text is left out.
    """
    messages = conversation(question, with_image=False)
    prompt = render(processor, messages)
    full = render(processor, messages + [assistant_turn(answer)], add_generation_prompt=False)
    if not full.startswith(prompt) or answer not in full[len(prompt):]:
        raise UnsupportedModelError("the chat template does not write an assistant turn as the generation prompt "
                                    "followed by the answer; candidates cannot be placed after the prompt")
    rest = full[len(prompt):]
    piece = rest[:rest.index(answer) + len(answer)]
    # Continuations are tokenized without the tokenizer's own special tokens (the prompt has them),
    # in context where that keeps the prompt's own ids (sentencepiece spaces), else alone.
    prompt_plain = plain_ids(processor, prompt)

    def after_prompt(text: str) -> list[int]:
        joint = plain_ids(processor, prompt + text)
        if joint[:len(prompt_plain)] == prompt_plain:
            return joint[len(prompt_plain):]
        return plain_ids(processor, text)

    answer_part, whole_turn = after_prompt(piece), after_prompt(rest)
    tokenizer = processor.tokenizer
    stops = stop_tokens(tokenizer)
    if whole_turn[:len(answer_part)] == answer_part:
        tail = whole_turn[len(answer_part):]
    elif stops & set(whole_turn):
        raise UnsupportedModelError("the chat template's end of turn merges with the answer's last token; "
                                    "the answer's ids are not a prefix of the whole turn's")
    else:  # plain text after the answer merged into its last token; it is not generated anyway
        tail = []
    ends = [i for i, token in enumerate(tail) if token in stops]
    if ends:
        return TurnIds(answer=answer_part, end=tail[:ends[-1] + 1])
    if tokenizer.eos_token_id is None:
        raise UnsupportedModelError("the chat template ends an assistant turn without an end-of-turn token and "
                                    "the tokenizer has no EOS token; the model cannot learn where to stop")
    return TurnIds(answer=answer_part, end=[tokenizer.eos_token_id])


def answer_ids(processor: object, question: str, answer: str) -> list[int]:
    """Ids of an assistant answer exactly as the chat template writes it after the generation prompt."""
    return turn_ids(processor, question, answer).answer


def token_inputs(image: ImageInputs | None, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-token model inputs (e.g. Qwen2-VL's mm_token_type_ids) for a batch of ids."""
    if image is None:
        return {}
    result = {}
    for key, values in image.token_values.items():
        column = torch.zeros_like(ids)
        for token, value in values.items():
            column[ids == token] = value
        result[key] = column
    return result
