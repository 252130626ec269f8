"""The DPO training loop: `train_dpo` trains a LoRA adapter on preference pairs and saves it.

Each epoch's pairs come in a seeded order; a checkpoint is written after every epoch, so a
crashed run resumes from the last complete one (core.training.dpo.checkpoints).
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch

from core.config import ModelSettings
from core.engine.loading import LoadedModel, load_model
from core.training.dpo.checkpoints import (finish_adapter, load_checkpoint, pairs_fingerprint, partial_dir,
                                           prepare_work_dir, save_checkpoint)
from core.training.dpo.collate import collate_preferences
from core.training.dpo.lora import lora_attached
from core.training.dpo.losses import preference_logps, step_metrics, total_loss
from core.training.dpo.settings import DPOSettings, PreferenceExample, TrainResult

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
