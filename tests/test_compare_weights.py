"""Tests for bench/compare_weights.py, and that seeded training gives the same weights twice."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from core.shapes.embedded import EmbeddedConfig, train

SPEC = importlib.util.spec_from_file_location("compare_weights",
                                              Path(__file__).parent.parent / "bench" / "compare_weights.py")
compare_weights = importlib.util.module_from_spec(SPEC)
sys.modules[SPEC.name] = compare_weights  # its dataclass looks its module up there
SPEC.loader.exec_module(compare_weights)

TINY = dict(vision_hidden=32, vision_layers=1, vision_heads=2, text_hidden=64, text_layers=2, text_heads=4,
            text_intermediate=128, steps=3, batch_size=4, warmup=1, vision_steps=2, answer_steps=2, text_steps=0)


def test_one_seed_trains_equal_weights_and_another_seed_does_not(tmp_path, capsys):
    for name, seed in (("a", 0), ("again", 0), ("other", 1)):
        train(EmbeddedConfig(**TINY, seed=seed), tmp_path / name, log_every=0)
    same = compare_weights.compare_weights(tmp_path / "a", tmp_path / "again")
    assert same.equal == same.total > 0 and same.largest_difference == 0.0
    other = compare_weights.compare_weights(tmp_path / "a", tmp_path / "other")
    assert other.equal < other.total and other.largest_difference > 0
    with pytest.raises(SystemExit) as exit_info:
        compare_weights.main([str(tmp_path / "a"), str(tmp_path / "other")])
    assert exit_info.value.code == 1
    assert f"{other.equal} of {other.total} tensors equal" in capsys.readouterr().out


def test_different_architectures_are_refused(tmp_path):
    train(EmbeddedConfig(**TINY), tmp_path / "a", log_every=0)
    train(EmbeddedConfig(**(TINY | {"text_intermediate": 96})), tmp_path / "wider", log_every=0)
    with pytest.raises(SystemExit, match="architecture"):
        compare_weights.main([str(tmp_path / "a"), str(tmp_path / "wider")])
