"""LoRA-DPO: teach a vision-language model to prefer the chosen answer of each preference pair.

Direct Preference Optimization (Rafailov et al. 2023) with a LoRA adapter (peft) on the
language model, optionally the projector too. The reference policy is the same model with
the adapter switched off (`model.disable_adapter()`), so there is one copy of the weights;
the base may be 4-bit NF4 (QLoRA, CUDA) or full precision (CPU).

Why a focused loop and not TRL's DPOTrainer: TRL 1.16's DPOTrainer does train our tiny LLaVA
offline (tried), but its losses are one long if/elif ladder that can only be exercised
through a model, its vision collator is general-purpose and untestable in a few lines, and
its checkpoints are Trainer folders written in place. Here each piece is small and tested on
its own: a collator with exact tensors, loss functions checked against the formula on known
numbers, and epoch checkpoints written to a temporary folder and renamed only when complete,
so a crash resumes bit-identically from the last whole one.

Train from the pairs in the store (progress per step; the run is recorded in the store):
    python -m core.training.dpo.loop --db data/selfjudge.db --out data/adapters/NAME [--epochs 1 --beta 0.1 ...]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from core.engine.chat import prepare_image, prompt_ids, token_inputs, turn_ids
from core.config import ModelSettings
from core.engine.loading import LoadedModel, load_model

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


# Losses ------------------------------------------------------------------------------------------

@dataclass
class PairLogps:
    """Summed completion log-probs of each pair under the policy and the reference, and completion lengths."""

    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    reference_chosen: torch.Tensor
    reference_rejected: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor

    @property
    def chosen_logratio(self) -> torch.Tensor:
        """log pi(chosen) - log pi_ref(chosen)."""
        return self.policy_chosen - self.reference_chosen

    @property
    def rejected_logratio(self) -> torch.Tensor:
        """log pi(rejected) - log pi_ref(rejected)."""
        return self.policy_rejected - self.reference_rejected


def sigmoid_loss(logps: PairLogps, beta: float) -> torch.Tensor:
    """DPO: -log sigmoid(beta * (chosen log-ratio - rejected log-ratio)), per pair."""
    return -F.logsigmoid(beta * (logps.chosen_logratio - logps.rejected_logratio))


def ipo_loss(logps: PairLogps, beta: float) -> torch.Tensor:
    """IPO (Azar et al. 2023, eq. 17): (h - 1/(2 beta))^2 per pair, h from per-token mean log-ratios.

    Averaging over completion tokens (as TRL does, agreed with the IPO authors) keeps the
    target 1/(2 beta) meaningful whatever the answers' lengths.
    """
    h = (logps.chosen_logratio / logps.chosen_tokens.clamp(min=1)
         - logps.rejected_logratio / logps.rejected_tokens.clamp(min=1))
    return (h - 1 / (2 * beta)) ** 2


LOSSES: dict[str, Callable[[PairLogps, float], torch.Tensor]] = {"sigmoid": sigmoid_loss, "ipo": ipo_loss}


def chosen_nll(logps: PairLogps) -> torch.Tensor:
    """Mean per-token negative log-likelihood of each chosen answer under the policy."""
    return -logps.policy_chosen / logps.chosen_tokens.clamp(min=1)


def total_loss(logps: PairLogps, settings: DPOSettings) -> torch.Tensor:
    """The batch loss: the preference loss plus sft_weight times the chosen answers' NLL."""
    return (LOSSES[settings.loss](logps, settings.beta) + settings.sft_weight * chosen_nll(logps)).mean()


def step_metrics(logps: PairLogps, loss: torch.Tensor, beta: float) -> dict:
    """Loss, implicit rewards beta * log-ratio, their margin, how often chosen out-rewards rejected,
    and the chosen answers' mean token NLL (rising NLL is the first sign of collapse)."""
    chosen_reward = beta * logps.chosen_logratio.detach()
    rejected_reward = beta * logps.rejected_logratio.detach()
    margin = chosen_reward - rejected_reward
    return {"loss": float(loss.detach()), "reward_chosen": float(chosen_reward.mean()),
            "reward_rejected": float(rejected_reward.mean()), "margin": float(margin.mean()),
            "accuracy": float((margin > 0).float().mean()), "chosen_nll": float(chosen_nll(logps).detach().mean())}


# Batches -----------------------------------------------------------------------------------------

def completion_ids(processor, prompt: str, answer: str) -> list[int]:
    """Ids of the answer as the chat template writes it after the generation prompt, end of turn included.

    The end of turn is part of what DPO compares: it is how the model learns where to stop.
    It is the template's end-of-turn token, or the tokenizer's EOS where the template writes
    none (llava-hf), as TRL appends it (core.engine.chat.turn_ids).
    """
    return turn_ids(processor, prompt, answer).completion


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
            for completion in [completion_ids(processor, example.prompt, getattr(example, side))]]
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


def sequence_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed log-probs of each row's completion tokens."""
    completion_mask = batch["completion_mask"]
    width = completion_mask.shape[1]
    # Only positions from the first completion token on need logits (prompts are long and
    # alike: 576 image tokens for LLaVA-1.5), which on a 32k vocabulary saves most activation memory.
    keep = width - int(completion_mask.any(dim=0).nonzero()[0])
    inputs = {k: v for k, v in batch.items() if k != "completion_mask"}
    logits = model(**inputs, logits_to_keep=keep + 1, use_cache=False).logits[:, :-1].float()
    targets = batch["input_ids"][:, -keep:]
    token_logps = torch.log_softmax(logits, dim=-1).gather(2, targets.unsqueeze(2)).squeeze(2)
    return (token_logps * completion_mask[:, -keep:]).sum(dim=1)


def preference_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> PairLogps:
    """Policy log-probs (with gradients) and reference log-probs (adapter disabled, no gradients)."""
    n_pairs = batch["input_ids"].shape[0] // 2
    policy = sequence_logps(model, batch)
    with torch.no_grad(), model.disable_adapter():
        reference = sequence_logps(model, batch)
    tokens = batch["completion_mask"].sum(dim=1).to(policy.dtype)
    return PairLogps(policy_chosen=policy[:n_pairs], policy_rejected=policy[n_pairs:],
                     reference_chosen=reference[:n_pairs], reference_rejected=reference[n_pairs:],
                     chosen_tokens=tokens[:n_pairs], rejected_tokens=tokens[n_pairs:])


# The adapter --------------------------------------------------------------------------------------

def add_lora(model: torch.nn.Module, settings: DPOSettings) -> torch.nn.Module:
    """Wrap the model with a fresh, seeded LoRA adapter (in place; `remove_lora` takes it off)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if isinstance(model, PeftModel):
        raise ValueError("the model already carries an adapter; train DPO from the base model "
                         "(ModelSettings(adapter=''))")
    config = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                        target_modules=LANGUAGE_MODEL_TARGETS, bias="none",
                        modules_to_save=PROJECTOR_MODULES if settings.train_projector else None)
    torch.manual_seed(settings.seed)
    peft_model = get_peft_model(model, config)
    if settings.gradient_checkpointing:
        # Non-reentrant checkpointing needs no input gradients, so frozen 4-bit bases work as they are.
        peft_model.base_model.model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False})
    return peft_model


def remove_lora(peft_model: torch.nn.Module) -> torch.nn.Module:
    """Take the adapter off again and return the base model with its original modules (projector included)."""
    from peft.utils import ModulesToSaveWrapper

    inner = peft_model.base_model.model
    # peft's unload() would keep the *trained* copy of a modules_to_save module; put the original back.
    for name, module in list(inner.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent, _, child = name.rpartition(".")
            setattr(inner.get_submodule(parent), child, module.original_module)
    base = peft_model.unload()
    if base.is_activation_checkpointing:
        base.activation_checkpointing_disable()
    return base


@contextlib.contextmanager
def lora_attached(model: torch.nn.Module, settings: DPOSettings) -> Iterator[torch.nn.Module]:
    """A fresh seeded LoRA adapter on `model` inside the block; afterwards the model is as it was."""
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    was_training = model.training
    peft_model = add_lora(model, settings)
    try:
        yield peft_model
    finally:
        base = remove_lora(peft_model)
        for name, parameter in base.named_parameters():
            parameter.requires_grad_(requires_grad[name])
        base.train(was_training)


# Checkpoints --------------------------------------------------------------------------------------

def partial_dir(out_dir: Path) -> Path:
    """Where a run keeps its epoch checkpoints until the adapter is complete (hidden beside it)."""
    return out_dir.parent / f".{out_dir.name}.partial"


def pairs_fingerprint(pairs: list[PreferenceExample]) -> str:
    """A hash of the training pairs, so a resume refuses to continue on different data."""
    digest = hashlib.sha256()
    for pair in pairs:
        for text in (pair.prompt, pair.chosen, pair.rejected):
            digest.update(text.encode() + b"\0")
        digest.update(pair.image.convert("RGB").tobytes())
    return digest.hexdigest()


def _publish(tmp: Path, final: Path) -> None:
    # A directory rename is atomic: readers see either no folder or a complete one.
    os.replace(tmp, final)


def save_checkpoint(work: Path, epoch: int, model, optimizer, step: int, metrics: list[dict]) -> Path:
    """Adapter + optimizer + step + RNG after `epoch`, written to a temp folder and renamed when complete."""
    tmp = work / f".epoch-{epoch}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    torch.save({"optimizer": optimizer.state_dict(), "step": step, "epoch": epoch, "metrics": metrics,
                "torch_rng": torch.get_rng_state()}, tmp / "trainer_state.pt")
    final = work / f"epoch-{epoch}"
    _publish(tmp, final)
    return final


def last_checkpoint(work: Path) -> Path | None:
    """The newest complete epoch checkpoint in a run folder (temp folders are half-written, ignored)."""
    done = [p for p in work.glob("epoch-*") if p.is_dir() and p.name.split("-")[1].isdigit()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def load_checkpoint(checkpoint: Path, model, optimizer) -> dict:
    """Restore adapter weights, optimizer and RNG; return the saved trainer state."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(checkpoint / "adapter_model.safetensors")))
    state = torch.load(checkpoint / "trainer_state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    return state


def prepare_work_dir(work: Path, settings: DPOSettings, fingerprint: str, run_key: str = "") -> Path | None:
    """Create the run folder, or check an existing one belongs to this run; return its last checkpoint.

    Checkpoints are resumed only by the same run (`run_key`, e.g. the store's run id) with the same
    settings and pairs. Those of another run (one cancelled, failed or abandoned) are deleted, never
    resumed; the same run with other settings or pairs is refused.
    """
    identity = {"settings": asdict(settings), "pairs_sha256": fingerprint, "run": run_key}
    run_file = work / "run.json"
    checkpoint = last_checkpoint(work) if run_file.exists() else None
    if checkpoint is not None:
        try:
            saved = json.loads(run_file.read_text())
        except ValueError:
            saved = {}
        if saved == identity:
            return checkpoint
        if isinstance(saved, dict) and saved.get("run", "") == run_key:
            raise ValueError(f"the checkpoints in {work.name} are of a run with other settings or pairs; delete "
                             "that folder to start over, or resume with the same settings and pairs")
    # Nothing of this run to resume (a new run, one that failed in its first epoch, or another
    # run's leftovers): start afresh.
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps(identity, indent=2) + "\n")
    return None


def discard_partial(out_dir: str | Path) -> None:
    """Delete a run's epoch checkpoints (its hidden .NAME.partial folder), so nothing ever resumes them."""
    shutil.rmtree(partial_dir(Path(out_dir)), ignore_errors=True)


# Training -----------------------------------------------------------------------------------------

def epoch_order(n_pairs: int, seed: int, epoch: int) -> list[int]:
    """The pair order of one epoch: a permutation that depends only on (seed, epoch)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n_pairs, generator=generator).tolist()


def _to_device(batch: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype) -> dict:
    return {k: v.to(device, dtype=dtype) if v.is_floating_point() else v.to(device) for k, v in batch.items()}


def train_dpo(model_source: LoadedModel | ModelSettings, pairs: list[PreferenceExample], out_dir: str | Path,
              settings: DPOSettings, on_step: Callable[[dict], None] | None = None,
              should_stop: Callable[[], bool] | None = None, run_key: str = "") -> TrainResult:
    """Train a LoRA adapter with DPO and save it to `out_dir` (resuming from a crashed run's checkpoints).

    `on_step` gets each step's metrics; `should_stop` is asked between steps and, when true,
    ends the run as "cancelled" with its checkpoints discarded. A run that raises keeps its
    complete epoch checkpoints, and calling again with the same arguments (run_key included)
    resumes from them; another run_key discards them.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"an adapter named {out_dir.name!r} already exists; "
                              "choose another adapter name or delete it")
    if not pairs:
        raise ValueError("no preference pairs to train on; add some (Pairs tab or python -m core.training.selfcurate)")
    pairs = pairs[:settings.max_pairs] if settings.max_pairs else list(pairs)
    loaded = model_source if isinstance(model_source, LoadedModel) else load_model(model_source)
    work = partial_dir(out_dir)
    checkpoint = prepare_work_dir(work, settings, pairs_fingerprint(pairs), run_key)
    input_dtype = loaded.model.dtype  # pixel values go in the base's float dtype (LoRA may be float32)
    with lora_attached(loaded.model, settings) as model:
        return _train(model, loaded, input_dtype, pairs, out_dir, work, checkpoint, settings, on_step, should_stop)


def _train(model, loaded: LoadedModel, input_dtype: torch.dtype, pairs: list[PreferenceExample], out_dir: Path,
           work: Path, checkpoint: Path | None, settings: DPOSettings, on_step, should_stop) -> TrainResult:
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=0.0)
    step, start_epoch, metrics = 0, 0, []
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, model, optimizer)
        step, start_epoch, metrics = state["step"], state["epoch"], state["metrics"]
    started = time.time()
    model.train()
    for epoch in range(start_epoch, settings.epochs):
        order = epoch_order(len(pairs), settings.seed, epoch)
        for first in range(0, len(order), settings.batch_size):
            if should_stop is not None and should_stop():
                shutil.rmtree(work, ignore_errors=True)
                return TrainResult("cancelled", "", metrics, step, time.time() - started, start_epoch)
            examples = [pairs[i] for i in order[first:first + settings.batch_size]]
            batch = _to_device(collate_preferences(examples, loaded.processor), loaded.device, input_dtype)
            logps = preference_logps(model, batch)
            loss = total_loss(logps, settings)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            step += 1
            row = {"step": step, "epoch": epoch + 1, **step_metrics(logps, loss, settings.beta),
                   "seconds": round(time.time() - started, 3)}
            if not all(math.isfinite(v) for v in row.values()):
                raise FloatingPointError(f"non-finite DPO metrics at step {step}: {row}; lower lr or beta")
            metrics.append(row)
            if on_step is not None:
                on_step(row)
        save_checkpoint(work, epoch + 1, model, optimizer, step, metrics)
    model.eval()
    finish_adapter(work, out_dir, settings, loaded, len(pairs), metrics)
    return TrainResult("finished", str(out_dir), metrics, step, time.time() - started, start_epoch)


def finish_adapter(work: Path, out_dir: Path, settings: DPOSettings, loaded: LoadedModel, n_pairs: int,
                   metrics: list[dict]) -> None:
    """Turn the last epoch checkpoint into the adapter folder (settings + summary beside it), atomically."""
    final = last_checkpoint(work)
    (final / "trainer_state.pt").unlink()
    (final / SETTINGS_FILE).write_text(json.dumps(asdict(settings), indent=2) + "\n")
    last = metrics[-1] if metrics else {}
    summary = {"base_model": loaded.model_id, "quantized": loaded.quantized, "pairs": n_pairs,
               "steps": len(metrics), "final": last}
    (final / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _publish(final, out_dir)
    shutil.rmtree(work)


def load_settings(adapter_dir: str | Path) -> DPOSettings:
    """The DPOSettings an adapter was trained with."""
    return DPOSettings.from_json(json.loads((Path(adapter_dir) / SETTINGS_FILE).read_text()))


# CLI -----------------------------------------------------------------------------------------------

def settings_parser() -> argparse.ArgumentParser:
    """Argparse flags for every DPOSettings field (shared with the UI's background runs)."""
    parser = argparse.ArgumentParser(prog="python -m core.training.dpo.loop", description=__doc__.split("\n\n")[0])
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


def main(argv: list[str] | None = None) -> None:
    """CLI: train an adapter on the store's pairs, printing metrics per step."""
    from core.training.finetune import run_training

    parser = settings_parser()
    parser.add_argument("--db", type=Path, required=True, help="the SQLite store with the pairs (data/selfjudge.db)")
    parser.add_argument("--out", type=Path, required=True, help="adapter folder to create (data/adapters/NAME)")
    parser.add_argument("--source", default="", choices=["", "human", "self"], help="only pairs from this source")
    parser.add_argument("--model", default=None, help="base model id or path (default: the embedded model)")
    parser.add_argument("--4bit", dest="load_in_4bit", action="store_true", help="QLoRA: load the base in 4-bit NF4")
    args = parser.parse_args(argv)
    settings = DPOSettings(**{f.name: getattr(args, f.name) for f in fields(DPOSettings)})
    model_settings = ModelSettings(**{k: v for k, v in {"model": args.model, "adapter": "",
                                                         "load_in_4bit": args.load_in_4bit or None}.items()
                                      if v is not None})

    def show(row: dict) -> None:
        print(f"step {row['step']:4d}  epoch {row['epoch']}  loss {row['loss']:.4f}  margin {row['margin']:+.4f}  "
              f"acc {row['accuracy']:.2f}  chosen {row['reward_chosen']:+.4f}  "
              f"rejected {row['reward_rejected']:+.4f}  nll {row['chosen_nll']:.3f}  {row['seconds']:.0f}s", flush=True)

    run = run_training(args.db, args.out.name, args.out, settings, model_settings, args.source, on_step=show)
    print(f"run #{run['id']} {run['status']}: {run['adapter_path'] or run['error']}")


if __name__ == "__main__":
    main()
