"""Shared fixtures: tiny models built from config (no network, no shipped files needed)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory):
    """A tiny random-weight LLaVA (the embedded architecture, shrunk) saved with save_pretrained."""
    from core.shapes.embedded import EmbeddedConfig, build_model, build_processor, build_tokenizer

    # text sizes are multiples of 32: bitsandbytes' CPU 4-bit kernel needs that
    cfg = EmbeddedConfig(vision_hidden=32, vision_layers=1, vision_heads=2, text_hidden=64, text_layers=2,
                         text_heads=4, text_intermediate=128, seed=0)
    tokenizer = build_tokenizer(cfg.vocab_size, cfg.seed)
    processor = build_processor(tokenizer, cfg)
    model = build_model(tokenizer, cfg)
    path = tmp_path_factory.mktemp("tiny_llava")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llava(tiny_llava_dir):
    """The tiny LLaVA loaded through the Auto classes, as a core.engine.loading.LoadedModel."""
    from core.config import ModelSettings
    from core.engine.loading import load_model

    return load_model(ModelSettings(model=str(tiny_llava_dir), device="cpu", dtype="float32", adapter="",
                                    load_in_4bit=False))


@pytest.fixture(scope="session")
def tiny_idefics3(tmp_path_factory):
    """A tiny random-weight Idefics3 (SmolVLM architecture), saved and loaded through the Auto classes."""
    from core.config import ModelSettings
    from core.engine.loading import load_model
    from tests.tiny_families import build_idefics3

    path = build_idefics3(tmp_path_factory.mktemp("tiny_idefics3"))
    return load_model(ModelSettings(model=str(path), device="cpu", dtype="float32", adapter="", load_in_4bit=False))


@pytest.fixture(scope="session")
def tiny_qwen2_vl():
    """A tiny random-weight Qwen2-VL (M-RoPE), built in memory (its processor cannot be saved without torchvision)."""
    from core.engine.loading import LoadedModel
    from tests.tiny_families import build_qwen2_vl

    model, processor = build_qwen2_vl()
    return LoadedModel(model=model, processor=processor, model_id="tiny-qwen2-vl", adapter="", quantized=False)
