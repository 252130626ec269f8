"""TRL DPOTrainer on an exported dataset, on CPU with the tiny model: the adapter trains and loads like ours."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from core.config import ModelSettings
from core.data.exchange import export_pairs
from core.data.store import Pair, Store
from core.engine.loading import load_model
from core.training.dpo.settings import SETTINGS_FILE, SUMMARY_FILE, DPOSettings
from core.training.trl_dpo import main, preference_dataset, trl_config


@pytest.fixture
def export(tmp_path):
    store = Store(tmp_path / "selfjudge.db")
    for n, colour in enumerate(("red", "blue", "green", "white")):
        store.add_pair(Pair(image_sha256="", prompt="Describe the image.", chosen=f"A {colour} circle.",
                            rejected="A black square.", chosen_scores={}, rejected_scores={}, model_id="tiny",
                            adapter="", source="self", note="", created_at=f"2025-01-01T00:00:0{n}.000+00:00"),
                       Image.new("RGB", (16, 16), colour))
    return export_pairs(store, tmp_path / "exports", "jsonl").path


def test_dataset_is_trl_vision_preference_rows(export):
    dataset = preference_dataset(export)
    assert dataset.column_names == ["images", "prompt", "chosen", "rejected"]
    row = dataset[0]
    assert row["images"][0].size == (16, 16)
    assert row["prompt"][0]["content"][1] == {"type": "text", "text": "Describe the image."}
    assert row["chosen"] == [{"role": "assistant", "content": [{"type": "text", "text": "A red circle."}]}]


def test_config_maps_our_settings(tmp_path):
    config = trl_config(DPOSettings(beta=0.2, loss="ipo", sft_weight=0.5, lr=1e-4, batch_size=2, epochs=3), tmp_path)
    assert (config.beta, config.loss_type, config.loss_weights) == (0.2, ["ipo", "sft"], [1.0, 0.5])
    assert (config.learning_rate, config.per_device_train_batch_size, config.num_train_epochs) == (1e-4, 2, 3)


def test_trains_an_adapter_that_loads_like_ours(export, tiny_llava_dir, tmp_path, capsys):
    out = tmp_path / "adapters" / "trl-run"
    main(["--data", str(export), "--model", str(tiny_llava_dir), "--out", str(out), "--batch-size", "2",
          "--epochs", "1", "--lr", "0.01"])
    assert capsys.readouterr().out.strip().endswith(f"adapter in {out}")
    assert json.loads((out / SETTINGS_FILE).read_text())["lr"] == 0.01
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert (summary["pairs"], summary["steps"], summary["engine"]) == (4, 2, "trl")
    assert not list(out.parent.glob(".*partial"))
    base = load_model(ModelSettings(model=str(tiny_llava_dir), device="cpu", dtype="float32", adapter=""))
    tuned = load_model(ModelSettings(model=str(tiny_llava_dir), device="cpu", dtype="float32", adapter=str(out)))
    lora_b = {n: p for n, p in tuned.model.named_parameters() if "lora_B" in n}
    assert lora_b and all("language_model" in n for n in lora_b)
    assert all(p.abs().sum() > 0 for p in lora_b.values())  # B starts at zero: every one was trained
    base_weights = dict(base.model.named_parameters())
    for name, param in tuned.model.named_parameters():
        plain = name.replace("base_model.model.", "").replace(".base_layer", "")
        if "lora_" not in name:
            assert torch.equal(param, base_weights[plain]), name
    with pytest.raises(SystemExit, match="already exists"):
        main(["--data", str(export), "--model", str(tiny_llava_dir), "--out", str(out)])
