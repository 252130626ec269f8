"""Tests for core/training/dpo/: losses on known numbers, the collator's exact tensors, what training
changes, the disabled-adapter reference, resume after a crash, cancellation and the saved adapter."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from core.config import ModelSettings
from core.engine.loading import load_model
from core.shapes.world import make_scene, render
from core.training.dpo.checkpoints import partial_dir
from core.training.dpo.collate import collate_preferences
from core.training.dpo.loop import epoch_order, train_dpo
from core.training.dpo.lora import add_lora, lora_attached
from core.training.dpo.losses import LOSSES, PairLogps, sequence_logps, step_metrics, total_loss
from core.training.dpo.settings import DPOSettings, PreferenceExample, load_settings

PROMPT = "Describe the image."


def logps(policy_chosen, policy_rejected, reference_chosen, reference_rejected, chosen_tokens, rejected_tokens):
    t = torch.tensor
    return PairLogps(t(policy_chosen), t(policy_rejected), t(reference_chosen), t(reference_rejected),
                     t(chosen_tokens), t(rejected_tokens))


# Pair 1: chosen log-ratio -10 - -12 = 2, rejected -15 - -14 = -1. Pair 2: chosen -1, rejected +1.
KNOWN = logps([-10.0, -20.0], [-15.0, -30.0], [-12.0, -19.0], [-14.0, -31.0], [4.0, 2.0], [2.0, 5.0])


def test_sigmoid_loss_matches_the_dpo_formula():
    loss = LOSSES["sigmoid"](KNOWN, 0.1)
    # -log sigmoid(0.1 * (2 - -1)) and -log sigmoid(0.1 * (-1 - 1))
    expected = [math.log1p(math.exp(-0.3)), math.log1p(math.exp(0.2))]
    assert loss.tolist() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx([0.5543552444685271, 0.7981388693815918], abs=1e-12)


def test_ipo_loss_matches_the_formula_with_per_token_log_ratios():
    loss = LOSSES["ipo"](KNOWN, 0.1)
    # h = 2/4 - (-1)/2 = 1.0 and -1/2 - 1/5 = -0.7; target 1/(2*0.1) = 5
    assert loss.tolist() == pytest.approx([(1.0 - 5) ** 2, (-0.7 - 5) ** 2], abs=1e-5)


def test_sft_weight_adds_the_chosen_answers_mean_token_nll():
    # chosen NLL per token: 10/4 = 2.5 and 20/2 = 10
    plain = (math.log1p(math.exp(-0.3)) + math.log1p(math.exp(0.2))) / 2
    assert float(total_loss(KNOWN, DPOSettings(beta=0.1))) == pytest.approx(plain, abs=1e-6)
    assert float(total_loss(KNOWN, DPOSettings(beta=0.1, sft_weight=0.5))) == pytest.approx(
        plain + 0.5 * (2.5 + 10) / 2, abs=1e-6)


def test_step_metrics_on_known_numbers():
    loss = LOSSES["sigmoid"](KNOWN, 0.5).mean()
    row = step_metrics(KNOWN, loss, 0.5)
    assert row == pytest.approx({"loss": float(loss), "reward_chosen": 0.5 * (2 + -1) / 2,
                                 "reward_rejected": 0.5 * (-1 + 1) / 2, "margin": 0.5 * (3 + -2) / 2,
                                 "accuracy": 0.5, "chosen_nll": (2.5 + 10) / 2})


def test_settings_validate_with_fixes_in_the_message():
    with pytest.raises(ValueError, match="loss must be one of sigmoid, ipo"):
        DPOSettings(loss="hinge")
    with pytest.raises(ValueError, match="beta must be in"):
        DPOSettings(beta=0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        DPOSettings(batch_size=0)
    assert DPOSettings.from_json({"beta": 0.3, "unknown_future_key": 1}) == DPOSettings(beta=0.3)


def examples(n: int, chosen: str = "A red circle.", rejected: str = "A blue star is on the left.") -> list:
    return [PreferenceExample(render(make_scene(i)), PROMPT, chosen, rejected) for i in range(n)]


def test_collator_puts_chosen_rows_first_right_padded(tiny_llava):
    processor = tiny_llava.processor
    pair_a = PreferenceExample(render(make_scene(1)), PROMPT, "A red circle.", "A blue star is on the left.")
    pair_b = PreferenceExample(render(make_scene(2)), PROMPT, "No.", "Yes.")
    batch = collate_preferences([pair_a, pair_b], processor)
    tokenizer = processor.tokenizer

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    prompt = ids("<s>USER: " + "<image>" * 64 + "\n" + PROMPT + " ASSISTANT:")
    completions = [ids(" A red circle.</s>"), ids(" No.</s>"), ids(" A blue star is on the left.</s>"),
                   ids(" Yes.</s>")]
    width = len(prompt) + max(len(c) for c in completions)
    pad = tokenizer.pad_token_id
    expected_ids = torch.tensor([prompt + c + [pad] * (width - len(prompt) - len(c)) for c in completions])
    expected_mask = torch.tensor([[1] * (len(prompt) + len(c)) + [0] * (width - len(prompt) - len(c))
                                  for c in completions])
    expected_completion = torch.tensor([[0] * len(prompt) + [1] * len(c) + [0] * (width - len(prompt) - len(c))
                                        for c in completions])
    pixels = processor.image_processor([pair_a.image, pair_b.image], return_tensors="pt")["pixel_values"]
    assert sorted(batch) == ["attention_mask", "completion_mask", "input_ids", "pixel_values"]
    assert [len(c) for c in completions] == [5, 3, 9, 3]
    assert torch.equal(batch["input_ids"], expected_ids)
    assert torch.equal(batch["attention_mask"], expected_mask)
    assert torch.equal(batch["completion_mask"], expected_completion)
    assert torch.equal(batch["pixel_values"], torch.cat([pixels, pixels]))
    assert tokenizer.decode(batch["input_ids"][2][batch["completion_mask"][2] == 1]) == \
        " A blue star is on the left.</s>"


def test_batched_log_probs_equal_one_pair_at_a_time(tiny_llava):
    pairs = [PreferenceExample(render(make_scene(3)), PROMPT, "A red circle.", "No."),
             PreferenceExample(render(make_scene(4)), PROMPT, "Yes.", "A small green square is at the top.")]
    with torch.no_grad():
        together = sequence_logps(tiny_llava.model, collate_preferences(pairs, tiny_llava.processor))
        alone = [sequence_logps(tiny_llava.model, collate_preferences([p], tiny_llava.processor)) for p in pairs]
    assert together.tolist() == pytest.approx([float(alone[0][0]), float(alone[1][0]), float(alone[0][1]), float(alone[1][1])], abs=1e-4)


def test_reference_with_adapter_disabled_is_the_base_model(tiny_llava):
    base = copy.deepcopy(tiny_llava.model)
    batch = collate_preferences(examples(2), tiny_llava.processor)
    with torch.no_grad():
        base_logps = sequence_logps(base, batch)
    with lora_attached(base, DPOSettings()) as peft_model:
        with torch.no_grad():
            for name, parameter in peft_model.named_parameters():
                if "lora_B" in name:  # make the adapter matter (B starts at zero)
                    parameter.normal_(0, 0.5)
            adapted = sequence_logps(peft_model, batch)
            with peft_model.disable_adapter():
                reference = sequence_logps(peft_model, batch)
    assert torch.equal(reference, base_logps)
    assert (adapted - base_logps).abs().min() > 1e-3


def fresh_lora_state(model: torch.nn.Module, settings: DPOSettings) -> dict[str, torch.Tensor]:
    """The adapter tensors a run starts from, named as they are saved."""
    from peft import get_peft_model_state_dict

    with lora_attached(copy.deepcopy(model), settings) as peft_model:
        return {k: v.clone() for k, v in get_peft_model_state_dict(peft_model).items()}


def test_training_changes_every_lora_parameter_and_no_base_weight(tiny_llava, tmp_path):
    settings = DPOSettings(epochs=1, batch_size=2, lr=1e-2, train_projector=True)
    base_before = {k: v.clone() for k, v in tiny_llava.model.state_dict().items()}
    start = fresh_lora_state(tiny_llava.model, settings)
    result = train_dpo(tiny_llava, examples(6), tmp_path / "adapter", settings)
    trained = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert result.status == "finished" and result.steps == 3
    assert sorted(trained) == sorted(start)
    lora_keys = [k for k in trained if "lora_" in k]
    assert len(lora_keys) == 2 * 7 * 2  # A and B of 7 projections in each of 2 language-model layers
    assert all("language_model" in k for k in lora_keys)
    assert any("multi_modal_projector" in k for k in trained)
    unchanged = [k for k in trained if torch.equal(trained[k], start[k])]
    assert unchanged == []
    base_after = tiny_llava.model.state_dict()
    assert sorted(base_after) == sorted(base_before)
    assert [k for k in base_before if not torch.equal(base_before[k], base_after[k])] == []
    assert not tiny_llava.model.training


def test_adapter_folder_loads_through_core_loading_with_its_settings(tiny_llava, tiny_llava_dir, tmp_path):
    settings = DPOSettings(epochs=1, batch_size=4, lr=1e-2, beta=0.2, seed=3)
    train_dpo(tiny_llava, examples(4), tmp_path / "adapter", settings)
    assert load_settings(tmp_path / "adapter") == settings
    summary = json.loads((tmp_path / "adapter" / "training_summary.json").read_text())
    assert (summary["pairs"], summary["steps"], summary["quantized"]) == (4, 1, False)
    loaded = load_model(ModelSettings(model=str(tiny_llava_dir), device="cpu", dtype="float32",
                                      adapter=str(tmp_path / "adapter"), load_in_4bit=False))
    assert loaded.adapter == str(tmp_path / "adapter")
    assert type(loaded.model).__name__ == "PeftModel"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no partial folder left


class Crash(RuntimeError):
    pass


def test_resume_after_a_crash_equals_an_uninterrupted_run(tiny_llava, tmp_path):
    settings = DPOSettings(epochs=3, batch_size=2, lr=1e-2, lora_dropout=0.1, seed=7)
    pairs = examples(4)
    whole = train_dpo(tiny_llava, pairs, tmp_path / "whole", settings)

    def crash_in_epoch_three(row: dict) -> None:
        if row["step"] == 6:
            raise Crash("simulated power cut")

    with pytest.raises(Crash):
        train_dpo(tiny_llava, pairs, tmp_path / "resumed", settings, on_step=crash_in_epoch_three)
    assert not (tmp_path / "resumed").exists()
    assert sorted(p.name for p in partial_dir(tmp_path / "resumed").iterdir()) == ["epoch-1", "epoch-2", "run.json"]
    resumed = train_dpo(tiny_llava, pairs, tmp_path / "resumed", settings)
    assert resumed.resumed_from_epoch == 2
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in resumed.metrics]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in whole.metrics]
    a = load_file(str(tmp_path / "whole" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "adapter_model.safetensors"))
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert not partial_dir(tmp_path / "resumed").exists()


def test_resume_refuses_other_settings(tiny_llava, tmp_path):
    settings = DPOSettings(epochs=2, batch_size=2, lr=1e-2)

    def crash(row: dict) -> None:
        if row["step"] == 2:
            raise Crash("crash in epoch 2")

    with pytest.raises(Crash):
        train_dpo(tiny_llava, examples(2), tmp_path / "a", settings, on_step=crash)
    with pytest.raises(ValueError, match="other settings or pairs; delete that folder"):
        train_dpo(tiny_llava, examples(2), tmp_path / "a", DPOSettings(epochs=2, batch_size=2, lr=2e-2))


def test_cancel_between_steps_leaves_no_adapter_and_no_checkpoints(tiny_llava, tmp_path):
    steps: list[int] = []
    result = train_dpo(tiny_llava, examples(6), tmp_path / "a", DPOSettings(epochs=2, batch_size=2),
                       on_step=lambda row: steps.append(row["step"]), should_stop=lambda: len(steps) == 4)
    assert (result.status, result.adapter_path, result.steps, steps) == ("cancelled", "", 4, [1, 2, 3, 4])
    assert list(tmp_path.iterdir()) == []


def test_refuses_existing_folder_no_pairs_and_a_model_with_an_adapter(tiny_llava, tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="choose another adapter name"):
        train_dpo(tiny_llava, examples(1), tmp_path / "taken", DPOSettings())
    with pytest.raises(ValueError, match="no preference pairs"):
        train_dpo(tiny_llava, [], tmp_path / "b", DPOSettings())
    with lora_attached(copy.deepcopy(tiny_llava.model), DPOSettings()) as peft_model:
        with pytest.raises(ValueError, match="already carries an adapter"):
            add_lora(peft_model, DPOSettings())


def test_epoch_order_depends_only_on_seed_and_epoch():
    assert epoch_order(6, 0, 1) == epoch_order(6, 0, 1)
    assert sorted(epoch_order(6, 0, 1)) == list(range(6))
    assert epoch_order(6, 0, 1) != epoch_order(6, 0, 2)


def test_cli_help_lists_every_setting(capsys):
    from core.training.dpo.__main__ import main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for flag in ("--beta", "--loss", "--lr", "--epochs", "--batch-size", "--lora-r", "--train-projector",
                 "--no-gradient-checkpointing", "--db", "--out", "--4bit"):
        assert flag in out



@pytest.mark.parametrize("family", ["tiny_idefics3", "tiny_qwen2_vl"])
def test_other_families_batch_exactly_and_train_with_the_projector(family, request, tmp_path):
    loaded = request.getfixturevalue(family)
    pairs = examples(2, rejected="Yes.")
    with torch.no_grad():
        together = sequence_logps(loaded.model, collate_preferences(pairs, loaded.processor))
        alone = [sequence_logps(loaded.model, collate_preferences([p], loaded.processor)) for p in pairs]
    expected = [float(alone[0][0]), float(alone[1][0]), float(alone[0][1]), float(alone[1][1])]
    assert together.tolist() == pytest.approx(expected, abs=1e-4)
    result = train_dpo(loaded, pairs, tmp_path / "adapter", DPOSettings(batch_size=2, lr=1e-2,
                                                                         train_projector=True))
    saved = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert result.status == "finished"
    assert any("lora_A" in k for k in saved) and any("lora" not in k for k in saved)  # projector copy saved
    assert all("vision_model" not in k and "visual.blocks" not in k for k in saved)
