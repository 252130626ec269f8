"""Tests for core/shapes/proof.py: the whole comparison runs end to end at toy size with the tiny model."""

from __future__ import annotations

import json

import pytest

from core.config import ModelSettings
from core.shapes.proof import ProofSettings, format_table, pair_verdict, run_proof
from core.shapes.world import WorldOptions
from core.training.dpo.settings import DPOSettings


def test_proof_runs_end_to_end_at_toy_size(tiny_llava_dir, tmp_path):
    world = WorldOptions(partner_rate=0.0, dim_rate=0.5)  # scenes come from the chosen world
    settings = ProofSettings(eval_scenes=3, curate_scenes=3, pairs=2, candidates=3, max_new_tokens=8, batch_size=3,
                             dpo=DPOSettings(batch_size=2, lr=1e-3), world=world)
    model = ModelSettings(model=str(tiny_llava_dir), device="cpu", dtype="float32", adapter="", load_in_4bit=False)
    result = run_proof(settings, tmp_path / "proof", model, log=lambda line: None)
    names = [row.name for row in result.rows]
    assert names[0] == "base" and set(names[1:]) <= {"DPO, debiased pairs", "DPO, raw pairs", "DPO, oracle pairs"}
    assert all(0 <= row.chair_s <= 1 and 0 <= row.pope_random <= 1 for row in result.rows)
    assert all(row.pairs == result.pairs_found[row.name.split(", ")[1].split()[0]] for row in result.rows[1:])
    saved = json.loads((tmp_path / "proof" / "proof.json").read_text())
    assert saved["pairs_found"] == result.pairs_found
    assert saved["settings"]["world"] == {"partner_rate": 0.0, "dim_rate": 0.5}
    assert [example["truth"] for example in saved["examples"]] == [
        sorted(" ".join(name) for name in world.scene(seed).names()) for seed in range(3)]
    assert {rank: sum(counts.values()) for rank, counts in result.pair_quality.items()} == {
        rank: n for rank, n in result.pairs_found.items() if n}
    assert (tmp_path / "proof" / "proof.md").read_text() == format_table(result) + "\n"
    with pytest.raises(FileExistsError, match="not empty"):
        run_proof(settings, tmp_path / "proof", model)


def test_settings_refuse_more_pairs_than_scenes():
    with pytest.raises(ValueError, match="cannot exceed curate_scenes"):
        ProofSettings(curate_scenes=10, pairs=20)


def test_pair_verdict_counts_hallucinated_objects_against_the_truth():
    truth = {("red", "square")}
    partner = "A red square is on the left. A green triangle is on the right."
    assert pair_verdict("A red square is on the left.", partner, truth) == "fewer"
    assert pair_verdict(partner, "A red square is on the left.", truth) == "more"
    assert pair_verdict("A blue star is here.", partner, truth) == "same"
