"""The DPO collator: one batch with prompt + chosen rows first and prompt + rejected rows second.

Each completion ends with its end of turn (core.engine.chat.turn_ids): it is part of what DPO
compares, since it is how the model learns where to stop. It is the template's end-of-turn
token, or the tokenizer's EOS where the template writes none (llava-hf), as TRL appends it.
"""

from __future__ import annotations

import torch

from core.engine.chat import prepare_image, prompt_ids, token_inputs, turn_ids
from core.training.dpo.settings import PreferenceExample


def collate_preferences(examples: list[PreferenceExample], processor) -> dict[str, torch.Tensor]:
    """A DPO batch: rows 0..B-1 are prompt + chosen, rows B..2B-1 prompt + rejected (same order).

    Prompts are built as the judge and generation build them (core.engine.chat). Rows are
    right-padded, so every real token keeps its position whatever the padding (which also
    suits models that derive positions themselves, like Qwen2-VL's M-RoPE).
    `completion_mask` marks the answer tokens whose log-probs DPO compares.
    """
    if not examples:
        raise ValueError("a preference batch needs at least one example")
    images = [prepare_image(processor, example.image) for example in examples]
    prompts = [prompt_ids(processor, example.prompt, image) for example, image in zip(examples, images)]
    rows = [(prompt + completion, len(completion), image)
            for side in ("chosen", "rejected")
            for example, prompt, image in zip(examples, prompts, images)
            for completion in [turn_ids(processor, example.prompt, getattr(example, side)).completion]]
    width = max(len(ids) for ids, _, _ in rows)
    input_ids = torch.full((len(rows), width), processor.tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    completion_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, completion_length, _) in enumerate(rows):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        attention_mask[i, :len(ids)] = 1
        completion_mask[i, len(ids) - completion_length:len(ids)] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}
    # Per-token extras (Qwen2-VL's mm_token_type_ids) row by row; per-image tensors (pixel_values) stacked.
    for i, (_, _, image) in enumerate(rows):
        for key, column in token_inputs(image, input_ids[i:i + 1]).items():
            batch.setdefault(key, torch.zeros_like(input_ids))[i] = column[0] * attention_mask[i]
    for key in images[0].tensors:
        batch[key] = torch.cat([image.tensors[key] for _, _, image in rows])
    return batch
