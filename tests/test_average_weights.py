"""Tests for bench/average_weights.py: the mean of saved models' weights loads as a model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from core.shapes.embedded import EmbeddedConfig, train

SPEC = importlib.util.spec_from_file_location("average_weights",
                                              Path(__file__).parent.parent / "bench" / "average_weights.py")
average_weights = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(average_weights)

TINY = dict(vision_hidden=32, vision_layers=1, vision_heads=2, text_hidden=64, text_layers=2, text_heads=4,
            text_intermediate=128, steps=2, batch_size=4, warmup=1, vision_steps=0, answer_steps=0, text_steps=0)


def test_the_mean_of_two_runs_is_saved_and_loads_through_the_auto_classes(tmp_path):
    from transformers import AutoModelForImageTextToText

    first, _, _ = train(EmbeddedConfig(**TINY), tmp_path / "a", log_every=0)
    second, _, _ = train(EmbeddedConfig(**TINY, seed=1), tmp_path / "b", log_every=0)
    count = average_weights.average_weights([tmp_path / "a", tmp_path / "b"], tmp_path / "soup")
    soup = AutoModelForImageTextToText.from_pretrained(tmp_path / "soup", dtype=torch.float32)
    a, b = first.state_dict(), second.state_dict()
    assert count > 0
    for name, tensor in soup.state_dict().items():
        assert torch.allclose(tensor, (a[name] + b[name]) / 2, atol=1e-6), name
    assert not torch.equal(a["lm_head.weight"], b["lm_head.weight"])  # two different runs were averaged
    assert (tmp_path / "soup" / "tokenizer.json").exists()


def test_bad_input_is_refused_and_nothing_is_written(tmp_path):
    train(EmbeddedConfig(**TINY), tmp_path / "a", log_every=0)
    train(EmbeddedConfig(**(TINY | {"text_intermediate": 96})), tmp_path / "wider", log_every=0)
    with pytest.raises(ValueError, match="architecture"):
        average_weights.average_weights([tmp_path / "a", tmp_path / "wider"], tmp_path / "soup")
    with pytest.raises(ValueError, match="at least two"):
        average_weights.average_weights([tmp_path / "a"], tmp_path / "soup")
    assert not (tmp_path / "soup").exists()
    with pytest.raises(SystemExit, match="exists"):
        average_weights.main(["--out", str(tmp_path / "a"), str(tmp_path / "a"), str(tmp_path / "a")])
