"""Tests for core/embedded.py: tokenizer, processor, batches, and that training lowers the loss."""

from __future__ import annotations

import torch

from core.embedded import (IMAGE_TOKEN, EmbeddedConfig, build_processor, build_tokenizer, collate, image_seq_length,
                           train)
from core.texts import Example
from core.world import make_scene, render

TINY = dict(vision_hidden=32, vision_layers=1, vision_heads=2, text_hidden=64, text_layers=2, text_heads=4,
            text_intermediate=128)


def test_tokenizer_handles_any_text_and_round_trips():
    tok = build_tokenizer()
    for text in ["A large yellow star is on the left.", "Ünïcödé 🙂 and unseen words: zebra!"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    assert tok.tokenize(" yellow") == ["Ġyellow"]  # world words are single tokens
    assert tok.convert_tokens_to_ids(IMAGE_TOKEN) != tok.unk_token_id


def test_processor_expands_image_token_like_llava():
    cfg = EmbeddedConfig(**TINY)
    processor = build_processor(build_tokenizer(), cfg)
    prompt = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"},
                                                                        {"type": "text", "text": "Hi"}]}],
                                           add_generation_prompt=True)
    assert prompt == "<s>USER: <image>\nHi ASSISTANT:"
    inputs = processor(text=[prompt], images=[render(make_scene(0))], return_tensors="pt")
    image_id = processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert int((inputs["input_ids"] == image_id).sum()) == image_seq_length(processor) == 64
    assert tuple(inputs["pixel_values"].shape) == (1, 3, 96, 96)


def test_collate_masks_prompt_and_keeps_answer():
    cfg = EmbeddedConfig(**TINY)
    processor = build_processor(build_tokenizer(), cfg)
    tok = processor.tokenizer
    examples = [Example("Is there a red circle in the image?", "Yes.", "pope"),
                Example("Describe the image.", "A small red circle is on the left.", "describe", use_image=False)]
    batch = collate(examples, [make_scene(1), make_scene(2)], processor)
    assert batch["pixel_values"].shape[0] == 1  # only the first example has an image
    for row, ex in enumerate(examples):
        labelled = batch["labels"][row][batch["labels"][row] != -100].tolist()
        assert tok.decode(labelled) == " " + ex.answer + "</s>"
    # padding is on the right and never attended
    assert batch["attention_mask"][1].sum() < batch["attention_mask"][0].sum()
    assert int(batch["input_ids"][1][-1]) == tok.pad_token_id


def test_micro_training_lowers_the_loss_and_is_seeded():
    cfg = EmbeddedConfig(**TINY, steps=12, batch_size=8, warmup=2, lr=3e-3)
    _, _, losses = train(cfg, log_every=0)
    assert sum(losses[-3:]) / 3 < losses[0] - 0.5
    _, _, again = train(cfg, log_every=0)
    assert again == losses


def test_saved_model_loads_through_auto_classes(tiny_llava):
    from transformers import LlavaForConditionalGeneration

    assert isinstance(tiny_llava.model, LlavaForConditionalGeneration)
    assert torch.isfinite(next(tiny_llava.model.parameters())).all()
