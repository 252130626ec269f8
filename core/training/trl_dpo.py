"""Train a LoRA adapter on an exported preference dataset with TRL's DPOTrainer, on one GPU or many (accelerate).

The studio's own loop (core.training.dpo, the Fine-tune tab) trains from the store on one device,
resumes after a stop and shows its progress. When the pairs or the model outgrow one GPU,
export the pairs (python -m core.data.exchange export) and train them here instead: TRL's
DPOTrainer runs under accelerate, so data parallel, DeepSpeed ZeRO and FSDP come from an
accelerate config the user already has. The adapter has core.training.dpo's LoRA targets (the
language model's attention and MLP projections; the projector with --train-projector) and
its dpo_settings.json and training_summary.json beside it, so it loads in the studio like
one of its own (SELFJUDGE_ADAPTER / --adapter, core.engine.loading.attach_adapter).

Run:  python -m core.training.trl_dpo --data data/exports/pairs-...-parquet --model llava-hf/llava-1.5-7b-hf \\
          --out data/adapters/llava-trl
      accelerate launch --num_processes 8 -m core.training.trl_dpo --data ... --model ... --out ...
      accelerate launch --config_file zero2.yaml -m core.training.trl_dpo ...   (DeepSpeed or FSDP config)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from core.data.exchange import parquet_features, preference_messages, read_dataset
from core.training.dpo.settings import (LANGUAGE_MODEL_TARGETS, PROJECTOR_MODULES, SETTINGS_FILE, SUMMARY_FILE,
                                        DPOSettings)

# DPOSettings.loss -> TRL's loss_type
TRL_LOSSES = {"sigmoid": "sigmoid", "ipo": "ipo"}
DATASET_COLUMNS = ("images", "prompt", "chosen", "rejected")


def preference_dataset(path: Path):
    """An export of core.data.exchange (folder, data file or .zip) as a `datasets.Dataset` in TRL's vision format."""
    from datasets import Dataset, Features

    rows = [{"images": [image], **preference_messages(pair)} for pair, image in read_dataset(Path(path))]
    if not rows:
        raise ValueError(f"{path} holds no pairs; export some first (python -m core.data.exchange export)")
    features = parquet_features()
    return Dataset.from_list(rows, features=Features({c: features[c] for c in DATASET_COLUMNS}))


def lora_config(settings: DPOSettings):
    """The LoRA config core.training.dpo trains with, for TRL to apply."""
    from peft import LoraConfig

    return LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                      target_modules=LANGUAGE_MODEL_TARGETS, bias="none",
                      modules_to_save=PROJECTOR_MODULES if settings.train_projector else None)


def trl_config(settings: DPOSettings, work_dir: Path, gradient_accumulation: int = 1, max_length: int | None = None,
               bf16: bool = False):
    """TRL's DPOConfig for these settings: sft_weight > 0 adds TRL's "sft" loss with that weight (RPO)."""
    from trl import DPOConfig

    if settings.loss not in TRL_LOSSES:
        raise ValueError(f"TRL training supports the losses {', '.join(TRL_LOSSES)}, not {settings.loss!r}")
    losses, weights = [TRL_LOSSES[settings.loss]], [1.0]
    if settings.sft_weight > 0:
        losses.append("sft")
        weights.append(settings.sft_weight)
    return DPOConfig(output_dir=str(work_dir), beta=settings.beta, loss_type=losses, loss_weights=weights,
                     learning_rate=settings.lr, num_train_epochs=settings.epochs,
                     per_device_train_batch_size=settings.batch_size, gradient_accumulation_steps=gradient_accumulation,
                     seed=settings.seed, activation_checkpointing=settings.gradient_checkpointing,
                     activation_checkpointing_kwargs={"use_reentrant": False}, max_length=max_length, bf16=bf16,
                     logging_steps=1, save_strategy="no", report_to="none", dataloader_num_workers=0)


def load_base(model_id: str, load_in_4bit: bool = False):
    """The base model and processor, in bfloat16 on CUDA machines, each process's model on its own GPU for 4-bit."""
    from accelerate import PartialState
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from core.engine.loading import quantization_config

    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    kwargs: dict = {"dtype": dtype}
    if load_in_4bit:
        if not cuda:
            raise RuntimeError("--4bit needs a CUDA GPU (bitsandbytes); drop it on CPU")
        kwargs.update(quantization_config=quantization_config(dtype),
                      device_map={"": PartialState().local_process_index})
    try:
        processor = AutoProcessor.from_pretrained(model_id)
        model = AutoModelForImageTextToText.from_pretrained(model_id, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise RuntimeError(f"could not load {model_id!r} as an image-text-to-text model: {exc}") from exc
    return model, processor


def train(model_id: str, data: Path, out_dir: Path, settings: DPOSettings, gradient_accumulation: int = 1,
          max_length: int | None = None, load_in_4bit: bool = False) -> dict:
    """Train, then publish the adapter folder atomically (main process); returns the training summary."""
    from trl import DPOTrainer

    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; choose a new adapter folder")
    dataset = preference_dataset(data)
    if settings.max_pairs:
        dataset = dataset.select(range(min(settings.max_pairs, len(dataset))))
    model, processor = load_base(model_id, load_in_4bit)
    work = out_dir.parent / f".{out_dir.name}.trl-partial"
    config = trl_config(settings, work, gradient_accumulation, max_length,
                        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    trainer = DPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=processor,
                         peft_config=lora_config(settings))
    output = trainer.train()
    trainer.save_model(str(work))  # gathers sharded (DeepSpeed/FSDP) weights; saves the adapter only
    summary = {"base_model": model_id, "quantized": load_in_4bit, "pairs": len(dataset), "engine": "trl",
               "steps": output.global_step, "final": {k: v for k, v in (trainer.state.log_history or [{}])[-1].items()}}
    if trainer.is_world_process_zero():
        (work / SETTINGS_FILE).write_text(json.dumps(asdict(settings), indent=2) + "\n")
        (work / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        for leftover in work.glob("checkpoint-*"):
            shutil.rmtree(leftover)
        work.rename(out_dir)
    return summary


def main(argv: list[str] | None = None) -> None:
    """CLI: train an exported preference dataset with TRL's DPOTrainer (under accelerate launch for many GPUs)."""
    from core.training.dpo.settings import settings_parser

    parser = argparse.ArgumentParser(prog="python -m core.training.trl_dpo", description=__doc__.split("\n\n")[0],
                                     parents=[settings_parser()], conflict_handler="resolve")
    parser.add_argument("--data", type=Path, required=True,
                        help="an export of core.data.exchange: folder, data.jsonl, data.parquet or .zip")
    parser.add_argument("--model", required=True, help="base model id or folder")
    parser.add_argument("--out", type=Path, required=True, help="adapter folder to create (data/adapters/NAME)")
    parser.add_argument("--gradient-accumulation", type=int, default=1, help="batches per optimiser step")
    parser.add_argument("--max-length", type=int, default=None, help="truncate prompt+answer to this many tokens")
    parser.add_argument("--4bit", dest="load_in_4bit", action="store_true", help="QLoRA: base in 4-bit NF4 (CUDA)")
    args = parser.parse_args(argv)
    try:
        known = {name: getattr(args, name) for name in DPOSettings.__dataclass_fields__ if hasattr(args, name)}
        settings = DPOSettings(**known)
        summary = train(args.model, args.data, args.out, settings, args.gradient_accumulation, args.max_length,
                        args.load_in_4bit)
    except (ValueError, RuntimeError, OSError) as exc:
        sys.exit(f"error: {exc}")
    print(f"trained {summary['pairs']} pairs in {summary['steps']} steps; adapter in {args.out}")


if __name__ == "__main__":
    main()
