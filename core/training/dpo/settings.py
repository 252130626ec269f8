"""DPO settings, the preference example, the adapter's file names and the CLI flags for every setting."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from PIL import Image

from core.training.dpo.losses import LOSSES

# LoRA goes on the language model's attention and MLP projections only; the vision tower's
# q_proj/v_proj share these names, hence the anchor on the language model's name
# (language_model in LLaVA and Qwen2-VL, text_model in Idefics3/SmolVLM).
LANGUAGE_MODEL_TARGETS = (r".*(language_model|text_model)\..*\."
                          r"(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)")
# The vision-to-language projector: LLaVA, Idefics3, Qwen2-VL.
PROJECTOR_MODULES = ["multi_modal_projector", "connector", "merger"]
SETTINGS_FILE = "dpo_settings.json"
SUMMARY_FILE = "training_summary.json"


@dataclass
class PreferenceExample:
    """One preference: for this image and prompt, `chosen` is the better answer than `rejected`."""

    image: Image.Image
    prompt: str
    chosen: str
    rejected: str


@dataclass
class DPOSettings:
    """What to optimise and how; saved as JSON beside every adapter."""

    # Objective
    beta: float = 0.1
    loss: str = "sigmoid"  # a key of LOSSES
    # Optimisation
    lr: float = 5e-4
    epochs: int = 1
    batch_size: int = 4
    max_pairs: int = 0  # 0: all pairs
    seed: int = 0
    # Adapter
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    train_projector: bool = False
    # Stability: weight of the chosen answers' mean token NLL added to the loss (RPO, Pang et al.
    # 2024). DPO alone can lower chosen and rejected likelihoods together until a small model's
    # text falls apart; this term keeps the chosen answers likely. 0 = plain DPO/IPO.
    sft_weight: float = 0.0
    # Memory
    gradient_checkpointing: bool = True

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")
        if not 0 < self.beta <= 10:
            raise ValueError(f"beta must be in (0, 10] (typical: 0.1), not {self.beta}")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr must be in (0, 1) (typical LoRA-DPO: 5e-5 to 5e-4), not {self.lr}")
        for name in ("epochs", "batch_size", "lora_r", "lora_alpha"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, not {getattr(self, name)}")
        if self.max_pairs < 0:
            raise ValueError(f"max_pairs must be 0 (all) or a positive limit, not {self.max_pairs}")
        if not 0 <= self.sft_weight <= 10:
            raise ValueError(f"sft_weight must be in [0, 10] (0: plain DPO; 1: RPO), not {self.sft_weight}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), not {self.lora_dropout}")

    @classmethod
    def from_json(cls, data: dict) -> DPOSettings:
        """Rebuild from saved JSON, keeping defaults for keys older files lack and ignoring unknown ones."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class TrainResult:
    """How a training call ended: the adapter folder (empty unless finished) and the per-step metrics."""

    status: str  # "finished" | "cancelled"
    adapter_path: str
    metrics: list[dict] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    resumed_from_epoch: int = 0


def load_settings(adapter_dir: str | Path) -> DPOSettings:
    """The DPOSettings an adapter was trained with."""
    return DPOSettings.from_json(json.loads((Path(adapter_dir) / SETTINGS_FILE).read_text()))


def settings_parser() -> argparse.ArgumentParser:
    """Argparse flags for every DPOSettings field (shared with the UI's background runs)."""
    parser = argparse.ArgumentParser(prog="python -m core.training.dpo", description="LoRA-DPO: teach a vision-language "
                                     "model to prefer the chosen answer of each preference pair.")
    defaults = DPOSettings()
    helps = {"beta": "DPO temperature: how far the policy may move from the reference",
             "loss": f"loss variant: {', '.join(LOSSES)}", "lr": "AdamW learning rate",
             "epochs": "passes over the pairs (a checkpoint after each)", "batch_size": "pairs per step",
             "max_pairs": "train on at most this many pairs (0: all)", "seed": "seed for LoRA init and pair order",
             "lora_r": "LoRA rank", "lora_alpha": "LoRA scaling numerator", "lora_dropout": "dropout on LoRA inputs",
             "train_projector": "also train the vision-language projector (saved in the adapter)",
             "gradient_checkpointing": "recompute activations in backward to save memory",
             "sft_weight": "weight of the chosen answers' NLL added to the loss (RPO; 0: plain DPO)"}
    for f in fields(DPOSettings):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=helps[f.name])
        else:
            parser.add_argument(flag, type=type(default), default=default,
                                choices=list(LOSSES) if f.name == "loss" else None,
                                help=f"{helps[f.name]} (default {default})")
    return parser
