"""How fast does the embedded model train on this CPU, in float32 and under bfloat16 autocast?

Issue 9 asks for seeded training in at most 45 minutes on 2 cores; the default recipe takes 54-65
(docs/language-prior.md). This builds the embedded model from its config (random weights, as the
recipe starts), makes the language stage's batches (core.shapes.embedded.training_batch: 32 fresh
scenes, every task) and times optimizer steps of that stage, after warm-up steps, in float32 and
with `torch.autocast("cpu", dtype=torch.bfloat16)` (weights and optimizer stay float32). It prints
seconds per step of each and the ratio, and what the language and answers stages (the recipe's
4,500 steps of this size) would take at each speed. The training code itself runs in float32; a
bfloat16 option would need a full recipe run to show it trains as well.

Run:  python bench/bench_train.py [--steps 12 --threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.shapes.embedded import (EmbeddedConfig, build_model, build_processor, build_tokenizer,  # noqa: E402
                                  language_stages, per_example_loss, training_batch)


def seconds_per_step(model, optimizer, batches: list[dict], bf16: bool) -> float:
    """Mean wall time of one training step (forward, backward, optimizer) over the batches."""
    start = time.perf_counter()
    for batch in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = per_example_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / len(batches)


def main() -> None:
    """CLI: time float32 and bfloat16-autocast steps of the language stage; print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12, help="timed steps per precision")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = EmbeddedConfig()
    tokenizer = build_tokenizer(cfg.vocab_size, cfg.seed)
    processor = build_processor(tokenizer, cfg)
    model = build_model(tokenizer, cfg)
    model.train()
    stage = language_stages(cfg)[1]
    batches = [training_batch(step, cfg, processor, stage) for step in range(args.warmup + args.steps)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    seconds_per_step(model, optimizer, batches[:args.warmup], bf16=False)
    seconds_per_step(model, optimizer, batches[:args.warmup], bf16=True)
    # Alternate, so a slower stretch of a shared CPU does not fall on one precision only.
    timed = batches[args.warmup:]
    half = len(timed) // 2
    fp32_first = seconds_per_step(model, optimizer, timed[:half], bf16=False)
    bf16_first = seconds_per_step(model, optimizer, timed[:half], bf16=True)
    fp32 = (fp32_first + seconds_per_step(model, optimizer, timed[half:], bf16=False)) / 2
    bf16 = (bf16_first + seconds_per_step(model, optimizer, timed[half:], bf16=True)) / 2
    steps = cfg.steps + cfg.answer_steps
    print(f"language stage, batch {cfg.batch_size}, {args.threads} threads, {args.steps} timed steps each:")
    print(f"  float32            {fp32:.3f} s/step -> {steps} steps (language + answers stages) "
          f"{fp32 * steps / 60:.1f} min")
    print(f"  bfloat16 autocast  {bf16:.3f} s/step -> {steps} steps {bf16 * steps / 60:.1f} min")
    print(f"  speed-up float32 / bfloat16: {fp32 / bf16:.2f}x")


if __name__ == "__main__":
    main()
